"""The linker and the local-root SpanProcessor, driven with real SDK spans."""

from __future__ import annotations

import contextvars
import gc
import sys
import threading
import time
import weakref

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from spanprof import _sampler
from spanprof import linker as linker_mod
from spanprof._context import RetainingContext
from spanprof.linker import OTelLinker, install_context_hook, uninstall_context_hook
from spanprof.tracing import SpanprofProcessor


@pytest.fixture
def setup() -> tuple[trace.Tracer, SpanprofProcessor, OTelLinker]:
    provider = TracerProvider()
    processor = SpanprofProcessor()
    provider.add_span_processor(processor)
    var: contextvars.ContextVar[Context] = contextvars.ContextVar("test_otel")
    return provider.get_tracer("test"), processor, OTelLinker(processor, var)


def ctx_of(span: trace.Span) -> Context:
    return trace.set_span_in_context(span, Context())


def test_live_span_labels_with_its_local_root(setup) -> None:
    tracer, _, link = setup
    root = tracer.start_span("GET /orders", kind=trace.SpanKind.SERVER, context=Context())
    child = tracer.start_span("load", context=ctx_of(root))
    labels, start, end = link.link(ctx_of(child))
    assert (start, end) == (child.start_time, None)  # open: every later capture links
    labels = dict(labels)
    assert labels == {
        "trace_id": format(root.get_span_context().trace_id, "032x"),
        "span_id": format(child.get_span_context().span_id, "016x"),
        "span_name": "load",
        "local_root_span_id": format(root.get_span_context().span_id, "016x"),
        "trace_endpoint": "GET /orders",
        "trace_type": "server",
    }
    assert len(labels["trace_id"]) == 32 and len(labels["span_id"]) == 16


def test_a_span_with_a_remote_parent_is_its_own_local_root(setup) -> None:
    tracer, _, link = setup
    remote = NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    span = tracer.start_span("consume", kind=trace.SpanKind.CONSUMER, context=ctx_of(remote))
    labels = dict(link.link(ctx_of(span))[0])
    assert labels["trace_id"] == format(0xABC, "032x")
    assert labels["local_root_span_id"] == labels["span_id"]
    assert labels["trace_type"] == "consumer"
    # the remote parent itself is not a span of this process: no labels
    assert link.link(ctx_of(remote)) is None


def test_an_ended_span_links_only_captures_taken_while_it_ran(setup) -> None:
    """The sampler compares each capture's time with [start, end): see
    test_native_sampler's test of the window."""
    tracer, _, link = setup
    span = tracer.start_span("work", context=Context())
    value = ctx_of(span)
    span.end()
    labels, start, end = link.link(value)
    assert dict(labels)["span_name"] == "work"
    assert (start, end) == (span.start_time, span.end_time)


def test_a_span_started_after_the_capture_is_not_its_target(setup) -> None:
    tracer, _, link = setup
    captured = time.time_ns()
    time.sleep(0.001)
    span = tracer.start_span("later", context=Context())
    assert link.link(ctx_of(span))[1] > captured  # its interval excludes the capture


def test_no_span_no_labels(setup) -> None:
    _, _, link = setup
    assert link.link(Context()) is None
    assert link.link(Context({"other": 1})) is None


def test_the_cache_does_not_keep_ended_spans_alive(setup) -> None:
    """What the cache holds stays alive for the app's garbage collector to walk."""
    tracer, _, link = setup
    live = tracer.start_span("live", context=Context())
    live_value = ctx_of(live)
    link.link(live_value)
    for i in range(3 * linker_mod._MAX_CACHE):
        span = tracer.start_span(f"short {i}", context=Context())
        span.end()
        assert dict(link.link(ctx_of(span))[0])["span_name"] == f"short {i}"
    assert len(link._cache) <= linker_mod._MAX_CACHE
    ended = [e for e in link._cache.values() if e[1] is not None and e[1].end_time is not None]
    assert len(ended) < linker_mod._MAX_CACHE
    assert any(e[0] is live_value for e in link._cache.values())  # running spans stay cached


def test_renamed_spans_are_relabelled(setup) -> None:
    tracer, _, link = setup
    root = tracer.start_span("GET", kind=trace.SpanKind.SERVER, context=Context())
    value = ctx_of(root)
    assert dict(link.link(value)[0])["trace_endpoint"] == "GET"
    root.update_name("GET /users/{id}")  # routing names the server span late
    labels = dict(link.link(value)[0])
    assert labels["trace_endpoint"] == labels["span_name"] == "GET /users/{id}"


def root_id(processor: SpanprofProcessor, span: trace.Span) -> int | None:
    root = processor.local_root(span)  # type: ignore[arg-type]
    return None if root is None else root[0]


def test_processor_forgets_ended_roots_after_a_grace_period(setup) -> None:
    tracer, processor, _ = setup
    processor.grace_ns = 0
    running = tracer.start_span("GET /running", context=Context())
    running_child = tracer.start_span("child", context=ctx_of(running))
    root = tracer.start_span("GET /a", context=Context())
    child = tracer.start_span("child", context=ctx_of(root))
    root.end()
    root_span_id = root.get_span_context().span_id
    assert root_id(processor, child) == root_span_id  # in its grace period
    for i in range(256):  # purges run every 256 ended roots
        tracer.start_span(f"other {i}", context=Context()).end()
    assert root_id(processor, child) == root_span_id  # ended after the last purge: kept
    for i in range(256):
        tracer.start_span(f"other {i}", context=Context()).end()
    assert processor.local_root(child) is None
    assert root_id(processor, root) == root_span_id  # a root is always its own
    assert processor.local_root(running_child)[3] is running  # running roots stay
    assert processor.roots < 2 * 256  # those ended before the last purge went


def test_many_roots_started_and_ended_in_any_order_are_found(setup) -> None:
    """Running roots are deleted from their table in place; ended ones go to a log."""
    import random

    tracer, processor, _ = setup
    rng = random.Random(5)
    roots = [tracer.start_span(f"GET /{i}", context=Context()) for i in range(600)]
    children = [tracer.start_span("child", context=ctx_of(r)) for r in roots]
    order = list(range(600))
    rng.shuffle(order)
    for step, i in enumerate(order):
        roots[i].end()
        if step % 97 == 0:  # lookups between ends: running and ended roots, every one
            for k, child in enumerate(children):
                found = processor.local_root(child)
                assert found is not None and found[0] == roots[k].get_span_context().span_id
                assert found[1] == f"GET /{k}"
                assert (found[3] is None) == (roots[k].end_time is not None)
    assert processor.roots == 600  # all ended, within their grace period


def test_processor_errors_never_reach_the_application(setup) -> None:
    """A span the processor cannot read is counted, not raised into span start/end."""
    tracer, processor, _ = setup

    class Odd:
        _parent = None
        _context = "not a span context"

    processor.on_start(Odd(), parent_context=None)
    processor.on_end(Odd())
    processor.on_end(object())
    assert processor.errors == 3
    with tracer.start_as_current_span("still fine") as span:  # and it still records
        pass
    assert processor.local_root(span)[0] == span.get_span_context().span_id
    assert processor.pending == 1


def test_spans_are_read_as_python_reads_them() -> None:
    """The processor reads span attributes at indexes it learns per class (3.11+):
    a materialized __dict__, a class changed since (a property, __getattribute__),
    a deleted attribute all read as Python reads them."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind

    class Mine(ReadableSpan):
        pass

    processor = SpanprofProcessor()
    parent = SpanContext(trace_id=7, span_id=1, is_remote=False)

    def ended(name: str, span_id: int) -> Mine:
        context = SpanContext(trace_id=7, span_id=span_id, is_remote=False)
        return Mine(name, context, parent, kind=SpanKind.CLIENT, start_time=10, end_time=20)

    def names() -> list[str]:
        return [row[3] for row in processor.take_rows()]

    for i in range(3):  # learnt, then read from the learnt indexes
        processor.on_end(ended(f"plain {i}", 10 + i))
    assert names() == ["plain 0", "plain 1", "plain 2"]
    with_dict = ended("before", 20)
    vars(with_dict)["_name"] = "through its __dict__"
    processor.on_end(with_dict)
    assert names() == ["through its __dict__"]
    shadowed = ended("shadowed", 30)
    Mine._name = property(lambda self: "the class's property")  # a data descriptor wins
    processor.on_end(shadowed)
    assert names() == ["the class's property"]
    del Mine._name
    Mine.__getattribute__ = lambda self, name: (  # type: ignore[method-assign]
        "from __getattribute__" if name == "_name" else ReadableSpan.__getattribute__(self, name)
    )
    for i in range(3):  # learnt again, for the class as it is now
        processor.on_end(ended("overridden", 35 + i))
    assert names() == ["from __getattribute__"] * 3
    del Mine.__getattribute__
    gone = ended("deleted", 40)
    del gone._name
    processor.on_end(gone)
    assert processor.errors == 1  # counted, not raised
    processor.on_end(ended("back", 50))
    assert names() == ["back"]
    assert processor.errors == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10's interpreter does not specialize")
def test_the_sdk_finds_the_processors_methods_on_the_interpreters_fast_path() -> None:
    """The SDK loads three of the processor's methods per span. An instance
    whose attribute storage was never set up keeps those loads generic on 3.12."""
    import dis

    processor = SpanprofProcessor()

    def calls(p: SpanprofProcessor) -> None:
        for _ in range(64):
            p.force_flush()

    calls(processor)
    code = dis.get_instructions(calls, adaptive=True)
    loads = [i.opname for i in code if i.argval == "force_flush"]
    assert loads and all(op not in ("LOAD_ATTR", "LOAD_METHOD") for op in loads), loads
    processor.note = "an instance still takes attributes"
    assert vars(processor) == {"note": "an instance still takes attributes"}


def test_ended_roots_are_kept_as_primitives_not_spans(setup) -> None:
    """Ended spans kept alive cost the app's garbage collector; a root's final name counts."""
    tracer, processor, _ = setup
    root = tracer.start_span("GET", kind=trace.SpanKind.SERVER, context=Context())
    child = tracer.start_span("child", context=ctx_of(root))
    assert processor.local_root(child)[3] is root  # running: the span itself (may be renamed)
    root.update_name("GET /users/{id}")
    root.end()
    assert processor.local_root(child) == (
        root.get_span_context().span_id,
        "GET /users/{id}",
        "server",
        None,
    )
    root_span_id = root.get_span_context().span_id
    gone = weakref.ref(root)
    del root
    gc.collect()
    assert gone() is None  # the processor no longer holds the ended root
    assert root_id(processor, child) == root_span_id  # yet still knows it


def test_roots_keep_no_trace_id_object_alive() -> None:
    """At a high rate of requests thousands of roots wait out the grace period:
    running or ended, a root's trace id is kept as bits, never as the int."""
    import sys

    def refs_to_trace_id(with_processor: bool) -> tuple[int, int]:
        provider = TracerProvider()
        processor = SpanprofProcessor(rows=False)  # a row would hold the trace id until taken
        if with_processor:
            provider.add_span_processor(processor)
        tracer = provider.get_tracer("test")
        root = tracer.start_span("GET", context=Context())
        trace_id = root.get_span_context().trace_id
        child = tracer.start_span("child", context=ctx_of(root))
        running = sys.getrefcount(trace_id)
        root.end()
        if with_processor:
            assert root_id(processor, child) == root.get_span_context().span_id  # still known
        return running, sys.getrefcount(trace_id)

    assert refs_to_trace_id(True) == refs_to_trace_id(False)


def test_roots_are_told_apart_by_all_128_bits_of_their_trace_id() -> None:
    """Trace ids that differ only above bit 64, or at the 128-bit edge, are other traces."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    low = 0x1234_5678_9ABC_DEF0
    ids = [low, low | 1 << 64, low | 1 << 120, low | 1 << 127, (1 << 128) - 1, 1 << 96]

    class Ids(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return ids.pop()

    provider = TracerProvider(id_generator=Ids())
    processor = SpanprofProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    roots = [tracer.start_span(f"GET /{i}", context=Context()) for i in range(len(ids))]
    children = [tracer.start_span("child", context=ctx_of(root)) for root in roots]
    for root, child in zip(roots, children, strict=True):
        assert processor.local_root(child)[3] is root  # running
    for root in roots:
        root.end()
    for root, child in zip(roots, children, strict=True):
        assert processor.local_root(child)[:2] == (root.get_span_context().span_id, root.name)
    assert processor.errors == 0


def test_trace_ids_beyond_128_bits_are_refused_not_raised() -> None:
    """Trace ids are 128 bits; another int is counted as an error, never raised."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class BadIds(RandomIdGenerator):
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

        def generate_trace_id(self) -> int:
            return self.ids.pop()

    provider = TracerProvider(id_generator=BadIds([1 << 128, -5]))
    processor = SpanprofProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(2):
        tracer.start_span("GET", context=Context()).end()
    assert processor.errors == 2  # at the roots' start
    assert processor.roots == 0
    assert len(processor.take_rows()) == 2  # their spans are still stored


def test_processor_tracks_roots_only_and_is_bounded(setup) -> None:
    tracer, processor, _ = setup
    root = tracer.start_span("GET /b", context=Context())
    children = [tracer.start_span(f"c{i}", context=ctx_of(root)) for i in range(50)]
    assert processor.roots == 1  # children cost nothing to track
    assert all(processor.local_root(c)[3] is root for c in children)
    processor.max_roots = 10
    roots = [tracer.start_span(f"r{i}", context=Context()) for i in range(25)]
    assert 0 < processor.roots <= 10
    assert processor.local_root(children[0]) is None  # forgotten with the others
    assert processor.local_root(roots[-1])[3] is roots[-1]
    for s in [*children, *roots, root]:
        s.end()


def test_the_latest_root_of_a_trace_before_the_span_is_its_local_root(setup) -> None:
    """A trace that re-enters this process (A -> B -> A) has two local roots."""
    tracer, processor, _ = setup
    outer = tracer.start_span("GET /outer", kind=trace.SpanKind.SERVER, context=Context())
    early = tracer.start_span("early", context=ctx_of(outer))
    remote = NonRecordingSpan(
        SpanContext(
            outer.get_span_context().trace_id,
            0x1234,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    )
    inner = tracer.start_span("GET /inner", kind=trace.SpanKind.SERVER, context=ctx_of(remote))
    late = tracer.start_span("late", context=ctx_of(inner))
    assert root_id(processor, early) == outer.get_span_context().span_id
    assert root_id(processor, late) == inner.get_span_context().span_id
    outer.end()
    inner.end()  # ended roots are told apart the same way
    assert root_id(processor, early) == outer.get_span_context().span_id
    assert root_id(processor, late) == inner.get_span_context().span_id


class ThreadLocalRuntime(_RuntimeContext):
    """A stand-in for a non-contextvars OTEL_PYTHON_CONTEXT implementation."""

    def __init__(self) -> None:
        self.stack = [Context()]

    def attach(self, context: Context) -> object:
        self.stack.append(context)
        return len(self.stack) - 1

    def get_current(self) -> Context:
        return self.stack[-1]

    def detach(self, token: object) -> None:
        del self.stack[token:]  # type: ignore[misc]


def test_non_contextvars_runtime_falls_back_to_tracking_attach(monkeypatch) -> None:
    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", ThreadLocalRuntime())
    var = install_context_hook()
    assert install_context_hook() is var  # idempotent
    value = Context({"k": 1})
    token = otel_context.attach(value)
    assert var.get() is value
    otel_context.detach(token)
    assert var.get(None) is not value


def test_contextvars_runtime_is_read_directly() -> None:
    var = install_context_hook()
    try:
        runtime = otel_context._RUNTIME_CONTEXT
        assert isinstance(runtime, RetainingContext)
        assert var is runtime.inner._current_context is runtime.var  # OTel's own variable
        assert install_context_hook() is var  # idempotent
        value = Context({"k": 2})
        alive = weakref.ref(value)
        token = otel_context.attach(value)
        assert var.get() is value
        assert otel_context.get_current() is value
        otel_context.detach(token)
        assert otel_context.get_current() is not value
        del value
        gc.collect()
        assert alive() is None  # no capture saw it: nothing keeps it
        assert runtime.kept() == []
    finally:
        uninstall_context_hook()
    assert isinstance(otel_context._RUNTIME_CONTEXT, ContextVarsRuntimeContext)


def test_a_detached_context_is_kept_until_the_captures_that_saw_it_are_resolved() -> None:
    """A handler's capture holds a pointer to the context, no reference: if the app
    detaches (and so frees) it before the sample is resolved, its memory could be
    reused by another context. Such a context is kept, and only until resolved."""
    var = install_context_hook()
    runtime = otel_context._RUNTIME_CONTEXT
    sampler = _sampler.Sampler(signum=_sampler.free_signal())
    blocked, release, detached = threading.Event(), threading.Event(), threading.Event()
    resolved: list = []

    def sink(samples: list) -> None:
        resolved.extend(samples)
        if not release.is_set():
            blocked.set()
            release.wait(10)  # the resolver waits here: later captures stay unresolved

    refs: list = []

    def work() -> None:
        blocked.wait(10)
        value = Context({"k": "captured"})
        refs.append(weakref.ref(value))
        token = otel_context.attach(value)
        del value  # OTel's ContextVar holds the only reference now
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # running: captured in place, not resolved
            pass
        otel_context.detach(token)
        detached.set()

    def native_ids() -> dict:  # 3.10's thread states lack them
        return {t.ident: t.native_id for t in threading.enumerate()}

    resolver = threading.Thread(target=sampler.run, args=(sink, 0.01, var, native_ids))
    worker = threading.Thread(target=work)
    try:
        resolver.start()
        worker.start()
        assert detached.wait(10)
        (alive,) = refs
        gc.collect()
        assert alive() is not None, sampler.stats()  # kept for the captures that saw it
        assert [id(v) for v in runtime.kept()] == [id(alive())]
        release.set()
        deadline = time.monotonic() + 5
        while runtime.kept() and time.monotonic() < deadline:
            otel_context.detach(otel_context.attach(Context()))  # each detach releases
            time.sleep(0.01)
        assert runtime.kept() == []  # resolved: released
        assert any(s[5] is alive() and s[6] for s in resolved)  # captured in place
    finally:
        release.set()
        sampler.stop()
        resolver.join(10)
        worker.join(10)
        sampler.close()
        uninstall_context_hook()


def test_tokens_work_across_install_and_uninstall() -> None:
    """Tokens are OTel's own ContextVar tokens: detach works whoever handed them out."""
    outer = otel_context.attach(Context({"k": "outer"}))  # OTel's runtime
    install_context_hook()
    try:
        middle = otel_context.attach(Context({"k": "middle"}))  # ours
        inner = otel_context.attach(Context({"k": "inner"}))
        otel_context.detach(inner)
        assert otel_context.get_current().get("k") == "middle"
        otel_context.detach(middle)
        assert otel_context.get_current().get("k") == "outer"
        otel_context.detach(outer)  # handed out before the hook
        assert otel_context.get_current().get("k") is None
        late = otel_context.attach(Context({"k": "late"}))
    finally:
        uninstall_context_hook()
    otel_context.detach(late)  # handed out by the hook, detached by OTel's runtime
    assert otel_context.get_current().get("k") is None


def test_a_bad_token_is_refused_like_otels() -> None:
    install_context_hook()
    try:
        with pytest.raises(ValueError):
            otel_context._RUNTIME_CONTEXT.detach(contextvars.ContextVar("other").set(1))
        with pytest.raises(TypeError):
            otel_context._RUNTIME_CONTEXT.detach("not a token")
    finally:
        uninstall_context_hook()
