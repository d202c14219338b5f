"""``spanprof export``: a span, trace, endpoint or whole recording as one profile file.

``pprof``: one gzip'd pprof merged over every window and process of the store,
with every label of the samples kept, for ``go tool pprof``, Pyroscope and co.
``speedscope``: speedscope's JSON, one profile per thread.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys

from spanprof.cli._args import (
    add_selection_options,
    error,
    parse,
    recording_parser,
    selection_from_args,
    write_output,
)
from spanprof.exporters.pprof import encode_chunk
from spanprof.model import Chunk, ChunkSample, Frame
from spanprof.store import StoreError, StoreReader, StoreSample
from spanprof.views.speedscope import speedscope_document
from spanprof.views.trees import (
    VALUES,
    Selection,
    SelectionError,
    open_store,
    select_samples,
)

USAGE = "spanprof export [DIR] --format pprof|speedscope -o FILE \
[--span ID | --trace ID | --endpoint NAME] [--value cpu|wall]"
FORMATS = ("pprof", "speedscope")
_DEFAULT_PERIOD_NS = 10_000_000


def store_chunk(reader: StoreReader, samples: list[StoreSample]) -> Chunk:
    """One Chunk holding ``samples``, so the pprof encoder of the live exporter is reused.

    It spans all of the store's windows; its pid is the recording's when there was
    one process, else 0. Each sample keeps every label it was stored with.
    """
    frames: list[Frame] = []
    index: dict[Frame, int] = {}
    out = []
    for sample in samples:
        stack = []
        for frame in sample.frames:  # leaf first, as in the Chunk
            i = index.get(frame)
            if i is None:
                i = index[frame] = len(frames)
                frames.append(frame)
            stack.append(i)
        out.append(
            ChunkSample(tuple(stack), sample.labels, sample.count, sample.cpu_ns, sample.wall_ns)
        )
    chunks = reader.chunks()
    pids = {c["pid"] for c in chunks}
    return Chunk(
        pid=pids.pop() if len(pids) == 1 else 0,
        seq=0,
        start_ns=min((c["start_ns"] for c in chunks), default=0),
        end_ns=max((c["end_ns"] for c in chunks), default=0),
        period_ns=chunks[0]["period_ns"] if chunks else _DEFAULT_PERIOD_NS,
        frames=tuple(frames),
        samples=tuple(out),
        dropped=sum(c["dropped"] for c in chunks),
    )


def export_bytes(reader: StoreReader, selection: Selection, fmt: str, value: str) -> bytes:
    """The file's contents; SelectionError if the selection names nothing stored."""
    samples = select_samples(reader, selection)
    if fmt == "pprof":
        return gzip.compress(encode_chunk(store_chunk(reader, samples)), mtime=0)
    document = speedscope_document(samples, name=f"spanprof: {selection.describe()}", value=value)
    return json.dumps(document, separators=(",", ":")).encode()


def _parser() -> argparse.ArgumentParser:
    parser = recording_parser(
        "spanprof export",
        USAGE,
        "Export a recording, a span (with the spans below it), a trace or an "
        "endpoint as one pprof or speedscope file.",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="file format")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    add_selection_options(parser)
    parser.add_argument(
        "--value",
        choices=VALUES,
        default="cpu",
        help="speedscope weights: CPU or wall time (default: cpu; pprof carries both)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Write the file; 1 with one line if the store, the selection or the output is wrong."""
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        with open_store(args.directory) as reader:
            data = export_bytes(reader, selection_from_args(args), args.format, args.value)
    except (StoreError, SelectionError) as exc:
        return error(exc)
    if not write_output(args.output, data):
        return 1
    print(f"spanprof: {args.format} profile written to {args.output}", file=sys.stderr)
    return 0
