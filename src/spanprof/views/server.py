"""The local web viewer's server: the static page bundle and a JSON API over the store.

stdlib only (``http.server``), bound to 127.0.0.1 and nothing else: the data are a
program's source paths and request traces, which must not leave the machine. The
Host header is checked too, so a web page cannot reach the API by DNS rebinding.

API (paths relative to the page; the frontend is built against exactly this):

- ``GET api/traces?endpoint=NAME&q=TEXT&limit=N`` -> ``{"traces": [...], "endpoints": [...]}``
- ``GET api/trace/TRACE_ID`` -> the trace's spans (404 if unknown)
- ``GET api/flame?span=ID|trace=ID|endpoint=NAME&value=cpu|wall`` -> d3-flame-graph tree
- ``GET api/summary?span=ID|trace=ID|endpoint=NAME`` -> functions by self CPU

Bad parameters answer 400, unknown ids 404, an unreadable store 500, each with
``{"error": "..."}``.
"""

from __future__ import annotations

import http
import importlib
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from spanprof.store import StoreError, StoreReader
from spanprof.views.trees import (
    VALUES,
    Selection,
    SelectionError,
    dumps,
    flame_tree,
    function_summary,
    parse_span_id,
    parse_trace_id,
    select_samples,
)

__all__ = ["HOST", "ApiError", "ViewerApi", "ViewerServer", "resolve_static", "static_dir"]

HOST = "127.0.0.1"  # never 0.0.0.0: see the module docstring
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
MAX_LIMIT = 100_000

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


def static_dir() -> str:
    """The viewer bundle's directory (``spanprof.viewer.STATIC_DIR``), checked.

    Imported lazily: the commands that do not serve the page never need it.
    """
    try:
        viewer = importlib.import_module("spanprof.viewer")
        path = os.fspath(viewer.STATIC_DIR)
    except (ImportError, AttributeError):
        raise StoreError("the viewer's files are not installed (spanprof.viewer)") from None
    if not os.path.isfile(os.path.join(path, "index.html")):
        raise StoreError(f"the viewer's files are missing: no index.html in {path}")
    return path


class ApiError(Exception):
    """An API answer other than 200: HTTP status and one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ViewerApi:
    """The JSON API over one read-only store, independent of HTTP.

    One StoreReader serves every request thread: it is opened with
    ``check_same_thread=False`` and keeps caches, so requests take turns on a lock.
    """

    def __init__(self, reader: StoreReader) -> None:
        self.reader = reader
        self._lock = threading.Lock()
        self._routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "traces": self._traces,
            "flame": self._flame,
            "summary": self._summary,
        }

    def handle(self, path: str, query: str) -> tuple[int, Any]:
        """``path`` below ``api/`` and the raw query string -> (status, JSON value)."""
        try:
            params = _params(query)
            with self._lock:
                if path.startswith("trace/"):
                    return 200, self._trace(path[len("trace/") :])
                route = self._routes.get(path)
                if route is None:
                    raise ApiError(404, f"no such API: api/{path}")
                return 200, route(params)
        except ApiError as exc:
            return exc.status, {"error": str(exc)}
        except SelectionError as exc:
            return 404, {"error": str(exc)}
        except StoreError as exc:
            return 500, {"error": str(exc)}

    def _traces(self, params: dict[str, str]) -> dict[str, Any]:
        _only(params, "endpoint", "q", "limit")
        limit = 500
        if "limit" in params:
            try:
                limit = int(params["limit"])
            except ValueError:
                raise ApiError(400, f"limit must be a number, not {params['limit']!r}") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
        traces = self.reader.traces(
            endpoint=params.get("endpoint") or None, text=params.get("q") or None, limit=limit
        )
        return {"traces": traces, "endpoints": self.reader.endpoints()}

    def _trace(self, raw_id: str) -> dict[str, Any]:
        try:
            trace_id = parse_trace_id(raw_id)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        found = self.reader.trace(trace_id)
        if not found["spans"] and next(self.reader.samples(trace=trace_id), None) is None:
            raise ApiError(404, f"unknown trace {trace_id}")
        return found

    def _flame(self, params: dict[str, str]) -> dict[str, Any]:
        _only(params, "span", "trace", "endpoint", "value")
        value = params.get("value", "cpu")
        if value not in VALUES:
            raise ApiError(400, f"value must be one of {', '.join(VALUES)}, not {value!r}")
        return flame_tree(select_samples(self.reader, _selection(params)), value)

    def _summary(self, params: dict[str, str]) -> dict[str, Any]:
        _only(params, "span", "trace", "endpoint")
        return function_summary(select_samples(self.reader, _selection(params)))


def _params(query: str) -> dict[str, str]:
    """One value per parameter; a repeated one is ambiguous, so refused."""
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(400, "the query string is not UTF-8") from None
    out = {}
    for key, values in parsed.items():
        if len(values) != 1:
            raise ApiError(400, f"parameter {key!r} given {len(values)} times")
        out[key] = values[0]
    return out


def _only(params: dict[str, str], *allowed: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r} (expected: {', '.join(allowed)})")


def _selection(params: dict[str, str]) -> Selection:
    try:
        return Selection(
            span=parse_span_id(params["span"]) if "span" in params else None,
            trace=parse_trace_id(params["trace"]) if "trace" in params else None,
            endpoint=params.get("endpoint"),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


class ViewerServer(ThreadingHTTPServer):
    """Serves ``static`` and ``api`` on 127.0.0.1 (port 0: any free port)."""

    daemon_threads = True  # a slow browser connection must not hold up Ctrl-C
    allow_reuse_port = False  # a port in use is an error, never shared

    def __init__(self, api: ViewerApi, static: str | os.PathLike[str], port: int = 0) -> None:
        self.api = api
        self.static = os.path.realpath(os.fspath(static))
        super().__init__((HOST, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "spanprof"
    timeout = 60  # seconds: an idle (e.g. preconnected) socket does not keep a thread forever
    # HTTP/1.0 (the default): one request per connection, so no idle keep-alive
    # connection holds a thread after the page has loaded.

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request would drown the one line the command prints

    def _answer(self, head: bool) -> None:
        if not self._host_is_local():
            host = self.headers.get("Host")
            message = f"this viewer answers requests for 127.0.0.1 or localhost, not {host!r}"
            self._send_json(403, {"error": message}, head)
            return
        parts = urlsplit(self.path)
        if parts.path.startswith("/api/"):
            status, body = self.server.api.handle(parts.path[len("/api/") :], parts.query)
            self._send_json(status, body, head)
        else:
            self._send_static(parts.path, head)

    def _host_is_local(self) -> bool:
        host = self.headers.get("Host")
        if host is None:
            return True  # HTTP/1.0 clients may omit it; nothing to rebind then
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.lower() in _LOCAL_HOSTS

    def _send_json(self, status: int, body: Any, head: bool) -> None:
        data = dumps(body).encode()
        self._send(status, "application/json", data, head, cache="no-store")

    def _send_static(self, url_path: str, head: bool) -> None:
        status, path = resolve_static(self.server.static, url_path)
        if path is None:
            self._send_json(status, {"error": http.HTTPStatus(status).phrase}, head)
            return
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self._send_json(404, {"error": "Not Found"}, head)
            return
        ext = os.path.splitext(path)[1].lower()
        kind = CONTENT_TYPES.get(ext, "application/octet-stream")
        self._send(200, kind, data, head, cache="no-cache")

    def _send(self, status: int, kind: str, data: bytes, head: bool, cache: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(data)


def resolve_static(root: str, url_path: str) -> tuple[int, str | None]:
    """The file under ``root`` that a URL path names: (200, path) or (403|404, None).

    The path is decoded once, then refused if any part is ``..``, it is absolute
    after decoding, or its real path (symlinks followed) leaves ``root``.
    """
    try:
        decoded = unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        return 404, None
    if "\x00" in decoded or "\\" in decoded:
        return 403, None
    parts = [p for p in decoded.split("/") if p not in ("", ".")]
    if ".." in parts:
        return 403, None
    if not parts:
        parts = ["index.html"]
    candidate = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, candidate]) != root:
        return 403, None  # a symlink pointing out of the bundle
    if os.path.isdir(candidate):
        candidate = os.path.join(candidate, "index.html")
    if not os.path.isfile(candidate):
        return 404, None
    return 200, candidate
