"""Type stub of the native sampler (``_sampler.c``)."""

from collections.abc import Callable
from contextvars import ContextVar
from types import CodeType
from typing import Any

from spanprof._profile import Window

CODE_ID_UNKNOWN: int
CODE_ID_TRUNCATED: int
WALL_TICKS: int  # run() with a signal: clocks are read every WALL_TICKS intervals

# (ident, native_id, cpu_ns, wall_ns, packed stack, context value, captured in place,
#  capture time as time.time_ns, ticks it stands for)
_Sample = tuple[int, int, int, int, bytes, Any, bool, int, int]

class Sampler:
    def __init__(
        self,
        max_depth: int = 128,
        signum: int = 0,
        slots: int = 16,
        timeout: float = 0.02,
        cpu_timers: bool = False,
    ) -> None: ...
    def tick(
        self,
        var: ContextVar[Any] | None = None,
        native_ids: dict[int, int] | None = None,
        value_type: type | None = None,
    ) -> list[_Sample]: ...
    def run(
        self,
        callback: Callable[..., object],
        interval: float,
        var: ContextVar[Any] | None = None,
        native_ids: Callable[[], dict[int, int]] | None = None,
        value_type: type | None = None,
        window: Window | None = None,
    ) -> None:
        """Without a window: callback(list of samples) per batch. With one, the
        samples are counted into it and callback(values, threads) returns their
        labels, as spanprof.sampler.Sink describes."""
    def stop(self) -> None: ...
    def set_interval(self, interval: float, /) -> None: ...
    def ticker_native_id(self) -> int: ...
    def code(self, code_id: int) -> CodeType | None: ...
    def reset_codes(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

def free_signal() -> int: ...
def signal_is_free(signum: int, /) -> bool: ...
def thread_cpu_ns(native_id: int, /) -> int: ...
def name_this_thread(name: str, /) -> None: ...
def _readable(address: int, /) -> bool: ...
