"""Wires the pipeline: sampler -> (linker) -> profile -> exporters.

The host application comes first: nothing here raises into it once started,
no lock of ours is taken on an application thread, and at exit we flush what
we have within a bounded time.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Protocol

from spanprof import _sampler, propagation
from spanprof.budget import CpuBudget
from spanprof.config import Config, ConfigError
from spanprof.exporters import Exporter
from spanprof.exporters.pprof import PprofFileExporter
from spanprof.exporters.store import StoreExporter, span_rows
from spanprof.linker import OTelLinker, install_context_hook, uninstall_context_hook
from spanprof.model import Chunk, Labels
from spanprof.profile import FrameResolver, Profile
from spanprof.sampler import Link, Sampler, SpanprofWarning
from spanprof.store import StoreError, StoreWriter, store_path
from spanprof.tracing import SpanprofProcessor, TracingSetup

__all__ = ["Linker", "Profiler", "active", "start", "stop"]

_log = logging.getLogger("spanprof")

# Past this many code objects kept alive for resolution, the table is reset
# after a rotation (bounded memory for programs that keep creating code).
_MAX_CODES = 50_000
_EXPORT_QUEUE = 16
# Finished spans are written at each window's export, at least every
# _SPAN_WRITE_EVERY seconds, and as soon as _SPAN_WRITE_AT of them wait. Each
# write takes the GIL from the application a dozen times (the sqlite3 module
# releases it around every call): on this 2-CPU VM, 300 spans written while 8
# threads compete for the GIL cost 3 ms of CPU and 100+ ms of waiting, against
# 0.7 ms alone (docs/performance.md).
_SPAN_WRITE_EVERY = 10.0
_SPAN_WRITE_AT = 8192
# Queued to wake the exporter for spans only. It sleeps until spans are due or
# this comes (the resolver checks the count at each batch): on a shared VM an
# idle thread's wake-up costs ~1 ms of CPU, and polling each second did that.
_SPANS_DUE = object()
_BUDGET_CHECK = 0.25  # seconds between looks at the CPU used (the budget decides when to act)


class Linker(Protocol):
    """Maps the value of a context variable, read from a thread's live context, to labels."""

    var: ContextVar[Any]
    value_type: type | None  # what the variable holds; lets the sampler vet stale pointers

    def link(self, value: Any) -> Link:
        """Labels for ``value``, and the capture times (``time.time_ns``) they hold for."""
        ...

    def clear(self) -> None:
        """Drop cached resolutions."""
        ...


class Profiler:
    """A running profile of this process. Use :func:`spanprof.start` or ``with Profiler():``."""

    def __init__(
        self,
        *,
        linker: Linker | None = None,
        exporters: Iterable[Exporter] | None = None,
        **options: object,
    ) -> None:
        self.config = Config.from_sources(options)
        self._custom_linker = linker
        self._linker: Linker | None = None
        self._tracing: TracingSetup | None = None
        self._propagating = False
        self._extra_exporters = list(exporters or ())
        self._lock = threading.Lock()  # start/stop only; never taken on the sampling path
        self._running = False
        self._sampler: Sampler | None = None
        self._errors = 0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Profiler:
        """Start sampling. Raises ConfigError if the output directory is unusable."""
        with self._lock:
            if self._running:
                return self
            out = os.path.abspath(self.config.output_dir)
            try:
                os.makedirs(out, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"output directory {out!r} cannot be created: {exc.strerror}"
                ) from None
            if not os.access(out, os.W_OK | os.X_OK):
                raise ConfigError(f"output directory {out!r} is not writable")
            self.output_dir = out
            try:
                self._store = StoreWriter(store_path(out))
            except StoreError as exc:
                raise ConfigError(str(exc)) from None
            self.exporters: list[Exporter] = [
                PprofFileExporter(out),
                StoreExporter(self._store),
                *self._extra_exporters,
            ]
            self._start_tracing()
            self._start_pipeline()
            self._running = True
        return self

    def _start_tracing(self) -> None:
        if self._custom_linker is not None:
            self._linker = self._custom_linker
        else:
            self._spans = SpanprofProcessor()
            self._tracing = TracingSetup(self._spans)
            self._tracing.install()
            self._linker = OTelLinker(self._spans, install_context_hook())
        if self.config.propagate and not propagation.installed():
            propagation.install()
            self._propagating = True

    def _stop_tracing(self) -> None:
        if self._propagating:
            propagation.uninstall()
            self._propagating = False
        if self._tracing is not None:
            self._tracing.uninstall()
            for processor in self._tracing.processors:
                processor.shutdown()  # no more spans; those waiting are still written
            self._tracing = None
            uninstall_context_hook()

    def _start_pipeline(self) -> None:
        cfg = self.config
        self._thread_labels: dict[tuple[int, int], Labels] = {}
        self._queue: queue.Queue[Chunk | object | None] = queue.Queue(_EXPORT_QUEUE)
        self._exporter_abandoned = False
        self.exports_dropped = 0
        self._exporter_thread = threading.Thread(
            target=self._export_loop, name="spanprof-exporter", daemon=True
        )
        self._exporter_thread.start()
        self._own = {self._exporter_thread.ident}
        sampler = Sampler(
            self._on_batch,
            interval=cfg.interval,
            max_depth=cfg.max_depth,
            signal=cfg.signal,
            cpu_timers=cfg.cpu_timers,
            var=self._linker.var if self._linker else None,
            value_type=self._linker.value_type if self._linker else None,
        )
        self.resolver = FrameResolver(sampler.code)
        self.profile = Profile(self.resolver, period_ns=int(cfg.interval * 1e9))
        self._window_end = time.monotonic() + cfg.window
        self._budget = CpuBudget(cfg.cpu_budget / 100, cfg.interval, first_period=0.5)
        self._budget_check = 0.0
        self._sampler = sampler
        sampler.start(self.profile.window)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and flush every sample taken to the exporters. Idempotent."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            sampler, self._sampler = self._sampler, None
            if sampler is not None:
                sampler.stop(timeout)  # the last ticks are counted first
            self._rotate()
            try:  # a stuck exporter with a full queue must not hang the app's exit
                self._queue.put(None, timeout=timeout)
                self._exporter_thread.join(timeout)
            except queue.Full:
                self._exporter_abandoned = True  # it ends once it has drained the queue
            if self._exporter_thread.is_alive():
                _log.warning("spanprof: exporters did not finish within %.1f s", timeout)
            for exporter in self.exporters:
                try:
                    exporter.shutdown()
                except Exception as exc:  # exporters must not raise; contain it if one does
                    _log.warning("spanprof: exporter shutdown failed: %s", exc)
            self._write_spans()  # spans that ended since the exporter's last drain
            self._stop_tracing()
            self._store.close()

    @property
    def running(self) -> bool:
        return self._running

    def stats(self) -> dict[str, Any]:
        """Sampler counters plus what the pipeline dropped or failed on."""
        stats: dict[str, Any] = self._sampler.stats() if self._sampler else {}
        if self._sampler is not None:
            stats["interval"] = self._budget.interval
        stats["errors"] = self._errors
        stats["exports_dropped"] = getattr(self, "exports_dropped", 0)
        return stats

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _after_fork_in_child(self) -> None:
        """The child has only the forking thread: restart with a fresh profile."""
        self._lock = threading.Lock()
        if not self._running:
            return
        if self._sampler is not None:
            self._sampler.abandon()
        # The parent's SQLite connection must not be used here: open our own
        # (the old one is kept referenced, never closed, in this process).
        self._inherited_store = self._store
        self._store = StoreWriter(self._store.path)
        self.exporters = [
            StoreExporter(self._store) if isinstance(e, StoreExporter) else e
            for e in self.exporters
        ]
        if self._tracing is not None:
            self._spans.take_rows()  # what is pending is the parent's to write
        if sys.version_info < (3, 11):
            # 3.10's threading keeps the parent's native id for the forking thread,
            # and 3.10 thread states carry none: the sampler reads it from here.
            threading.current_thread()._native_id = threading.get_native_id()  # type: ignore[attr-defined]
        try:
            self._start_pipeline()
        except Exception as exc:
            self._running = False
            _log.warning("spanprof: not restarted after fork: %s", exc)

    # -- sampling path (sampler thread, GIL held) ---------------------------

    def _on_batch(
        self, values: list[Any], threads: list[tuple[int, int]]
    ) -> tuple[list[Link], list[Labels | None]] | None:
        """Labels for a batch's distinct context values and threads (the native
        resolver counts the samples), then the pipeline's periodic work."""
        try:
            own = self._own
            thread_labels = self._thread_labels
            labels: list[Labels | None] = []
            for ident, native_id in threads:
                if ident in own:
                    labels.append(None)
                    continue
                found = thread_labels.get((ident, native_id))
                if found is None:
                    found = self._make_thread_labels(ident, native_id)
                labels.append(found)
            linker = self._linker
            links = [linker.link(v) for v in values] if linker is not None else [None] * len(values)
            if self._tracing is not None:
                self._tracing.check()  # the app may have set its own provider meanwhile
                # the exporter writes spans with each window: word only to an idle one
                # (a queued word would take the slot of a window, or repeat itself)
                if self._spans.pending >= _SPAN_WRITE_AT and self._queue.empty():
                    try:
                        self._queue.put_nowait(_SPANS_DUE)
                    except queue.Full:
                        pass
            now = time.monotonic()
            if now >= self._budget_check:
                self._budget_check = now + _BUDGET_CHECK
                self._adapt_interval(now)
            if self.profile.full or now >= self._window_end:
                self._rotate()  # this batch is counted in the next window
            return links, labels
        except Exception as exc:
            self._errors += 1
            if self._errors == 1:
                _log.warning("spanprof: dropping samples after an internal error: %r", exc)
            return None

    def _adapt_interval(self, now: float) -> None:
        """Keep our CPU under the budget: the ticker, this resolver thread, the exporter,
        and what in-place captures cost the sampled threads."""
        sampler = self._sampler
        if sampler is None:
            return
        own_ns = time.thread_time_ns() + sampler.own_cpu_ns()
        exporter = self._exporter_thread.native_id
        if exporter:
            try:
                own_ns += _sampler.thread_cpu_ns(exporter)
            except OSError:
                pass
        interval = self._budget.update(now, own_ns / 1e9)
        if interval is not None:
            sampler.set_interval(interval)
            self.profile.period_ns = int(interval * 1e9)

    def _make_thread_labels(self, ident: int, native_id: int) -> Labels:
        thread = threading._active.get(ident)  # type: ignore[attr-defined]
        name = thread.name if thread is not None else ""
        labels: Labels = (("thread.id", ident), ("thread.native_id", native_id))
        if name:
            labels += (("thread.name", name),)
        if thread is not None:  # a starting thread is not registered yet: ask again
            self._thread_labels[(ident, native_id)] = labels
        return labels

    def _rotate(self) -> None:
        self._window_end = time.monotonic() + self.config.window
        chunk = self.profile.rotate()
        self._thread_labels.clear()  # names may have changed
        if self._linker is not None:
            self._linker.clear()
        if self._sampler is not None and self._sampler.code_count() > _MAX_CODES:
            self._sampler.reset_codes()
            self.resolver.clear()
        if chunk is None:
            return
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.exports_dropped += 1
            _log.warning("spanprof: exporters are behind; a profile window was dropped")

    # -- exporter thread ------------------------------------------------------

    def _write_spans(self) -> None:
        processor = getattr(self, "_spans", None)
        if processor is None or self._tracing is None:
            return
        try:
            rows = span_rows(processor.take_rows(), os.getpid())
            if rows:
                self._store.write_span_rows(rows)
        except Exception as exc:  # never into the app; the next drain tries again
            _log.warning("spanprof: could not store spans: %s", exc)

    def _export_loop(self) -> None:
        _sampler.name_this_thread("spanprof-export")
        spans_due = time.monotonic() + _SPAN_WRITE_EVERY
        while True:
            try:
                chunk = self._queue.get(timeout=max(0.0, spans_due - time.monotonic()))
            except queue.Empty:
                chunk = _SPANS_DUE
            self._write_spans()  # before a window, whose samples refer to them
            spans_due = time.monotonic() + _SPAN_WRITE_EVERY
            if chunk is None:
                return
            if chunk is not _SPANS_DUE:
                for exporter in self.exporters:
                    try:
                        exporter.export(chunk)
                    except Exception as exc:
                        name = type(exporter).__name__
                        _log.warning("spanprof: exporter %s failed: %s", name, exc)
            if self._exporter_abandoned and self._queue.empty():
                return  # stop() gave up waiting for it: no end marker will come


_active: Profiler | None = None
_active_lock = threading.Lock()


def active() -> Profiler | None:
    """The profiler started with :func:`start`, if it is running."""
    return _active if _active is not None and _active.running else None


def start(**options: object) -> Profiler:
    """Start profiling this process; options as in :class:`spanprof.config.Config`.

    Also reads ``SPANPROF_*`` variables. A second call while running returns the
    running profiler (with a warning) rather than raising into the application.
    """
    global _active
    with _active_lock:
        if _active is not None and _active.running:
            warnings.warn("spanprof is already running", SpanprofWarning, stacklevel=2)
            return _active
        profiler = Profiler(**options)
        profiler.start()
        _active = profiler
    _flush_on_sigterm()
    return profiler


def stop() -> None:
    """Stop the profiler started with :func:`start` and flush it. Safe to call twice."""
    global _active
    with _active_lock:
        profiler, _active = _active, None
    if profiler is not None:
        profiler.stop()
    _restore_sigterm()


def _restore_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def _on_sigterm(signum: int, frame: object) -> None:
    """Flush, then die of SIGTERM as the process would have without us."""
    try:
        stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _flush_on_sigterm() -> None:
    """SIGTERM's default action skips atexit, losing the open window (every
    container stop). If the application has no handler of its own, flush first."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


def _after_fork_in_child() -> None:
    global _active_lock
    _active_lock = threading.Lock()
    if _active is not None:
        _active._after_fork_in_child()


atexit.register(stop)
os.register_at_fork(after_in_child=_after_fork_in_child)
