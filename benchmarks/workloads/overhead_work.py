"""A fixed amount of span-instrumented work, for ``benchmarks/overhead.py``.

Part A: ``REQUESTS`` requests, one after another, each in a SERVER span that fans
``ITEMS`` pure-Python CPU work items out to a ``ThreadPoolExecutor(max_workers=8)``,
each item in a child span. Part B: 24 asyncio tasks, each in its own span,
interleaving CPU steps with ``await asyncio.sleep(0)`` and a little 1 ms "I/O"
(``asyncio.sleep(0.001)``, in a child span). The amount of work is fixed, not the
time it takes.

Prints one JSON line, ``{"wall_s": ..., "cpu_s": ...}``: wall time
(``time.perf_counter``) and process CPU (``time.process_time``, which counts every
thread, a profiler's own included) around parts A and B, measured in this process,
so interpreter start-up and exit (and a profiler's final flush) are not counted.

The program is the same under every variant: spans always record. Without an
agent it installs the OpenTelemetry SDK's ``TracerProvider`` (no exporter), as an
instrumented service would; under ``spanprof run`` that provider gets spanprof's
span processor; under ``ddtrace-run`` with ``DD_TRACE_OTEL_ENABLED=true`` ddtrace
has already installed its own provider, which is kept, so the spans are ddtrace's.
Context is handed to pool threads explicitly, so no variant depends on its own
propagation.

    python benchmarks/workloads/overhead_work.py [--scale 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import context, trace

REQUESTS = 40  # part A: requests, one at a time
ITEMS = 16  # part A: work items per request, on 8 threads
ITEM_ROUNDS = 6_000  # part A: mixing rounds per work item
TASKS = 24  # part B: asyncio tasks
STEPS = 40  # part B: CPU steps per task
STEP_ROUNDS = 1_800  # part B: mixing rounds per CPU step
IO_EVERY = 4  # part B: a 1 ms sleep after every 4th step

tracer = trace.get_tracer("spanprof.benchmarks.overhead")


def _mix(x: int, rounds: int) -> int:
    """Pure-Python integer hashing (FNV-1a over the bytes of an LCG stream)."""
    h = 0xCBF29CE484222325
    for _ in range(rounds):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        for shift in (0, 16, 32, 48):
            h = ((h ^ ((x >> shift) & 0xFFFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _digest(seed: int, rounds: int) -> int:
    return _mix(seed, rounds // 2) ^ _mix(seed + 1, rounds - rounds // 2)


def _work_item(parent: context.Context, request: int, item: int, rounds: int) -> int:
    with tracer.start_as_current_span("work_item", context=parent) as span:
        span.set_attribute("item", item)
        return _digest(request * 1000 + item, rounds)


def part_a(pool: ThreadPoolExecutor, requests: int, rounds: int) -> int:
    total = 0
    for request in range(requests):
        with tracer.start_as_current_span("GET /work", kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.route", "/work")
            parent = context.get_current()
            futures = [
                pool.submit(_work_item, parent, request, item, rounds) for item in range(ITEMS)
            ]
            for future in futures:
                total ^= future.result()
    return total


async def _task(index: int, rounds: int) -> int:
    total = 0
    with tracer.start_as_current_span(f"task {index % 4}", kind=trace.SpanKind.SERVER):
        for step in range(STEPS):
            total ^= _digest(index * 1000 + step, rounds)
            await asyncio.sleep(0)
            if step % IO_EVERY == IO_EVERY - 1:
                with tracer.start_as_current_span("io"):
                    await asyncio.sleep(0.001)
    return total


async def part_b(rounds: int) -> int:
    results = await asyncio.gather(*(_task(i, rounds) for i in range(TASKS)))
    total = 0
    for value in results:
        total ^= value
    return total


def _install_provider() -> None:
    provider = trace.get_tracer_provider()
    if not type(provider).__module__.startswith("ddtrace"):
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the CPU work")
    opts = parser.parse_args()
    _install_provider()
    item_rounds = max(1, round(ITEM_ROUNDS * opts.scale))
    step_rounds = max(1, round(STEP_ROUNDS * opts.scale))
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="work") as pool:
        pool.submit(int).result()  # one worker started before timing
        wall0, cpu0 = time.perf_counter(), time.process_time()
        part_a(pool, REQUESTS, item_rounds)
        asyncio.run(part_b(step_rounds))
        wall1, cpu1 = time.perf_counter(), time.process_time()
    result = {"wall_s": round(wall1 - wall0, 6), "cpu_s": round(cpu1 - cpu0, 6)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
