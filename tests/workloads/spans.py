"""Span-linking scenarios: CPU work handed to other threads and tasks inside spans.

Usage: spans.py SCENARIO. Every span's work runs in functions unique to it; the
workload measures the CPU they really used (thread CPU clocks) and writes, per
span, its ids, its local root and that ground truth for the test to compare with
the profile.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from truth import write

SCENARIO = sys.argv[1]
UNIT = 0.3  # seconds of CPU per piece of work

spans: dict[str, dict] = {}  # span name -> truth
cpu: dict[str, float] = {}  # work function -> CPU really used
late: dict[str, float] = {}  # work that runs after its span ended
lock = threading.Lock()

if SCENARIO in ("own_provider", "provider_before_start"):
    # The application configures tracing itself (under `spanprof run`: after
    # spanprof started; or before it calls spanprof.start() itself): its
    # exporter must keep receiving every span.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

if SCENARIO == "provider_before_start":
    import os

    import spanprof

    spanprof.start(output_dir=os.environ["SPANPROF_TEST_OUT"], interval=0.005)

tracer = trace.get_tracer("spanprof-tests")


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def measured(fn) -> None:
    """Run ``fn`` (a uniquely named work function) and add its CPU to the truth."""
    start = time.thread_time()
    fn()
    used = time.thread_time() - start
    with lock:
        cpu[fn.__name__] = cpu.get(fn.__name__, 0.0) + used


def record(span, root, *funcs) -> None:
    ctx, root_ctx = span.get_span_context(), root.get_span_context()
    spans[span.name] = {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "local_root_span_id": format(root_ctx.span_id, "016x"),
        "trace_endpoint": root.name,
        "trace_type": root.kind.name.lower(),
        "funcs": [f.__name__ for f in funcs],
    }


# -- work functions (one per span, so a stack tells whose work it is) ----------


def pool_work() -> None:
    spin(UNIT)


def child_work() -> None:
    spin(UNIT)


def target_work() -> None:
    spin(UNIT)


def subclass_work() -> None:
    spin(UNIT)


def submitted_work() -> None:
    spin(UNIT)


def late_work() -> None:
    spin(UNIT)


def step_a() -> None:
    spin(0.02)


def step_b() -> None:
    spin(0.04)


def step_c() -> None:
    spin(0.06)


def to_thread_work() -> None:
    spin(UNIT)


def executor_work() -> None:
    spin(UNIT)


def provider_work() -> None:
    spin(UNIT)


# -- scenarios ------------------------------------------------------------------


def server_span(name: str):
    return tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER)


def pool_submit() -> None:
    with server_span("GET /pool") as root:
        record(root, root, pool_work)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(measured, pool_work) for _ in range(2)]:
                f.result()


def worker_child_span() -> None:
    def task() -> None:
        with tracer.start_as_current_span("child") as child:
            record(child, root, child_work)
            measured(child_work)

    with server_span("GET /child") as root:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(task).result()


class Worker(threading.Thread):
    def run(self) -> None:  # overrides run(): no target
        measured(subclass_work)


def plain_threads() -> None:
    with server_span("GET /threads") as root:
        record(root, root, target_work, subclass_work)
        threads = [threading.Thread(target=measured, args=(target_work,)), Worker()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def pool_before_span() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    pool.submit(time.sleep, 0.01).result()  # workers exist before the span
    go = threading.Event()

    def after_span() -> None:
        go.wait()
        start = time.thread_time()
        late_work()
        late["late_work"] = time.thread_time() - start

    with server_span("GET /prepool") as root:
        record(root, root, submitted_work)
        pool.submit(measured, submitted_work).result()
        pending = pool.submit(after_span)
    go.set()  # the span has ended: this work must not be linked to it
    pending.result()
    pool.shutdown()


def asyncio_tasks() -> None:
    async def task(name: str, step, steps: int) -> None:
        with tracer.start_as_current_span(name) as span:
            record(span, root, step)
            for _ in range(steps):
                measured(step)
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(
            task("task a", step_a, 30), task("task b", step_b, 30), task("task c", step_c, 30)
        )

    with server_span("GET /async") as root:
        asyncio.run(main())


def to_thread_and_executor() -> None:
    async def via_to_thread() -> None:
        with tracer.start_as_current_span("to_thread") as span:
            record(span, root, to_thread_work)
            await asyncio.to_thread(measured, to_thread_work)

    async def via_executor() -> None:
        with tracer.start_as_current_span("executor") as span:
            record(span, root, executor_work)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, measured, executor_work)

    async def main() -> None:
        await asyncio.gather(via_to_thread(), via_executor())

    with server_span("GET /offload") as root:
        asyncio.run(main())


def provider_case() -> None:
    with server_span("GET /provider") as root:
        record(root, root, provider_work)
        t = threading.Thread(target=measured, args=(provider_work,))
        t.start()
        t.join()


def many_tasks() -> None:
    """Waves of short asyncio tasks, each in its own span, interleaving steps.

    Tasks (and their contexts and spans) come and go while samples are being
    taken and resolved, so a context or span seen by the sampler is often gone
    by resolution time: a sample must then get its own task's labels or none,
    never another task's. Each task runs its own copy of the step function
    (same code, its own name), so a stack tells whose step it is.
    """

    def step_named(i: int):
        def step() -> None:
            spin(0.003)

        code = step.__code__.replace(co_name=f"many_step_{i}")
        if sys.version_info >= (3, 11):
            code = code.replace(co_qualname=f"many_step_{i}")
        return type(step)(code, step.__globals__, f"many_step_{i}", None, step.__closure__)

    async def task(i: int) -> None:
        step = step_named(i)
        with tracer.start_as_current_span(f"many {i}") as span:
            record(span, root, step)
            for _ in range(8):
                measured(step)
                await asyncio.sleep(0)

    async def main() -> None:
        for wave in range(10):
            await asyncio.gather(*(task(wave * 12 + k) for k in range(12)))

    with server_span("GET /many") as root:
        asyncio.run(main())


SCENARIOS = {
    "pool_submit": pool_submit,
    "worker_child_span": worker_child_span,
    "plain_threads": plain_threads,
    "pool_before_span": pool_before_span,
    "asyncio_tasks": asyncio_tasks,
    "many_tasks": many_tasks,
    "to_thread_and_executor": to_thread_and_executor,
    "own_provider": provider_case,
    "provider_before_start": provider_case,
    "no_provider": provider_case,
}

SCENARIOS[SCENARIO]()
truth: dict[str, object] = {"spans": spans, "cpu": cpu, "late": late}
if SCENARIO == "provider_before_start":
    spanprof.stop()
if SCENARIO in ("own_provider", "provider_before_start"):
    truth["exported"] = sorted(s.name for s in exporter.get_finished_spans())
write(truth)
