"""The linker stage: maps a thread's live OpenTelemetry context to span labels.

The sampler reads OTel's current-context ``ContextVar`` from each thread's live
contextvars context at the instant of the sample (the running asyncio task's
context, a pool worker's ``ctx.run`` context, ...), so attribution does not
depend on how the context got there. This module turns that value into the
labels of the contract: the innermost span, and the local root of its trace.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY

from spanprof._context import RetainingContext
from spanprof._spans import SpanRecorder
from spanprof.model import Labels
from spanprof.sampler import Link

__all__ = [
    "LocalRootProcessor",
    "OTelLinker",
    "RootInfo",
    "install_context_hook",
    "uninstall_context_hook",
]

_log = logging.getLogger("spanprof")

_ENDED_GRACE_NS = 2_000_000_000  # ended spans stay resolvable at least this long
_MAX_CACHE = 256  # cached resolutions; beyond, those of ended spans are dropped


# A local root as the linker sees it: (span id, name, trace type, the span while it runs)
RootInfo = tuple[int, str, str, ReadableSpan | None]


class LocalRootProcessor(SpanRecorder, SpanProcessor):
    """Knows the local roots: the first span of each trace in this process.

    A local root has no parent, or a remote one. The processor sits on the
    application's span hot path, so it records local roots only (by trace id)
    and returns at once for every other span; a span's local root is found
    when a sample needs it: the root of its trace that started last before it.
    (Exact unless one trace enters this process twice concurrently.)

    The per-span work is done in C by :class:`~spanprof._spans.SpanRecorder`
    (as Python methods, the calls alone cost a root ~3 µs, 30% of a bare
    one). A running root is kept as its span (it is alive anyway, and may
    still be renamed); an ended one as a tuple of its final id, start, name
    and kind, never the span: keeping thousands of ended spans alive makes the
    garbage collector walk them, which cost the application ~9 µs per span.
    Ended roots are forgotten after a grace period, as samples are resolved a
    little after they are taken.
    """

    def __init__(self) -> None:
        # trace id -> its local roots: live spans or (span id, start, name, trace type)
        self._roots: dict[int, tuple[Any, ...]] = {}
        self._ended: list[tuple[int, int]] = []  # ended in the purge period before
        self._purged_at = time.monotonic_ns()
        super().__init__(roots=self._roots, ending=[], trace_types=_TRACE_TYPES)

    def _purge(self) -> None:
        now = time.monotonic_ns()
        if now - self._purged_at < _ENDED_GRACE_NS:
            return
        roots = self._roots
        for trace_id, span_id in self._ended:  # ended at least one grace period ago
            old = roots.get(trace_id, ())
            if len(old) == 1 and type(old[0]) is tuple and old[0][0] == span_id:
                del roots[trace_id]  # the usual case: the trace's only root
                self._count -= 1
                continue
            live = tuple(r for r in old if not (type(r) is tuple and r[0] == span_id))
            self._count -= len(old) - len(live)
            if live:
                roots[trace_id] = live
            else:
                roots.pop(trace_id, None)
        self._ended = self.take_ending()
        self._purged_at = now

    def _forget_all(self) -> None:
        self._roots.clear()
        self.take_ending()
        self._ended.clear()
        self._count = 0

    def local_root(self, span: ReadableSpan) -> RootInfo | None:
        """The local root of ``span``: itself, or its trace's latest root started before it."""
        parent = span.parent
        if parent is None or parent.is_remote:
            return _root_info(span)
        best: Any = None
        best_start = -1
        start = span.start_time or 0
        for root in self._roots.get(span.context.trace_id, ()):  # type: ignore[union-attr]
            root_start = root[1] if type(root) is tuple else root._start_time or 0
            if best_start < root_start <= start:
                best, best_start = root, root_start
        if best is None:
            return None
        if type(best) is tuple:
            return (best[0], best[2], best[3], None)
        return _root_info(best)

    def shutdown(self) -> None:
        self.enabled = False
        self._forget_all()


def _root_info(span: ReadableSpan) -> RootInfo:
    return (span.context.span_id, span.name, _TRACE_TYPES[span.kind], span)  # type: ignore[union-attr]


_TRACE_TYPES = {kind: kind.name.lower() for kind in SpanKind}


class OTelLinker:
    """Labels for the OTel context value read from a thread's live context.

    Resolution is cached by the value's identity (a context value is immutable;
    the cache keeps it alive so its id is not reused); it holds few ended spans,
    as what it holds stays alive for the app's garbage collector to walk.
    The labels come with the span's start and end time: the sampler links a
    sample only if it was taken while the span was open, so an ended span is
    never a link target, and a span that ended only after the sample was
    taken still gets it.
    """

    value_type = Context

    def __init__(self, processor: LocalRootProcessor, var: ContextVar[Any]) -> None:
        self.processor = processor
        self.var = var
        # id(value) -> (value, span, its name, local root, its name, labels)
        self._cache: dict[int, tuple[Any, Any, str, Any, str, Labels]] = {}

    def link(self, value: Any) -> Link:
        """The labels of ``value``'s span, for captures taken in [start, end) of it.

        A capture before the start saw a value whose memory was reused since.
        """
        cached = self._cache.get(id(value))
        if cached is None or cached[0] is not value:
            cached = self._resolve(value)
        _, span, name, root, root_name, labels = cached
        if span is None:
            return None
        if span._name != name or (root is not None and root._name != root_name):
            labels = self._resolve(value)[5]  # renamed (e.g. routing named the server span)
        return (labels, span._start_time or 0, span._end_time)

    def _resolve(self, value: Any) -> tuple[Any, Any, str, Any, str, Labels]:
        span = value.get(_SPAN_KEY) if isinstance(value, dict) else None
        if not isinstance(span, ReadableSpan) or span.context is None:
            entry: tuple[Any, Any, str, Any, str, Labels] = (value, None, "", None, "", ())
        else:
            ctx = span.context
            labels: Labels = (
                ("trace_id", format(ctx.trace_id, "032x")),
                ("span_id", format(ctx.span_id, "016x")),
                ("span_name", span.name),
            )
            root = self.processor.local_root(span)
            if root is not None:
                root_id, root_name, root_type, root_span = root
                labels += (
                    ("local_root_span_id", format(root_id, "016x")),
                    ("trace_endpoint", root_name),
                    ("trace_type", root_type),
                )
            else:
                root_name, root_span = "", None
            entry = (value, span, span.name, root_span, root_name, labels)
        cache = self._cache
        if len(cache) >= _MAX_CACHE:
            # Values keep their spans alive, which the app's garbage collector
            # then walks: keep those of running spans only.
            for key, (_, old, *_rest) in list(cache.items()):
                if old is None or old._end_time is not None:
                    del cache[key]
            if len(cache) >= _MAX_CACHE // 2:
                cache.clear()
        cache[id(value)] = entry
        return entry

    def clear(self) -> None:
        """Drop cached resolutions (and the values they keep alive)."""
        self._cache.clear()


class _MirroredRuntimeContext(_RuntimeContext):
    """Wraps a runtime context that is not contextvars-based (``OTEL_PYTHON_CONTEXT``).

    There is no ContextVar to read then, so attach/detach is mirrored into one
    of spanprof's (the fallback): exact for threads, and following the wrapped
    implementation for tasks. The last attached contexts are kept alive
    (without the sampler's record of what its pending captures saw, which
    :class:`RetainingContext` uses).
    """

    def __init__(self, inner: _RuntimeContext, mirror: ContextVar[Any]) -> None:
        self.inner = inner
        self.mirror = mirror
        self.recent: deque[Context] = deque(maxlen=_RETAINED)

    def attach(self, context: Context) -> object:
        self.recent.append(context)
        token = self.inner.attach(context)
        return (_MIRROR, token, self.mirror.set(context))

    def get_current(self) -> Context:
        return self.inner.get_current()

    def detach(self, token: object) -> None:
        if isinstance(token, tuple) and len(token) == 3 and token[0] is _MIRROR:
            self.inner.detach(token[1])
            mirror: Token[Any] = token[2]
            try:
                self.mirror.reset(mirror)
            except ValueError:  # detached in another context than attached: follow inner
                self.mirror.set(self.inner.get_current())
        else:
            self.inner.detach(token)  # type: ignore[arg-type]


_MIRROR = object()
# Attached contexts the mirrored runtime keeps alive: a context a signal handler
# saw must not be freed (and its memory reused) before its sample is resolved.
_RETAINED = 2048
_mirror_var: ContextVar[Any] = ContextVar("spanprof_otel_context_mirror")


def install_context_hook() -> ContextVar[Any]:
    """Hook OTel's runtime context; return the ContextVar that holds its current value.

    OTel's contextvars runtime (the default) is replaced by
    :class:`~spanprof._context.RetainingContext`: the same ContextVar and tokens,
    in C, keeping a detached context alive while a capture that saw it waits to
    be resolved (a Python wrapper cost every span two more Python calls).
    """
    runtime = otel_context._RUNTIME_CONTEXT
    if isinstance(runtime, RetainingContext):
        return runtime.var
    if isinstance(runtime, _MirroredRuntimeContext):
        return runtime.mirror
    if isinstance(runtime, ContextVarsRuntimeContext):
        var = runtime._current_context
        otel_context._RUNTIME_CONTEXT = RetainingContext(var, runtime)  # type: ignore[assignment]
        return var
    _log.info(
        "spanprof: OTel runtime context %s is not contextvars-based; tracking attach/detach",
        type(runtime).__name__,
    )
    otel_context._RUNTIME_CONTEXT = _MirroredRuntimeContext(runtime, _mirror_var)
    return _mirror_var


def uninstall_context_hook() -> None:
    """Put OTel's own runtime context back (tokens handed out stay valid for it)."""
    runtime = otel_context._RUNTIME_CONTEXT
    if isinstance(runtime, RetainingContext):
        otel_context._RUNTIME_CONTEXT = runtime.inner
