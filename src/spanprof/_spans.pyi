"""Type stub of the span processors' base in C (``_spans.c``)."""

from typing import Any

class SpanRecorder:
    """An OTel SpanProcessor whose per-span work is in C: local roots and/or store rows."""

    enabled: bool
    dropped: int
    max_roots: int
    @property
    def pending(self) -> int: ...  # rows waiting to be taken
    _count: int
    def __init__(
        self,
        *,
        trace_types: dict[Any, str],
        roots: dict[int, tuple[Any, ...]] | None = None,
        ending: list[tuple[int, int]] | None = None,
        max_roots: int = 200000,
        rows: list[tuple[Any, ...]] | None = None,
        status_names: dict[Any, str] | None = None,
        max_rows: int = 65536,
    ) -> None: ...
    def on_start(self, span: Any, parent_context: Any = None) -> None: ...
    def _on_ending(self, span: Any) -> None: ...
    def on_end(self, span: Any) -> None: ...
    def take_rows(self) -> list[tuple[Any, ...]]: ...
    def take_ending(self) -> list[tuple[int, int]]: ...
    def shutdown(self) -> None: ...
    def force_flush(self, timeout_millis: int = 30000) -> bool: ...
