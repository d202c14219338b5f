"""``spanprof summary``: where the CPU went, as plain text tables in the terminal.

Three tables over the selection (a span with the spans below it, a trace, an
endpoint, or the whole recording): functions by self CPU, endpoints by CPU, and
spans by total CPU. Every table is a title line, a header line and fixed-width
rows with the free-text column (function file, endpoint, span name) last, so a
row splits on whitespace into its numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from spanprof.cli._args import (
    add_selection_options,
    error,
    parse,
    recording_parser,
    selection_from_args,
)
from spanprof.store import StoreError
from spanprof.views.trees import (
    SelectionError,
    endpoint_costs,
    function_summary,
    open_store,
    select_samples,
    span_costs,
)

USAGE = "spanprof summary [DIR] [--span ID | --trace ID | --endpoint NAME] [--limit N]"


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Right-aligned columns, except the last (free text), left-aligned and unpadded."""
    lines = [title]
    if not rows:
        return [*lines, "  (none)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: Sequence[str]) -> str:
        fixed = "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=False))
        return f"  {fixed}  {cells[-1]}"

    return [*lines, line(header), *(line(r) for r in rows)]


def render(directory: str, args: argparse.Namespace) -> list[str]:
    """The report's lines; StoreError/SelectionError for a bad store or selection."""
    selection = selection_from_args(args)
    limit = args.limit
    with open_store(directory) as reader:
        samples = select_samples(reader, selection)
        functions = function_summary(samples)
        endpoints = endpoint_costs(samples)
        spans = span_costs(reader, samples, selection)
    total_cpu = functions["total_cpu_ns"]
    total_wall = sum(s.wall_ns for s in samples)
    count = sum(s.count for s in samples)
    out = [
        f"spanprof summary of {directory}: {selection.describe()}",
        f"{count} samples, CPU {_ms(total_cpu)} ms, wall {_ms(total_wall)} ms",
        "",
    ]
    funcs = functions["functions"]
    out += _table(
        f"Functions by self CPU (top {min(limit, len(funcs))} of {len(funcs)})",
        ["self_ms", "self%", "total_ms", "total%", "function  file"],
        [
            [
                _ms(f["self_cpu_ns"]),
                _pct(f["self_cpu_ns"], total_cpu),
                _ms(f["total_cpu_ns"]),
                _pct(f["total_cpu_ns"], total_cpu),
                f"{f['function']}  {f['file']}",
            ]
            for f in funcs[:limit]
        ],
    )
    out.append("")
    out += _table(
        f"Endpoints by CPU (top {min(limit, len(endpoints))} of {len(endpoints)})",
        ["cpu_ms", "cpu%", "wall_ms", "traces", "endpoint"],
        [
            [
                _ms(e["cpu_ns"]),
                _pct(e["cpu_ns"], total_cpu),
                _ms(e["wall_ns"]),
                str(e["traces"]),
                e["endpoint"] if e["endpoint"] is not None else "(outside any trace)",
            ]
            for e in endpoints[:limit]
        ],
    )
    out.append("")
    out += _table(
        f"Spans by total CPU (top {min(limit, len(spans))} of {len(spans)})",
        ["total_ms", "total%", "self_ms", "trace", "span", "name"],
        [
            [
                _ms(s["total_cpu_ns"]),
                _pct(s["total_cpu_ns"], total_cpu),
                _ms(s["self_cpu_ns"]),
                (s["trace_id"] or "-")[:8],
                s["span_id"],
                s["name"] if s["name"] is not None else "(span not stored)",
            ]
            for s in spans[:limit]
        ],
    )
    return out


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = recording_parser(
        "spanprof summary",
        USAGE,
        "Print the functions, endpoints and spans that cost most CPU.",
    )
    add_selection_options(parser)
    parser.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help="rows per table (default: 20)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Print the tables; 1 with one line if the store or the selection is wrong."""
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        lines = render(args.directory, args)
    except (StoreError, SelectionError) as exc:
        return error(exc)
    print("\n".join(lines))
    return 0
