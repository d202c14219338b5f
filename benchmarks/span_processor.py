"""What spanprof's SpanProcessor adds to OpenTelemetry span start + end.

Times ``tracer.start_span(...); span.end()`` (a child of a live root, as most
spans are) on an SDK TracerProvider without and with spanprof's
LocalRootProcessor, alternating the two in rounds, and prints the median cost
per span in µs and the ratio.

    python benchmarks/span_processor.py [--spans 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from spanprof.linker import LocalRootProcessor


def per_span_us(tracer: trace.Tracer, n: int) -> float:
    root = tracer.start_span("root", kind=trace.SpanKind.SERVER)
    parent = trace.set_span_in_context(root)
    start = time.perf_counter_ns()
    for _ in range(n):
        tracer.start_span("child", context=parent).end()
    elapsed = time.perf_counter_ns() - start
    root.end()
    return elapsed / n / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    plain = TracerProvider().get_tracer("bench")
    provider = TracerProvider()
    provider.add_span_processor(LocalRootProcessor())
    with_processor = provider.get_tracer("bench")
    per_span_us(plain, 1000), per_span_us(with_processor, 1000)  # warm up
    base, ours = [], []
    for _ in range(opts.rounds):
        base.append(per_span_us(plain, opts.spans))
        ours.append(per_span_us(with_processor, opts.spans))
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    b, o = statistics.median(base), statistics.median(ours)
    print(f"python {sys.version.split()[0]}, {opts.spans} spans x {opts.rounds} rounds")
    print(f"span start+end, SDK alone:            {b:6.2f} µs")
    print(f"span start+end, with LocalRootProcessor: {o:6.2f} µs  (+{o - b:.2f} µs)")
    print(f"median paired ratio: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
