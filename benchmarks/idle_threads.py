"""The whole profiler's own CPU with many idle threads, at default settings.

Starts N parked threads (default 512) whose stacks are 30 frames deep, starts
spanprof with its defaults (100 Hz ceiling, 1% CPU budget), lets the budget
settle, then measures for a while the CPU of every thread of the process except
the parked ones and this (sleeping) main thread: the ticker, the resolver, the
exporter. Prints it as % of one core, with the interval the budget chose.
Then, as a control measured in the same run, what a thread that only wakes up
at the same rate (and does nothing) costs on this machine: on a shared VM an
idle process's wake-ups cost far more CPU than their work (each wakes a
halted virtual CPU whose caches other tenants used meanwhile).

    python benchmarks/idle_threads.py [--threads 512] [--seconds 10] [--settle 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import spanprof
from spanprof import _sampler


def park(stop: threading.Event, depth: int) -> None:
    if depth:
        park(stop, depth - 1)
    else:
        stop.wait()


def others_cpu_ns(exclude: set[int]) -> int:
    total = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid in exclude:
            continue
        try:
            total += _sampler.thread_cpu_ns(tid)
        except OSError:
            pass  # exited meanwhile
    return total


def wake_only(rate: float, seconds: float) -> float:
    """CPU (% of one core) of a thread that wakes ``rate`` times a second, doing nothing."""
    result: list[float] = []

    def run() -> None:
        start_cpu, start = time.thread_time_ns(), time.monotonic()
        due = start
        while time.monotonic() - start < seconds:
            due += 1 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        result.append(100 * (time.thread_time_ns() - start_cpu) / 1e9 / (time.monotonic() - start))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0)
    opts = parser.parse_args()
    stop = threading.Event()
    threads = [
        threading.Thread(target=park, args=(stop, 29), daemon=True) for _ in range(opts.threads)
    ]
    for t in threads:
        t.start()
    exclude = {t.native_id for t in threads} | {threading.get_native_id()}
    with tempfile.TemporaryDirectory() as out:
        profiler = spanprof.start(output_dir=out)
        time.sleep(opts.settle)
        cpu0, t0, ticks0 = others_cpu_ns(exclude), time.monotonic_ns(), profiler.stats()["ticks"]
        time.sleep(opts.seconds)
        cpu1, t1, stats = others_cpu_ns(exclude), time.monotonic_ns(), profiler.stats()
        spanprof.stop()
    stop.set()
    share = 100 * (cpu1 - cpu0) / (t1 - t0)
    rate = (stats["ticks"] - ticks0) / ((t1 - t0) / 1e9)
    print(
        f"python {sys.version.split()[0]}, {opts.threads} idle threads x 30 frames, "
        f"budget {profiler.config.cpu_budget:g}% of a core"
    )
    print(
        f"sampler CPU: {share:.2f}% of one core, {rate:.0f} ticks/s "
        f"(interval settled at {stats['interval'] * 1000:.1f} ms)"
    )
    if rate <= 0:
        print("control: not measured (no tick counted)")
        return 1
    control = wake_only(rate, opts.seconds)
    print(f"control: a thread that only wakes {rate:.0f} times a second: {control:.2f}% of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
