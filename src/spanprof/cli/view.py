"""``spanprof view``: browse a recording in the local web viewer.

Serves the viewer page and its JSON API from this process, on 127.0.0.1 only,
until Ctrl-C. The store is opened (and checked) before anything is served, so a
wrong directory fails at once with one line instead of an empty page.
"""

from __future__ import annotations

import argparse
import signal
import threading
import webbrowser

from spanprof.cli._args import error, parse, recording_parser
from spanprof.store import StoreError
from spanprof.views.server import HOST, ViewerApi, ViewerServer, static_dir
from spanprof.views.trees import open_store

USAGE = "spanprof view [DIR] [--port N] [--no-browser]"


class _Terminated(Exception):
    """SIGTERM: stop serving as cleanly as on Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = recording_parser(
        "spanprof view",
        USAGE,
        "Serve the web viewer for a recording on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=_port, default=0, help="port on 127.0.0.1 (default: 0, any free port)"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    return parser


def main(argv: list[str]) -> int:
    """Serve until Ctrl-C or SIGTERM (exit 0); 1 if the store or the port cannot be used."""
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        reader = open_store(args.directory)
    except StoreError as exc:
        return error(exc)
    try:
        try:
            server = ViewerServer(ViewerApi(reader), static_dir(), args.port)
        except StoreError as exc:
            return error(exc)
        except OSError as exc:
            return error(f"cannot listen on {HOST}:{args.port}: {exc.strerror or exc}")
        on_main = threading.current_thread() is threading.main_thread()
        old_term = signal.signal(signal.SIGTERM, _terminate) if on_main else None
        try:
            print(f"spanprof: viewer at {server.url} (Ctrl-C to stop)", flush=True)
            if not args.no_browser:
                # In a thread: a terminal browser would otherwise block the serving.
                threading.Thread(
                    target=webbrowser.open, args=(server.url,), name="spanprof-browser", daemon=True
                ).start()
            server.serve_forever()
        except (KeyboardInterrupt, _Terminated):
            pass
        finally:
            if old_term is not None:  # None: set outside Python, cannot be put back
                signal.signal(signal.SIGTERM, old_term)
            server.server_close()
    finally:
        reader.close()
    return 0
