"""What an in-place capture costs the thread it samples, and what CPU timers add
to context switches.

(a) A thread runs a fixed amount of pure-Python work, alternately with no sampler
    and with the native sampler at 1 kHz (CPU timers, and the ticker's signals);
    the extra thread CPU divided by the captures taken is the cost of one
    capture to the sampled thread (interrupt, signal delivery and return, the
    handler). Printed beside it: the sampler's own measure of it
    (``stats()["capture_cost_ns"]``, what the CPU budget counts).
(b) Two threads pass a byte back and forth through pipes (a context switch each
    way), with no sampler, with CPU timers (a perf event per thread, stopped and
    restarted at every switch) and with the ticker: µs per round trip.

    PYTHONPATH=src python benchmarks/capture_cost.py [--rounds 8]

A script that prints figures, not a test. Medians of alternating rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

from spanprof import _sampler


def work(n: int = 2_000_000) -> None:
    x = 0
    for i in range(n):
        x ^= i


def ping_pong(trips: int = 20_000) -> float:
    """µs per round trip between two threads through two pipes."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()

    def echo() -> None:
        for _ in range(trips):
            os.write(b_w, os.read(a_r, 1))

    t = threading.Thread(target=echo)
    t.start()
    start = time.perf_counter()
    for _ in range(trips):
        os.write(a_w, b"x")
        os.read(b_r, 1)
    elapsed = time.perf_counter() - start
    t.join()
    for fd in (a_r, a_w, b_r, b_w):
        os.close(fd)
    return elapsed / trips * 1e6


def under_sampler(mode: str, fn: Callable[[], float], interval: float) -> tuple[float, dict]:
    """fn()'s figure with no sampler, or with the sampler in ``mode``; and its stats."""
    if mode == "none":
        return fn(), {}
    sampler = _sampler.Sampler(signum=_sampler.free_signal(), cpu_timers=mode == "timers")
    loop = threading.Thread(target=sampler.run, args=(lambda samples: None, interval))
    loop.start()
    time.sleep(0.1)  # threads seen, timers armed
    try:
        before = sampler.stats()
        figure = fn()
        after = sampler.stats()
    finally:
        sampler.stop()
        loop.join()
        sampler.close()
    delta = {k: after[k] - before[k] for k in ("in_place", "capture_cost_ns")}
    return figure, delta


def cpu_ms() -> float:
    start = time.thread_time_ns()
    work()
    return (time.thread_time_ns() - start) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    opts = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {opts.rounds} rounds")
    modes = ["none", "timers", "ticker"]
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    captures: dict[str, list[int]] = {m: [] for m in modes}
    measured: list[float] = []
    for _ in range(opts.rounds):
        for mode in modes:
            figure, delta = under_sampler(mode, cpu_ms, 0.001)
            cpu[mode].append(figure)
            if delta:
                captures[mode].append(delta["in_place"])
                if mode == "timers" and delta["in_place"]:
                    measured.append(delta["capture_cost_ns"] / delta["in_place"] / 1000)
    base = statistics.median(cpu["none"])
    print(f"(a) 2M-iteration loop: {base:.1f} ms of thread CPU without a sampler")
    for mode in modes[1:]:
        extra = statistics.median(cpu[mode]) - base
        n = statistics.median(captures[mode])
        print(
            f"    {mode:7s} at 1 kHz: +{extra:.2f} ms for {n:.0f} captures"
            f" = {extra * 1000 / max(n, 1):.0f} µs per capture"
        )
    if measured:
        own = statistics.median(measured)
        print(f"    the sampler's own measure (timers): {own:.0f} µs per capture")
    trips: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(opts.rounds):
        for mode in modes:
            trips[mode].append(under_sampler(mode, ping_pong, 0.01)[0])
    print("(b) pipe ping-pong between two threads, µs per round trip (two context switches):")
    for mode in modes:
        print(f"    {mode:7s} {statistics.median(trips[mode]):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
