"""What spanprof's SpanProcessor adds to OpenTelemetry span start + end.

Times ``tracer.start_span(...); span.end()`` on an SDK TracerProvider without and
with spanprof's processor (``spanprof.tracing.SpanprofProcessor``: local roots
for the linker, finished spans for the store), alternating the two in rounds
(which goes first alternates too, so that the host's drift cancels), and prints
the median CPU per span in µs and the median paired ratio: for a child of a
live root (as most spans are), the same with two attributes set, and for a
local root (where the processor records the root); last, a child with the
processor shut down (what the SDK's own three calls to a processor cost). The
finished spans wait for a whole round (20,000 by default; spanprof's exporter
thread takes them at 8,192 or sooner), as waiting spans cost the span path too.
Then the processor's own calls, made directly around an SDK span's start and
end (ns a span; for a root also with root tracking off), and what taking the
finished spans as rows for the store costs (ns a row). Then the whole span
path an instrumented request pays under spanprof: a root and
a child with ``start_as_current_span`` (context attach/detach through spanprof's
runtime-context hook, its span processor, the spans stored by its exporter
thread), spanprof started and stopped between rounds. Last, OTel's context
attach + get_current + detach with OTel's own runtime context and with
spanprof's (``spanprof._context.RetainingContext``).

    python benchmarks/span_processor.py [--spans 20000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider

from spanprof._spans import SpanRecorder
from spanprof.tracing import _STATUSES, _TRACE_TYPES, SpanprofProcessor


def per_span_us(tracer: trace.Tracer, n: int, roots: bool, attrs: bool = False) -> float:
    """CPU per span start+end: children of one live root, or local roots."""
    root = tracer.start_span("root", kind=trace.SpanKind.SERVER)
    parent = trace.set_span_in_context(root) if not roots else Context()
    start = time.thread_time_ns()
    if attrs:
        for i in range(n):
            span = tracer.start_span("span", context=parent)
            span.set_attribute("item", i)
            span.set_attribute("http.route", "/items")
            span.end()
    else:
        for _ in range(n):
            tracer.start_span("span", context=parent).end()
    elapsed = time.thread_time_ns() - start
    root.end()
    return elapsed / n / 1000


def alternated(
    rounds: int, base: Callable[[], float], ours: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """``rounds`` measurements of each, which goes first alternating (the host's drift cancels)."""
    measured: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            measured[which].append((base, ours)[which]())
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    opts = parser.parse_args()
    plain = TracerProvider().get_tracer("bench")
    provider = TracerProvider()
    processor = SpanprofProcessor(max_rows=10 * opts.spans)
    provider.add_span_processor(processor)
    ours_tracer = provider.get_tracer("bench")
    shut_down = SpanprofProcessor()
    shut_down.shutdown()  # records nothing: what is left is the SDK calling a processor
    idle_provider = TracerProvider()
    idle_provider.add_span_processor(shut_down)
    print(f"python {sys.version.split()[0]}, {opts.spans} spans x {opts.rounds} rounds (CPU)")
    cases = (
        (False, False, "child span", ours_tracer),
        (False, True, "child, 2 attrs", ours_tracer),
        (True, False, "local root", ours_tracer),
        (False, False, "  shut down", idle_provider.get_tracer("bench")),
    )
    for roots, attrs, what, tracer in cases:
        per_span_us(plain, 1000, roots), per_span_us(tracer, 1000, roots)  # warm up
        processor.take_rows()

        def with_processor(
            roots: bool = roots, attrs: bool = attrs, tracer: trace.Tracer = tracer
        ) -> float:
            us = per_span_us(tracer, opts.spans, roots, attrs)
            processor.take_rows()  # as spanprof's exporter thread does
            return us

        base, ours = alternated(
            opts.rounds,
            lambda roots=roots, attrs=attrs: per_span_us(plain, opts.spans, roots, attrs),
            with_processor,
        )
        ratios = [o / b for o, b in zip(ours, base, strict=True)]
        b, o = statistics.median(base), statistics.median(ours)
        print(
            f"{what:14s} start+end: SDK alone {b:6.2f} µs, with spanprof's processor {o:6.2f} µs"
            f" ({o - b:+.2f} µs), median paired ratio {statistics.median(ratios):.3f}"
        )
    if processor.errors or processor.dropped:
        raise SystemExit(f"processor errors {processor.errors}, dropped {processor.dropped}")
    direct_calls()
    take_rows_cost(opts.rounds)
    whole_path(opts.spans, opts.rounds)
    context_calls(opts.rounds)
    return 0


def direct_calls(batches: int = 150, n: int = 2000) -> None:
    """The processor's own work: its three methods called around an SDK span's
    start and end, against the same loop without them (a processor-less
    provider), in alternated batches; and for a root, the same with root
    tracking off (what recording the root costs)."""
    tracer = TracerProvider().get_tracer("bench")
    on = SpanprofProcessor(max_rows=1_000_000)
    no_roots = SpanprofProcessor.__new__(SpanprofProcessor)
    SpanRecorder.__init__(
        no_roots, trace_types=_TRACE_TYPES, status_names=_STATUSES, roots=False, max_rows=1_000_000
    )

    def batch_ns(processor: SpanprofProcessor | None, parent: Context, attrs: bool) -> float:
        start_span, clock = tracer.start_span, time.thread_time_ns
        calls = (processor.on_start, processor._on_ending, processor.on_end) if processor else None
        begin = clock()
        for i in range(n):
            span = start_span("span", context=parent)
            if calls:
                calls[0](span, None)
            if attrs:
                span.set_attribute("item", i)
                span.set_attribute("http.route", "/items")
            span.end()
            readable = span._readable_span()  # what the SDK hands on_end
            if calls:
                calls[1](span)
                calls[2](readable)
        return clock() - begin

    root = tracer.start_span("root", kind=trace.SpanKind.SERVER)
    child_of_root = trace.set_span_in_context(root)
    cases = (
        ("child span", child_of_root, False, on),
        ("child, 2 attrs", child_of_root, True, on),
        ("local root", Context(), False, on),
        ("  roots off", Context(), False, no_roots),
    )
    print(f"the processor's own calls, made directly ({batches} batches of {n} alternated):")
    for what, parent, attrs, processor in cases:
        added = []
        for i in range(batches):
            if i % 2 == 0:  # which goes first alternates
                plain_ns = batch_ns(None, parent, attrs)
                ours_ns = batch_ns(processor, parent, attrs)
            else:
                ours_ns = batch_ns(processor, parent, attrs)
                plain_ns = batch_ns(None, parent, attrs)
            added.append((ours_ns - plain_ns) / n)
            if i % 10 == 9:
                processor.take_rows()
        print(f"  {what:14s} {statistics.median(added):6.0f} ns a span")
    root.end()


def take_rows_cost(rounds: int, n: int = 8192) -> None:
    """What handing finished spans to the store costs spanprof's exporter thread, under
    the GIL: ``take_rows()`` of ``n`` spans (one attribute each), then the young
    collections the application's allocations would run while those rows wait."""
    provider = TracerProvider()
    processor = SpanprofProcessor(max_rows=n)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    root = tracer.start_span("root", kind=trace.SpanKind.SERVER)
    parent = trace.set_span_in_context(root)
    per_row = []
    for _ in range(rounds):
        for i in range(n):
            span = tracer.start_span("span", context=parent)
            span.set_attribute("item", i)
            span.end()
        start = time.thread_time_ns()
        rows = processor.take_rows()
        gc.collect(0)
        gc.collect(1)
        per_row.append((time.thread_time_ns() - start) / len(rows))
        del rows
    root.end()
    print(
        f"take_rows() + young collections with the rows alive: "
        f"{statistics.median(per_row):.0f} ns a row"
    )


def context_calls(rounds: int, n: int = 100_000) -> None:
    from opentelemetry import context as otel_context  # noqa: PLC0415

    from spanprof._context import RetainingContext  # noqa: PLC0415

    otel = otel_context._RUNTIME_CONTEXT
    ours = RetainingContext(otel._current_context, otel)  # type: ignore[attr-defined]
    values = [Context({"k": i}) for i in range(100)]

    def ns_per_call(runtime: object) -> float:
        otel_context._RUNTIME_CONTEXT = runtime  # type: ignore[assignment]
        start = time.thread_time_ns()
        for i in range(n):
            token = otel_context.attach(values[i % 100])
            otel_context.get_current()
            otel_context.detach(token)
        return (time.thread_time_ns() - start) / n

    try:
        base, mine = alternated(rounds, lambda: ns_per_call(otel), lambda: ns_per_call(ours))
    finally:
        otel_context._RUNTIME_CONTEXT = otel
    print(
        f"context attach + get_current + detach: OTel's runtime {statistics.median(base):.0f} ns,"
        f" spanprof's {statistics.median(mine):.0f} ns"
    )


def request_us(tracer: trace.Tracer, n: int) -> float:
    """CPU per span of requests made of a root and one child, as current spans."""
    start = time.thread_time_ns()
    for _ in range(n // 2):
        with tracer.start_as_current_span("GET /x", kind=trace.SpanKind.SERVER):
            with tracer.start_as_current_span("child"):
                pass
    return (time.thread_time_ns() - start) / n / 1000


def whole_path(spans: int, rounds: int) -> None:
    import spanprof  # noqa: PLC0415 (only this part needs it)

    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("bench")
    request_us(tracer, 1000)
    with tempfile.TemporaryDirectory(prefix="spanprof-bench-") as out:

        def under_spanprof() -> float:
            spanprof.start(output_dir=out, interval=1.0)  # sampling is not measured here
            try:
                return request_us(tracer, spans)
            finally:
                spanprof.stop()

        base, ours = alternated(rounds, lambda: request_us(tracer, spans), under_spanprof)
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    b, o = statistics.median(base), statistics.median(ours)
    print(
        f"whole span path (root + child, current spans): SDK alone {b:6.2f} µs, under spanprof"
        f" {o:6.2f} µs (+{o - b:.2f} µs) per span, median paired ratio"
        f" {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
