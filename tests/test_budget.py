"""The CPU budget logic, driven with made-up clocks."""

from __future__ import annotations

import pytest

from spanprof.budget import CpuBudget


def feed(budget: CpuBudget, usage: float, seconds: int, start: tuple[float, float]) -> tuple:
    """``seconds`` one-second periods at ``usage`` (fraction of a core) of sampler CPU."""
    wall, cpu = start
    changes = []
    for _ in range(seconds):
        wall += 1.0
        cpu += usage
        new = budget.update(wall, cpu)
        if new is not None:
            changes.append(new)
    return (wall, cpu), changes


def test_under_budget_nothing_changes() -> None:
    budget = CpuBudget(0.01, 0.01)
    budget.update(0.0, 0.0)
    _, changes = feed(budget, 0.007, 10, (0.0, 0.0))
    assert changes == []
    assert budget.interval == 0.01


def test_over_budget_slows_down_in_proportion_until_within() -> None:
    budget = CpuBudget(0.01, 0.01)
    budget.update(0.0, 0.0)
    # at 2% of a core at 100 Hz, the cost is 0.02 / rate: 0.0002 per tick-per-second
    wall, cpu = 0.0, 0.0
    for _ in range(10):
        rate = 1 / budget.interval
        (wall, cpu), _ = feed(budget, 0.0002 * rate, 1, (wall, cpu))
    assert budget.interval == pytest.approx(0.022, rel=0.1)  # 2x cost -> ~2.2x interval
    assert 0.0002 / budget.interval <= 0.01  # within budget now


def test_the_floor_rate_holds_whatever_the_cost() -> None:
    budget = CpuBudget(0.01, 0.01)
    budget.update(0.0, 0.0)
    _, changes = feed(budget, 0.5, 10, (0.0, 0.0))
    assert budget.interval == 0.1  # 10 Hz floor
    assert changes[-1] == 0.1


def test_speeds_back_up_when_the_load_goes_away() -> None:
    budget = CpuBudget(0.01, 0.01)
    budget.update(0.0, 0.0)
    state, _ = feed(budget, 0.05, 5, (0.0, 0.0))
    assert budget.interval > 0.05
    feed(budget, 0.0005, 10, state)
    assert budget.interval == 0.01  # back at the ceiling rate, never beyond


def test_decisions_wait_for_a_full_period() -> None:
    budget = CpuBudget(0.01, 0.01, period=1.0)
    assert budget.update(0.0, 0.0) is None
    assert budget.update(0.5, 0.5) is None  # half a period: no decision yet
    assert budget.update(1.0, 0.5) is not None


def test_the_first_decision_may_come_sooner() -> None:
    """Start-up runs at the ceiling rate: a profiler must not linger over its budget."""
    budget = CpuBudget(0.01, 0.01, period=1.0, first_period=0.5)
    budget.update(0.0, 0.0)
    assert budget.update(0.25, 0.005) is None  # not even the first period yet
    assert budget.update(0.5, 0.01) == pytest.approx(0.01 * 1.1 * 2)  # 2% of a core
    assert budget.update(1.0, 0.015) is None  # then whole periods
    assert budget.update(1.5, 0.045) is not None  # 3% of a core over that period
