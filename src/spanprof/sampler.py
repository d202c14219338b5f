"""The sampler stage: runs the native sampler on its own thread.

Everything about *capturing* lives in ``_sampler.c``; this module picks the
signal, owns the thread, and hands each tick's raw samples to a sink.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from spanprof import _sampler
from spanprof._profile import Window
from spanprof.config import SIGNAL_AUTO
from spanprof.model import Labels

__all__ = ["Link", "Sampler", "Sink", "SpanprofWarning", "choose_signal"]

_log = logging.getLogger("spanprof")

# What a context value links its samples to: (labels, start_ns, end_ns or None),
# for captures taken in [start_ns, end_ns) (time.time_ns); None: nothing.
Link = tuple[Labels, int, int | None] | None
# sink(context values, (ident, native id) of threads) -> (a Link per value,
# labels per thread or None to leave its samples out); None drops the batch.
Sink = Callable[[list[Any], list[tuple[int, int]]], tuple[list[Link], list[Labels | None]] | None]

_NEEDS_NATIVE_IDS = sys.version_info < (3, 11)  # 3.10 thread states lack the native id


class SpanprofWarning(RuntimeWarning):
    """Something works, but not as well as it should (e.g. a fallback was taken)."""


def choose_signal(requested: int | None) -> int:
    """The real-time signal for in-place capture, or 0 for GIL-only capture.

    A signal the application already handles is never taken over: we warn and
    fall back, because in-place capture is an accuracy gain, not a requirement.
    """
    if requested is None:
        return 0
    if requested == SIGNAL_AUTO:
        signum = _sampler.free_signal()
        if signum == 0:
            warnings.warn(
                "spanprof: every real-time signal is in use; sampling under the GIL only "
                "(running threads are then seen only where they release the GIL)",
                SpanprofWarning,
                stacklevel=3,
            )
        return signum
    if not _sampler.signal_is_free(requested):
        warnings.warn(
            f"spanprof: signal {requested} is already in use by the application; sampling "
            "under the GIL only (pick a free one with --signal / SPANPROF_SIGNAL)",
            SpanprofWarning,
            stacklevel=3,
        )
        return 0
    return requested


def _native_ids() -> dict[int, int]:
    return {ident: t.native_id for ident, t in list(threading._active.items())}  # type: ignore[attr-defined]


class Sampler:
    """Samples every other thread at ``interval`` (jittered) on a daemon thread.

    Samples are counted into the window given to :meth:`start` by the native
    resolver. ``sink`` is
    called under the GIL once per batch with the batch's distinct context
    values and threads, and returns their labels (see :data:`Sink`); it must
    not raise (the native loop reports it and drops the batch if it does).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        interval: float,
        max_depth: int,
        signal: int | None,
        var: ContextVar[Any] | None = None,
        value_type: type | None = None,
        cpu_timers: bool = False,
    ) -> None:
        self.interval = interval
        self.signum = choose_signal(signal)
        self._native = _sampler.Sampler(
            max_depth=max_depth, signum=self.signum, cpu_timers=cpu_timers
        )
        self._sink = sink
        self._window: Window | None = None
        self._var = var
        self._value_type = value_type
        self._thread: threading.Thread | None = None

    @property
    def ident(self) -> int | None:
        """The sampler thread's ident (it never samples itself)."""
        return self._thread.ident if self._thread else None

    def code(self, code_id: int) -> Any:
        """The code object behind a frame id of a packed stack, or None."""
        return self._native.code(code_id)

    def code_count(self) -> int:
        return int(self._native.stats()["codes"])

    def reset_codes(self) -> None:
        """Release every code object kept for resolution; ids restart."""
        self._native.reset_codes()

    def stats(self) -> dict[str, int]:
        return dict(self._native.stats())

    def set_interval(self, interval: float) -> None:
        self._native.set_interval(interval)

    def own_cpu_ns(self) -> int:
        """CPU sampling has used so far, the resolver's aside (it is the caller's).

        The native ticker thread's, plus what in-place captures cost the sampled
        threads (interrupt, signal delivery, handler: measured by their CPU
        timers, ~50 µs a capture on a VM, a few µs on bare metal).
        """
        tid = self._native.ticker_native_id()
        cost = int(self._native.stats()["capture_cost_ns"])
        try:
            return cost + (_sampler.thread_cpu_ns(tid) if tid else 0)
        except OSError:
            return cost

    def start(self, window: Window) -> None:
        """Start sampling; samples are counted into ``window``."""
        self._window = window
        self._thread = threading.Thread(target=self._run, name="spanprof-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _sampler.name_this_thread("spanprof-resolv")
            self._native.run(
                self._sink,
                self.interval,
                self._var,
                _native_ids if _NEEDS_NATIVE_IDS else None,
                self._value_type,
                self._window,
            )
        except BaseException as exc:  # never let the sampler thread die loudly
            _log.warning("spanprof: sampler stopped: %s", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling; every tick already taken reaches the sink first. Idempotent."""
        thread, self._thread = self._thread, None
        self._native.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _log.warning("spanprof: sampler thread did not stop within %.1f s", timeout)
                return
        self._native.close()

    def abandon(self) -> None:
        """After fork(): the thread is gone in the child; release without joining."""
        self._thread = None
        self._native.close()
