"""Exporters: one module per output format, one tiny interface.

An exporter must never raise into the profiler: failures are logged and counted.
"""

from __future__ import annotations

from typing import Protocol

from spanprof.model import Chunk


class Exporter(Protocol):
    """Receives each finished chunk; ``shutdown`` flushes and releases resources."""

    def export(self, chunk: Chunk) -> None: ...

    def shutdown(self) -> None: ...
