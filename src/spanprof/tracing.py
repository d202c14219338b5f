"""Makes sure OpenTelemetry spans are real and seen by spanprof's SpanProcessor.

- An application that configured an SDK ``TracerProvider`` keeps it: spanprof
  only adds its processor (the app's processors and exporters keep working).
- With none, spanprof installs a provider so ``trace.get_tracer(...)`` gives
  real spans. It does so *without* taking OTel's set-once slot, so the
  application may still call ``trace.set_tracer_provider`` later; tracers
  handed out before that follow the application's provider from then on.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from spanprof._spans import SpanRecorder

__all__ = ["SpanprofProcessor", "TracingSetup"]

_log = logging.getLogger("spanprof")


class SpanprofProcessor(SpanRecorder, SpanProcessor):
    """spanprof's one span processor: local roots for the linker, finished spans for the store.

    It sits on the application's span hot path, so its per-span work is in C
    (:class:`~spanprof._spans.SpanRecorder`) and it is one processor, not
    two: the SDK calls three methods of each processor per span.

    - ``local_root(span)``: the span's local root (the first span of its
      trace in this process: no parent, or a remote one), which is the root of
      its trace that started last before it. (Exact unless one trace enters
      this process twice concurrently.) Ended roots stay known for
      ``grace_ns`` at least, as samples are resolved a little after they are
      taken; then they are forgotten. A running root is kept as its span (it
      may still be renamed); an ended one only as its id, start, name and
      type, never the span: keeping thousands of ended spans alive makes the
      garbage collector walk them (~9 µs per span for the application).
    - ``take_rows()``: the spans ended since the last call, for the store;
      spanprof's exporter thread takes them in batches (see the profiler).
      Past ``max_rows`` waiting, more are counted in ``dropped``, not kept.
    """

    def __init__(self, *, rows: bool = True, max_rows: int = 65536) -> None:
        super().__init__(
            trace_types=_TRACE_TYPES, status_names=_STATUSES, rows=rows, max_rows=max_rows
        )


_TRACE_TYPES = {kind: kind.name.lower() for kind in SpanKind}
_STATUSES = {status: status.name for status in StatusCode}


class _FollowingTracer(trace.ProxyTracer):
    """A tracer that uses the application's provider once it has one, ours before."""

    def __init__(self, owner: _DefaultProvider, *args: Any) -> None:
        super().__init__(*args)
        self._owner = owner
        self._bound: tuple[Any, trace.Tracer] | None = None

    @property
    def _tracer(self) -> trace.Tracer:
        provider = trace._TRACER_PROVIDER
        if provider is None or provider is self._owner:
            provider = self._owner.sdk
        bound = self._bound
        if bound is None or bound[0] is not provider:
            self._owner.setup.attach(provider)
            tracer = provider.get_tracer(
                self._instrumenting_module_name,
                self._instrumenting_library_version,
                self._schema_url,
                self._attributes,
            )
            bound = self._bound = (provider, tracer)
        return bound[1]


class _DefaultProvider(trace.TracerProvider):
    """spanprof's provider for applications that set none."""

    def __init__(self, setup: TracingSetup) -> None:
        self.setup = setup
        self.sdk = SdkTracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME etc.

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _FollowingTracer(
            self, instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )


class TracingSetup:
    """Installs ``processors`` on whichever SDK provider the application ends up using."""

    def __init__(self, *processors: SpanProcessor) -> None:
        self.processors = processors
        self._attached: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._default: _DefaultProvider | None = None
        self._patched: Any = None
        self._warned = False

    def install(self) -> None:
        provider = trace._TRACER_PROVIDER
        if provider is None and trace.OTEL_PYTHON_TRACER_PROVIDER not in os.environ:
            self._default = _DefaultProvider(self)
            self.attach(self._default.sdk)
            trace._TRACER_PROVIDER = self._default  # not via set_tracer_provider: see above
        else:
            self.check()
        # Attach to a provider the app sets later before its first span starts
        # (check() also catches one set through a reference taken before this).
        original = trace.set_tracer_provider

        def set_tracer_provider(tracer_provider: trace.TracerProvider) -> None:
            original(tracer_provider)
            self.check()

        set_tracer_provider.__wrapped__ = original  # type: ignore[attr-defined]
        self._patched = set_tracer_provider
        trace.set_tracer_provider = set_tracer_provider

    def check(self) -> None:
        """Attach to the global provider if it changed (the app set its own later)."""
        provider = trace.get_tracer_provider()
        if provider is not self._default and provider not in self._attached:
            self.attach(provider)

    def attach(self, provider: Any) -> None:
        if provider in self._attached:
            return
        with self._lock:
            if provider in self._attached:
                return
            if isinstance(provider, SdkTracerProvider):
                for processor in self.processors:
                    provider.add_span_processor(processor)
                self._attached.add(provider)
            elif isinstance(provider, (_DefaultProvider, trace.ProxyTracerProvider)):
                pass
            else:
                self._attached.add(provider)  # once
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "spanprof: tracer provider %s is not the OTel SDK's; samples get span "
                        "ids but no local root (trace_endpoint)",
                        type(provider).__name__,
                    )

    def uninstall(self) -> None:
        """Leave the application's tracing as it was (our processors go quiet)."""
        if self._default is not None and trace._TRACER_PROVIDER is self._default:
            trace._TRACER_PROVIDER = None
        self._default = None
        patched = self._patched
        if patched is not None and trace.set_tracer_provider is patched:
            trace.set_tracer_provider = patched.__wrapped__
        self._patched = None
