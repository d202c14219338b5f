"""Command-line pieces shared by the view commands (view, flamegraph, summary, export).

Each of them reads one recording (``[DIR]``), reports a usage error as argparse
does (exit 2, 0 for ``--help``) and any other failure as one line
``spanprof: error: ...`` with exit 1; the selection options are the same for all.
The views themselves (``spanprof.views``) know nothing of argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from spanprof.views.trees import Selection, parse_span_id, parse_trace_id

__all__ = [
    "add_selection_options",
    "error",
    "parse",
    "recording_parser",
    "selection_from_args",
    "write_output",
]

DEFAULT_DIRECTORY = "spanprof-out"


def recording_parser(prog: str, usage: str, description: str) -> argparse.ArgumentParser:
    """A command's parser with its first argument, the recording's directory ``[DIR]``."""
    parser = argparse.ArgumentParser(
        prog=prog, usage=usage, description=description, allow_abbrev=False
    )
    parser.add_argument(
        "directory",
        nargs="?",
        default=DEFAULT_DIRECTORY,
        metavar="DIR",
        help=f"output directory of `spanprof run` (default: ./{DEFAULT_DIRECTORY})",
    )
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code once argparse has printed help (0) or a
    usage error (2): a command returns its code instead of exiting."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def error(message: object) -> int:
    """Print the one error line a command ends with; its exit code, 1."""
    print(f"spanprof: error: {message}", file=sys.stderr)
    return 1


def write_output(path: str, data: str | bytes) -> bool:
    """Write a command's output file (text as UTF-8); False after one error line."""
    try:
        if isinstance(data, str):
            with open(path, "w", encoding="utf-8") as f:
                f.write(data)
        else:
            with open(path, "wb") as f:
                f.write(data)
    except OSError as exc:
        error(f"cannot write {path}: {exc.strerror or exc}")
        return False
    return True


def _arg_type(parse_id: Callable[[str], str]) -> Callable[[str], str]:
    def convert(text: str) -> str:
        try:
            return str(parse_id(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse_id.__name__
    return convert


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """``--span ID | --trace ID | --endpoint NAME``, mutually exclusive, ids checked."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--span",
        metavar="ID",
        type=_arg_type(parse_span_id),
        help="only this span and the spans below it, on every thread",
    )
    group.add_argument(
        "--trace", metavar="ID", type=_arg_type(parse_trace_id), help="only this trace"
    )
    group.add_argument(
        "--endpoint", metavar="NAME", help="only traces of this endpoint (e.g. 'GET /orders')"
    )


def selection_from_args(args: argparse.Namespace) -> Selection:
    return Selection(span=args.span, trace=args.trace, endpoint=args.endpoint)
