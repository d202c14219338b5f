"""``spanprof flamegraph``: one self-contained HTML flame graph of a span, trace or endpoint.

The file is the web viewer's own page with its CSS, its script and the data
inlined, so it opens from disk, mails and archives without spanprof or a network.

Embedding contract with the viewer bundle (``spanprof.viewer.STATIC_DIR``, see the
comment atop its ``index.html``): the page has three regions, each from an opening
marker (``<!--SPANPROF_CSS-->``, ``<!--SPANPROF_DATA-->``, ``<!--SPANPROF_JS-->``)
through its closing one (``<!--/SPANPROF_CSS-->`` ...), replaced whole: CSS by
``<style>`` with the stylesheets the region links, JS by ``<script>`` with the
scripts it links, DATA by ``<script>window.SPANPROF_EMBEDDED = {...};</script>``
with ``{"title": str, "flame": <flame tree>, "value": "cpu"|"wall"}`` and every
``<`` written ``\u003c``. Without closing markers the bare markers are filled; a
page with no markers at all gets its local stylesheets and scripts inlined where
they were, and the data just before the first script.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from typing import Any

from spanprof.cli._args import (
    add_selection_options,
    error,
    parse,
    recording_parser,
    selection_from_args,
    write_output,
)
from spanprof.store import StoreError
from spanprof.views.server import resolve_static, static_dir
from spanprof.views.trees import (
    VALUES,
    SelectionError,
    dumps,
    flame_tree,
    open_store,
    select_samples,
    span_names,
)

USAGE = "spanprof flamegraph [DIR] -o FILE.html [--span ID | --trace ID | --endpoint NAME] \
[--value cpu|wall]"

CSS_MARKER = "<!--SPANPROF_CSS-->"
DATA_MARKER = "<!--SPANPROF_DATA-->"
JS_MARKER = "<!--SPANPROF_JS-->"
_MARKERS = re.compile("|".join(re.escape(m) for m in (CSS_MARKER, DATA_MARKER, JS_MARKER)))
_ATTR = r"""\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"""
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_SCRIPT = re.compile(r"<script\b([^>]*)>\s*</script\s*>", re.IGNORECASE)
_REGION = re.compile(r"(<!--SPANPROF_(CSS|DATA|JS)-->)(.*?)<!--/SPANPROF_\2-->", re.DOTALL)
_COMMENT = re.compile(r"(<!--.*?-->)", re.DOTALL)
_TITLE = re.compile(r"(<title\b[^>]*>)(.*?)(</title\s*>)", re.IGNORECASE | re.DOTALL)


def _attr(tag: str, name: str) -> str | None:
    found = re.search(r"(?<![\w-])" + name + _ATTR, tag, re.IGNORECASE)
    if found is None:
        return None
    return next(g for g in found.groups() if g is not None)


def _local(static: str, url: str | None) -> str | None:
    """The bundle file a relative URL names, or None (absolute, data: or outside)."""
    if not url or re.match(r"^[a-z][a-z0-9+.-]*:|^//", url, re.IGNORECASE):
        return None
    status, path = resolve_static(static, "/" + url.split("?", 1)[0].split("#", 1)[0])
    return path if status == 200 else None


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# A JS object literal nested deeper than about 2000 levels (1000 frames: an object and
# a list each) overflows the browser's parser; JSON.parse has no such limit.
MAX_LITERAL_DEPTH = 500


def _escape(text: str) -> str:
    """No ``<``, ``>`` or ``&`` left to close the script (they mean the same in JSON/JS)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _depth(tree: dict[str, Any]) -> int:
    deepest, todo = 0, [(tree, 0)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        todo += [(child, depth + 1) for child in node.get("children", ())]
    return deepest


def embed_script(data: dict[str, Any]) -> str:
    """``<script>window.SPANPROF_EMBEDDED = {...};</script>``, safe inside HTML.

    A flame tree deeper than MAX_LITERAL_DEPTH is embedded as
    ``JSON.parse("...")`` of the same JSON instead, which browsers parse at any depth.
    """
    text = dumps(data)
    if _depth(data.get("flame") or {}) > MAX_LITERAL_DEPTH:
        text = f"JSON.parse({json.dumps(text)})"
    return f"<script>window.SPANPROF_EMBEDDED = {_escape(text)};</script>"


def render_html(template: str, static: str, data: dict[str, Any]) -> str:
    """Fill the viewer's page with its own CSS and JS and with ``data`` (see module doc)."""
    styles: list[str] = []
    scripts: list[tuple[str, str]] = []  # (attributes without src, source)

    def take_link(match: re.Match[str]) -> str:
        tag = match.group(0)
        rel = (_attr(tag, "rel") or "").lower().split()
        path = _local(static, _attr(tag, "href")) if "stylesheet" in rel else None
        if path is None:
            return tag
        styles.append(_read(path))
        return CSS_MARKER if len(styles) == 1 and CSS_MARKER not in template else ""

    def take_script(match: re.Match[str]) -> str:
        attrs = match.group(1)
        path = _local(static, _attr(attrs, "src"))
        if path is None:
            return match.group(0)
        rest = re.sub(r"(?<![\w-])src" + _ATTR, "", attrs, flags=re.IGNORECASE)
        rest = re.sub(r"\b(defer|async)\b", "", rest, flags=re.IGNORECASE)
        scripts.append((" ".join(rest.split()), _read(path)))
        return JS_MARKER if len(scripts) == 1 and JS_MARKER not in template else ""

    def take_files(markup: str) -> str:
        # Only markup: a link or script quoted inside an HTML comment is text.
        parts = _COMMENT.split(markup)
        for i in range(0, len(parts), 2):
            parts[i] = _SCRIPT.sub(take_script, _LINK.sub(take_link, parts[i]))
        return "".join(parts)

    def collapse(region: re.Match[str]) -> str:
        take_files(region.group(3))  # what the region links is inlined at its marker
        return region.group(1)

    # A region (marker ... closing marker) is replaced whole.
    page = take_files(_REGION.sub(collapse, template))
    if not styles:
        styles = [_read(p) for p in _bundle_files(static, ".css")]
    if not scripts:
        scripts = [("", _read(p)) for p in _bundle_files(static, ".js")]
    if CSS_MARKER not in page:
        page = _insert_before(page, "</head>", CSS_MARKER)
    if JS_MARKER not in page:
        page = _insert_before(page, "</body>", JS_MARKER)
    if DATA_MARKER not in page:
        page = page.replace(JS_MARKER, DATA_MARKER + JS_MARKER, 1)

    css = "\n".join(_no_close(s, "style") for s in styles)
    js = "".join(
        f"<script{' ' + attrs if attrs else ''}>{_no_close(source, 'script')}</script>"
        for attrs, source in scripts
    )
    filled = {
        CSS_MARKER: f"<style>{css}</style>" if css else "",
        DATA_MARKER: embed_script(data),
        JS_MARKER: js,
    }
    title = html.escape(str(data.get("title", "spanprof")))
    page = _TITLE.sub(lambda m: m.group(1) + title + m.group(3), page, count=1)
    # One pass, so nothing inside the inlined files is ever taken for a marker.
    return _MARKERS.sub(lambda m: filled[m.group(0)], page)


def _bundle_files(static: str, ext: str) -> list[str]:
    return sorted(
        os.path.join(static, name)
        for name in os.listdir(static)
        if name.endswith(ext) and os.path.isfile(os.path.join(static, name))
    )


def _insert_before(page: str, tag: str, text: str) -> str:
    at = page.lower().rfind(tag)
    return page + text if at < 0 else page[:at] + text + page[at:]


def _no_close(source: str, element: str) -> str:
    """Keep inlined text from ending its element early (``</script`` -> ``<\\/script``)."""
    return re.sub(r"</(" + element + r")", r"<\\/\1", source, flags=re.IGNORECASE)


def _parser() -> argparse.ArgumentParser:
    parser = recording_parser(
        "spanprof flamegraph",
        USAGE,
        "Write a self-contained HTML flame graph of a recording, a span "
        "(with the spans below it, on every thread), a trace or an endpoint.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="HTML file to write")
    add_selection_options(parser)
    parser.add_argument(
        "--value", choices=VALUES, default="cpu", help="CPU or wall time (default: cpu)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Write the flame graph; 1 with one line if the store or the selection is wrong."""
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    selection = selection_from_args(args)
    try:
        with open_store(args.directory) as reader:
            samples = select_samples(reader, selection)
            title = f"spanprof: {selection.describe()}"
            if selection.span is not None:
                trace_id = reader.span_trace(selection.span)
                name = span_names(reader, [trace_id] if trace_id else []).get(selection.span)
                if name is not None:
                    title += f" ({name['name']})"
            data = {"title": title, "flame": flame_tree(samples, args.value), "value": args.value}
        static = static_dir()
        page = render_html(_read(os.path.join(static, "index.html")), static, data)
    except (StoreError, SelectionError) as exc:
        return error(exc)
    except (OSError, UnicodeDecodeError) as exc:
        return error(f"cannot read the viewer's files: {exc}")
    if not write_output(args.output, page):
        return 1
    print(f"spanprof: flame graph written to {args.output}", file=sys.stderr)
    return 0
