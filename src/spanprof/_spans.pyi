"""Type stub of spanprof's span processor work in C (``_spans.c``)."""

from typing import Any

class SpanRecorder:
    """An OTel SpanProcessor whose per-span work is in C: local roots and store rows."""

    enabled: bool
    max_roots: int
    grace_ns: int
    @property
    def roots(self) -> int: ...  # local roots tracked
    @property
    def pending(self) -> int: ...  # rows waiting to be taken
    @property
    def dropped(self) -> int: ...  # rows not kept: max_rows reached
    @property
    def errors(self) -> int: ...  # spans not recorded: an error reading them
    def __init__(
        self,
        *,
        trace_types: dict[Any, str],
        status_names: dict[Any, str],
        roots: bool = True,
        rows: bool = True,
        max_roots: int = 200000,
        max_rows: int = 65536,
        grace_ns: int = 2_000_000_000,
    ) -> None: ...
    def on_start(self, span: Any, parent_context: Any = None) -> None: ...
    def _on_ending(self, span: Any) -> None: ...
    def on_end(self, span: Any) -> None: ...
    def local_root(self, span: Any) -> tuple[int, str, str, Any] | None: ...
    def take_rows(self) -> list[tuple[Any, ...]]: ...
    def shutdown(self) -> None: ...
    def force_flush(self, timeout_millis: int = 30000) -> bool: ...
