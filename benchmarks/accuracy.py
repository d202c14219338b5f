"""How exactly CPU is attributed: in-place capture vs capture under the GIL only.

Runs the acceptance workloads (tests/workloads) under ``spanprof run`` at the
default 100 Hz, with the real-time signal (in-place capture of running threads)
and with ``--signal off`` (GIL-only capture), and prints each function's true
CPU share (measured inside the workload) next to its sampled share.

    python benchmarks/accuracy.py [--rounds 3] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from _workloads import record

CASES = {
    "asyncio 2/4/6 ms steps": ("asyncio_tasks.py", ["300"]),
    "threads 1:2:3": ("three_threads.py", ["0.5"]),
}


def run_case(script: str, args: list[str], signal: str, interval: str) -> tuple[dict, Counter]:
    samples, truth = record(script, args, "--interval", interval, "--signal", signal)
    real = truth["cpu"]
    cpu: Counter = Counter()
    for functions, _labels, cpu_ns in samples:
        for name in real:
            if name in functions:
                cpu[name] += cpu_ns / 1e9
    return real, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", default="0.01")
    opts = parser.parse_args()
    print(f"python {sys.version.split()[0]}, interval {opts.interval} s, {opts.rounds} rounds")
    print(
        f"{'case':24} {'capture':9} {'function':12} {'true':>6} {'sampled (each round)':>28}"
        f" {'worst rel. err':>15}"
    )
    for case, (script, args) in CASES.items():
        for signal in ("auto", "off"):
            rounds = [run_case(script, args, signal, opts.interval) for _ in range(opts.rounds)]
            for name in rounds[0][0]:
                true = [r[name] / sum(r.values()) for r, _ in rounds]
                got = [c[name] / max(sum(c.values()), 1e-9) for _, c in rounds]
                worst = max(abs(g - t) / t for g, t in zip(got, true, strict=True))
                label = "in place" if signal == "auto" else "GIL only"
                print(
                    f"{case:24} {label:9} {name:12} {sum(true) / len(true):6.3f} "
                    f"{' '.join(f'{g:6.3f}' for g in got):>28} {worst:14.0%}"
                )
            sampled = sum(sum(c.values()) for _, c in rounds)
            real = sum(sum(r.values()) for r, _ in rounds)
            print(f"{'':24} {'':9} {'total CPU sampled / true':30} {sampled / real:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
