"""Local-store output: profile chunks and finished spans into the SQLite store.

Two parts on one writer: a spanprof :class:`~spanprof.exporters.Exporter` for
chunks, and an OpenTelemetry ``SpanProcessor`` that queues finished spans for
spanprof's exporter thread to write (no span ever waits on disk). Neither
raises: a failure is logged on one line and counted.
"""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from spanprof._spans import SpanRecorder
from spanprof.model import Chunk
from spanprof.store import SpanRow, StoreWriter

__all__ = ["StoreExporter", "StoreSpanProcessor"]

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


class StoreSpanProcessor(SpanRecorder, SpanProcessor):
    """Hands finished spans to the store; the app's thread pays a tuple and an append.

    The per-span work is done in C by :class:`~spanprof._spans.SpanRecorder`:
    a tuple of primitives (ids, local parent, name, kind and status names,
    times, the attribute items), never the span: holding thousands of span objects
    for a batch exporter makes the garbage collector walk them, which measured
    at 12-15 µs per span. Rows are built and written by spanprof's exporter
    thread (:meth:`drain`), in batches (see the profiler); past
    ``max_pending`` waiting spans, more are counted in ``dropped``, not kept.
    """

    def __init__(self, max_pending: int = 65536) -> None:
        super().__init__(trace_types=_KINDS, rows=[], status_names=_STATUSES, max_rows=max_pending)

    def drain(self, pid: int) -> list[SpanRow]:
        """The spans ended since the last drain, as rows of the store's ``spans`` table."""
        dumps = json.dumps
        return [
            (
                format(trace_id, "032x"),
                format(span_id, "016x"),
                # a remote parent is not in this store: the span is a local root here
                format(parent, "016x") if parent else None,
                name,
                kind,
                start or 0,
                end or start or 0,
                status,
                dumps({k: _jsonable(v) for k, v in attrs}) if attrs else "{}",
                pid,
            )
            for trace_id, span_id, parent, name, kind, start, end, status, attrs in self.take_rows()
        ]

    def forget(self) -> None:
        """After fork(): what is pending is the parent's to write."""
        self.take_rows()


_KINDS = {kind: kind.name.lower() for kind in SpanKind}
_STATUSES = {status: status.name for status in StatusCode}


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
