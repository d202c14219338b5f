"""What the native sampler costs: per snapshot, and as a share of one core at 100 Hz.

(a) Wall time of one synchronous ``Sampler.tick()`` (a snapshot of every other
    thread) with N threads parked at a given stack depth (blocked on an Event,
    so captured under the GIL), and with 8 threads running at that depth
    (burning CPU, so captured in place by the signal handler). Median of 5
    batches; the calling thread's CPU per tick is shown beside it.
(b) CPU used by the sampler's own threads (the resolver running ``run()`` and
    the native ticker) at 100 Hz over --seconds, read from each thread's CPU
    clock, as % of one core. Time spent in the signal handler on the sampled
    threads is charged to those threads and is not included.

    PYTHONPATH=src python benchmarks/sampler_cost.py [--threads 1,8,32,128]
        [--depth 30] [--seconds 5] [--no-signal]

A script that prints figures, not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable

from spanprof import _sampler

BATCHES = 5
BATCH_SECONDS = 0.2
RUN_HZ = 100
RUNNING_THREADS = 8
WAIT_FRAMES = 2  # Event.wait -> Condition.wait: Python frames a parked thread adds


def native_ids() -> dict[int, int]:
    return {t.ident: t.native_id for t in threading.enumerate() if t.ident is not None}


def own_depth() -> int:
    """Frames on the stack of a fresh thread's target (threading's own frames + target)."""
    seen: list[int] = []

    def target() -> None:
        frame, n = sys._getframe(), 0
        while frame is not None:
            frame, n = frame.f_back, n + 1
        seen.append(n)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return seen[0]


class Workload:
    """``count`` threads whose stacks are ``depth`` frames deep, parked or running."""

    def __init__(self, count: int, depth: int, running: bool) -> None:
        self.stop = threading.Event()
        self.ready = threading.Barrier(count + 1)
        self.running = running
        # recursion below the target, so that the sampled stack is ``depth`` frames
        self.extra = max(0, depth - own_depth() - (0 if running else WAIT_FRAMES))
        self.threads = [
            threading.Thread(target=self._descend, args=(self.extra,), daemon=True)
            for _ in range(count)
        ]

    def _descend(self, n: int) -> None:
        if n > 0:
            self._descend(n - 1)
            return
        self.ready.wait()
        if not self.running:
            self.stop.wait()
            return
        x = 0
        while not self.stop.is_set():
            for i in range(2000):
                x += i

    def __enter__(self) -> Workload:
        for t in self.threads:
            t.start()
        self.ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def tids(self) -> set[int]:
        return {t.native_id for t in self.threads if t.native_id is not None}


def tick_cost(sampler: _sampler.Sampler, workload: Workload) -> dict[str, float]:
    """Median over batches of the wall and calling-thread CPU time of one tick()."""
    tids = workload.tids()
    ids = native_ids()
    samples = sampler.tick(None, ids)  # first tick seeds the sampler's thread table
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < BATCH_SECONDS / 4:  # calibrate
        samples = sampler.tick(None, ids)
        calls += 1
    per_batch = max(3, int(calls * BATCH_SECONDS / (time.perf_counter() - t0)))
    before = sampler.stats()
    walls, cpus, depths = [], [], []
    for _ in range(BATCHES):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(per_batch):
            samples = sampler.tick(None, ids)
        w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        walls.append((w1 - w0) / per_batch / 1000)
        cpus.append((c1 - c0) / per_batch / 1000)
        depths += [len(s[4]) // 8 for s in samples if s[1] in tids]
    after = sampler.stats()
    captured = (after["in_place"] - before["in_place"]) + (
        after["gil_captures"] - before["gil_captures"]
    )
    return {
        "wall_us": statistics.median(walls),
        "cpu_us": statistics.median(cpus),
        "frames": statistics.median(depths) if depths else 0,
        "in_place": 100 * (after["in_place"] - before["in_place"]) / max(captured, 1),
        "calls": per_batch * BATCHES,
    }


def task_cpu_ns(exclude: set[int]) -> dict[int, int]:
    """CPU time of every thread of this process not in ``exclude``, by native id."""
    out = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid in exclude:
            continue
        try:
            out[tid] = _sampler.thread_cpu_ns(tid)
        except OSError:
            pass  # exited meanwhile
    return out


def run_share(sampler: _sampler.Sampler, workload: Workload, seconds: float) -> dict[str, float]:
    """% of one core used by every thread except the workload's, while run() samples."""
    got = [0]

    def callback(samples: list[tuple]) -> None:
        got[0] += len(samples)

    ids_fn: Callable[[], dict[int, int]] | None = native_ids if sys.version_info < (3, 11) else None
    runner = threading.Thread(target=sampler.run, args=(callback, 1 / RUN_HZ, None, ids_fn))
    runner.start()
    time.sleep(0.5)  # warm up: code table filled, ticker started
    exclude = workload.tids()
    stats0, cpu0, t0 = sampler.stats(), task_cpu_ns(exclude), time.perf_counter_ns()
    time.sleep(seconds)
    cpu1, t1, stats1 = task_cpu_ns(exclude), time.perf_counter_ns(), sampler.stats()
    sampler.stop()
    runner.join()
    used = sum(cpu1[tid] - cpu0.get(tid, 0) for tid in cpu1)
    elapsed = (t1 - t0) / 1e9
    ticks = stats1["ticks"] - stats0["ticks"]
    captured = (stats1["in_place"] - stats0["in_place"]) + (
        stats1["gil_captures"] - stats0["gil_captures"]
    )
    return {
        "share": 100 * used / (t1 - t0),
        "hz": ticks / elapsed,
        "us_per_tick": used / 1000 / max(ticks, 1),
        "in_place": 100 * (stats1["in_place"] - stats0["in_place"]) / max(captured, 1),
        "timeouts": stats1["timeouts"] - stats0["timeouts"],
        "dropped": stats1["dropped_ticks"] - stats0["dropped_ticks"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,8,32,128,512", help="parked thread counts")
    parser.add_argument("--depth", type=int, default=30, help="Python frames per stack")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each (b) run")
    parser.add_argument(
        "--no-signal", action="store_true", help="signum=0: capture every thread under the GIL"
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",") if n.strip()]

    signum = 0 if args.no_signal else _sampler.free_signal()
    print(f"Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPUs")
    print(
        f"signal {signum or 'none: every thread captured under the GIL'}, "
        f"stack depth {args.depth}, switch interval {sys.getswitchinterval() * 1000:g} ms"
    )

    print("\n(a) one snapshot: tick() of every other thread (median of 5 batches)")
    print(
        f"{'threads':>8} {'state':>8} {'frames':>7} {'wall µs':>9} {'µs/thread':>10} "
        f"{'cpu µs':>8} {'in place':>9} {'calls':>6}"
    )
    cases = [(n, False) for n in counts] + [(RUNNING_THREADS, True)]
    for count, running in cases:
        sampler = _sampler.Sampler(max_depth=128, signum=signum)
        try:
            with Workload(count, args.depth, running) as workload:
                r = tick_cost(sampler, workload)
        finally:
            sampler.close()
        state = "running" if running else "parked"
        print(
            f"{count:>8} {state:>8} {r['frames']:>7.0f} {r['wall_us']:>9.1f} "
            f"{r['wall_us'] / count:>10.2f} {r['cpu_us']:>8.1f} {r['in_place']:>8.0f}% "
            f"{r['calls']:>6}"
        )

    print(f"\n(b) the sampler's own CPU at {RUN_HZ} Hz over {args.seconds:g} s (% of one core)")
    print(
        f"{'threads':>8} {'state':>8} {'cpu %':>7} {'ticks/s':>8} {'µs/tick':>8} "
        f"{'in place':>9} {'timeouts':>9} {'dropped':>8}"
    )
    for running in (False, True):
        sampler = _sampler.Sampler(max_depth=128, signum=signum)
        try:
            with Workload(RUNNING_THREADS, args.depth, running) as workload:
                r = run_share(sampler, workload, args.seconds)
        finally:
            sampler.close()
        state = "running" if running else "parked"
        print(
            f"{RUNNING_THREADS:>8} {state:>8} {r['share']:>6.2f}% {r['hz']:>8.1f} "
            f"{r['us_per_tick']:>8.1f} {r['in_place']:>8.0f}% {r['timeouts']:>9} "
            f"{r['dropped']:>8}"
        )
    print(
        "\nframes: median captured stack depth; in place: % of thread samples captured by "
        "the signal handler\n(the rest under the GIL). wall µs with running threads includes "
        "waiting for the GIL to resolve\nthe tick; cpu µs is the calling thread's CPU only "
        "(signal handlers run on the sampled threads)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
