"""Local-store output: profile chunks and finished spans into the SQLite store.

Two parts on one writer: a spanprof :class:`~spanprof.exporters.Exporter` for
chunks, and an OpenTelemetry ``SpanProcessor`` that queues finished spans for
spanprof's exporter thread to write (no span ever waits on disk). Neither
raises: a failure is logged on one line and counted.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

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


class StoreSpanProcessor(SpanProcessor):
    """Hands finished spans to the store; the app's thread pays a tuple and an append.

    It keeps only primitives (ids, name, times, kind and status codes, the
    attribute items), never the span: holding thousands of span
    objects for a batch exporter makes the garbage collector walk them, which
    measured at 12-15 µs per span. Rows are built and written by spanprof's
    exporter thread (:meth:`drain`), at least once a second.
    """

    def __init__(self, max_pending: int = 65536) -> None:
        self._pending: deque[tuple[Any, ...]] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.enabled = True

    def on_end(self, span: ReadableSpan) -> None:
        if not self.enabled:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        ctx, parent, attrs = span._context, span._parent, span._attributes
        local_parent = parent.span_id if parent is not None and not parent.is_remote else 0
        self._pending.append(
            (
                ctx.trace_id,
                ctx.span_id,
                local_parent,
                span._name,
                span._kind,  # type: ignore[union-attr]
                span._start_time,
                span._end_time,
                span._status.status_code,
                tuple(attrs.items()) if attrs else (),
            )
        )

    def drain(self, pid: int) -> list[SpanRow]:
        """The spans ended since the last drain, as rows of the store's ``spans`` table."""
        pending, out = self._pending, []
        kinds, statuses, dumps = _KINDS, _STATUSES, json.dumps
        while pending:
            trace_id, span_id, parent, name, kind, start, end, status, attrs = pending.popleft()
            out.append(
                (
                    format(trace_id, "032x"),
                    format(span_id, "016x"),
                    # a remote parent is not in this store: the span is a local root here
                    format(parent, "016x") if parent else None,
                    name,
                    kinds[kind],
                    start or 0,
                    end or start or 0,
                    statuses[status],
                    dumps({k: _jsonable(v) for k, v in attrs}) if attrs else "{}",
                    pid,
                )
            )
        return out

    def forget(self) -> None:
        """After fork(): what is pending is the parent's to write."""
        self._pending.clear()

    def shutdown(self) -> None:
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_KINDS = {kind: kind.name.lower() for kind in SpanKind}
_STATUSES = {status: status.name for status in StatusCode}


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)
