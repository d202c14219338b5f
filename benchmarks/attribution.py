"""Span attribution: per scenario, true CPU, attributed CPU, recall and precision.

Runs each scenario of tests/workloads/spans.py under ``spanprof run`` (default
100 Hz unless --interval) and compares every span's CPU in the profile with the
CPU the workload measured inside that span's work (thread CPU clocks):

- attributed: CPU of samples labelled with the span whose stack runs its work;
- recall = attributed / true;
- precision = attributed / all CPU labelled with the span in any span's work.

    python benchmarks/attribution.py [--interval 0.01] [--rounds 1]
"""

from __future__ import annotations

import argparse
import sys

from _workloads import record

SCENARIOS = [
    "pool_submit",
    "worker_child_span",
    "plain_threads",
    "pool_before_span",
    "asyncio_tasks",
    "to_thread_and_executor",
    "own_provider",
    "no_provider",
]


def run(scenario: str, interval: str) -> list[tuple[str, float, float, float, float]]:
    got, truth = record("spans.py", [scenario], "--interval", interval)
    spans = truth["spans"]
    all_work = {f for span in spans.values() for f in span["funcs"]}
    rows = []
    for name, span in spans.items():
        funcs = set(span["funcs"])
        true = sum(truth["cpu"][f] for f in funcs)
        mine = [
            (fs, cpu)
            for fs, labels, cpu in got
            if labels.get("span_id") == span["span_id"] and fs & all_work
        ]
        right = sum(cpu for fs, cpu in mine if fs & funcs) / 1e9
        labelled = sum(cpu for _, cpu in mine) / 1e9
        rows.append((name, true, right, right / true, right / labelled if labelled else 0.0))
    for func, true in truth.get("late", {}).items():
        linked = sum(cpu for fs, labels, cpu in got if func in fs and "span_id" in labels) / 1e9
        rows.append((f"{func} (after span end)", true, linked, float("nan"), float("nan")))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="0.01")
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    print(f"python {sys.version.split()[0]}, interval {opts.interval} s")
    print(
        f"{'scenario':24} {'span':28} {'true s':>7} {'attrib s':>8} {'recall':>7} {'precision':>9}"
    )
    for scenario in SCENARIOS:
        for _ in range(opts.rounds):
            for name, true, right, recall, precision in run(scenario, opts.interval):
                print(
                    f"{scenario:24} {name:28} {true:7.3f} {right:8.3f} {recall:7.1%} "
                    f"{precision:9.1%}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
