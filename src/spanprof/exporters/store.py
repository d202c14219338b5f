"""Local-store output: profile chunks and finished spans into the SQLite store.

Two faces on one writer: an spanprof :class:`~spanprof.exporters.Exporter` for
chunks, and an OpenTelemetry ``SpanExporter`` for spans (fed by a
``BatchSpanProcessor``, so no span ever waits on disk). Neither raises: a
failure is logged on one line and counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spanprof.model import Chunk
from spanprof.store import StoreWriter

__all__ = ["StoreExporter", "StoreSpanExporter"]

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


class StoreSpanExporter(SpanExporter):
    """Writes finished spans: ids, parent, name, kind, timing, status, attributes."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.failed = 0
        self.pid = os.getpid()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self.writer.write_spans(_row(span, self.pid) for span in spans)
        except Exception as exc:
            self.failed += len(spans)
            _log.warning("spanprof: could not store %d spans: %s", len(spans), exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _row(span: ReadableSpan, pid: int) -> dict[str, object]:
    ctx = span.context
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),  # type: ignore[union-attr]
        "span_id": format(ctx.span_id, "016x"),  # type: ignore[union-attr]
        # a remote parent is not in this store: the span is a local root here
        "parent_span_id": (
            format(parent.span_id, "016x") if parent is not None and not parent.is_remote else None
        ),
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or span.start_time or 0,
        "status": span.status.status_code.name,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "pid": pid,
    }


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
