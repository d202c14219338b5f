"""The linker stage: maps a thread's live OpenTelemetry context to span labels.

The sampler reads OTel's current-context ``ContextVar`` from each thread's live
contextvars context at the instant of the sample (the running asyncio task's
context, a pool worker's ``ctx.run`` context, ...), so attribution does not
depend on how the context got there. This module turns that value into the
labels of the contract: the innermost span, and the local root of its trace.
"""

from __future__ import annotations

import logging
from collections import deque
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace.propagation import _SPAN_KEY

from spanprof._context import RetainingContext
from spanprof.model import Labels
from spanprof.sampler import Link
from spanprof.tracing import SpanprofProcessor

__all__ = [
    "OTelLinker",
    "install_context_hook",
    "uninstall_context_hook",
]

_log = logging.getLogger("spanprof")

_MAX_CACHE = 256  # cached resolutions; beyond, those of ended spans are dropped


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

    def __init__(self, processor: SpanprofProcessor, var: ContextVar[Any]) -> None:
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
