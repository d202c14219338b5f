"""End to end: what ``spanprof run`` writes matches what the workload really did.

Each workload measures its own CPU per function (ground truth, thread CPU clocks)
and the test compares that with the parsed pprof. Tolerances come from the
acceptance criteria; sampling rate is raised (--interval) so the statistical
error of the asyncio case stays well inside them (see docs/sampler.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import workload_runs
from pprof_utils import ParsedSample


def record(
    tmp_path: Path, script: str, *args: str, interval: str = "0.002"
) -> tuple[list[ParsedSample], dict]:
    return workload_runs.record(tmp_path, script, *args, interval=interval)


def cpu_under(samples: list[ParsedSample], names: list[str]) -> Counter:
    """CPU seconds of the samples whose stack runs through each function."""
    cpu: Counter = Counter()
    for s in samples:
        for name in names:
            if name in s.functions:
                cpu[name] += s.cpu_ns / 1e9
    return cpu


def test_three_threads_cpu_ratio_and_total(tmp_path: Path) -> None:
    samples, truth = record(tmp_path, "three_threads.py", "0.4")
    real = truth["cpu"]
    names = ["burn_one", "burn_two", "burn_three"]
    cpu = cpu_under(samples, names)
    sampled = sum(cpu[n] for n in names)
    assert sampled == pytest.approx(sum(real.values()), rel=0.10)
    for n in names:
        # ratio 1:2:3 within ±15% relative, judged against the true shares
        assert cpu[n] / sampled == pytest.approx(real[n] / sum(real.values()), rel=0.15), cpu
    # every sample of a burner carries its thread's labels
    threads = {s.labels["thread.native_id"] for s in samples if set(names) & set(s.functions)}
    assert len(threads) == 3
    for s in samples:
        assert isinstance(s.labels["thread.id"], int)
        assert isinstance(s.labels["thread.native_id"], int)


def test_deep_recursion_keeps_the_leaf(tmp_path: Path) -> None:
    samples, truth = record(tmp_path, "deep_recursion.py")
    deep = [s for s in samples if s.labels.get("thread.name") == "deep"]
    burning = [s for s in deep if s.functions[0] == "leaf_burner"]
    assert burning, Counter(s.functions[0] for s in deep)
    assert sum(s.cpu_ns for s in burning) / 1e9 == pytest.approx(0.5, rel=0.10)
    for s in burning:
        # cut to the default max depth of 128, leaf side kept, the cut marked
        assert len(s.functions) == 129
        assert s.functions[1:128] == ["descend"] * 127
        assert s.functions[-1] == "<truncated>"


def test_interleaved_asyncio_tasks_get_their_true_share(tmp_path: Path) -> None:
    samples, truth = record(tmp_path, "asyncio_tasks.py", "300")
    real = truth["cpu"]
    cpu = cpu_under(samples, list(real))
    total_real = sum(real.values())
    total_sampled = sum(cpu[n] for n in real)
    shares = {n: round(cpu[n] / total_sampled, 3) for n in real}
    for n in real:
        assert cpu[n] / total_sampled == pytest.approx(real[n] / total_real, rel=0.15), shares
    assert total_sampled == pytest.approx(total_real, rel=0.10)
