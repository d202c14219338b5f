"""Local-store output: profile chunks and finished spans into the SQLite store.

A spanprof :class:`~spanprof.exporters.Exporter` for chunks, and the rows of
finished spans that spanprof's span processor queued for the exporter thread
to write (no span ever waits on disk). A failure is logged on one line and
counted, never raised.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from spanprof.model import Chunk
from spanprof.store import SpanRow, StoreWriter

__all__ = ["StoreExporter", "span_rows"]

_log = logging.getLogger("spanprof")


class StoreExporter:
    """Writes each chunk to the store as one transaction."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.failed = 0

    def export(self, chunk: Chunk) -> None:
        try:
            self.writer.write_chunk(chunk)
        except Exception as exc:
            self.failed += 1
            _log.warning("spanprof: could not store profile chunk %s: %s", chunk.seq, exc)

    def shutdown(self) -> None:
        pass  # the writer is closed by its owner, after the span exporter is done too


def span_rows(taken: list[tuple[Any, ...]], pid: int) -> list[SpanRow]:
    """Spans as taken from spanprof's span processor, as rows of the store's ``spans`` table."""
    dumps = json.dumps
    return [
        (
            format(trace_id, "032x"),
            format(span_id, "016x"),
            format(parent, "016x") if parent else None,  # 0: a local root here
            name,
            kind,
            start,
            end,
            status,
            dumps(attrs, default=str) if attrs else "{}",
            pid,
        )
        for trace_id, span_id, parent, name, kind, start, end, status, attrs in taken
    ]
