"""Keeps the sampler's own CPU under a budget by adapting the sampling interval.

The interval stays between the configured one (the ceiling rate, ~100 Hz by
default) and a floor rate (10 Hz). Fewer samples never lose CPU or wall time:
each sample carries its thread's time since the previous one.
"""

from __future__ import annotations

__all__ = ["CpuBudget"]

FLOOR_INTERVAL = 0.1  # seconds: never sample less often than 10 Hz


class CpuBudget:
    """Decides the next interval from the CPU sampling used over the last period
    (spanprof's threads, and what in-place captures cost the sampled threads).

    ``budget`` is a fraction of one core (0.01 = 1%). Over budget, the interval
    grows in proportion (quickly: a profiler must not linger over its budget);
    well under it, the interval shrinks back towards the ceiling rate, gently.
    """

    def __init__(
        self,
        budget: float,
        interval: float,
        *,
        floor_interval: float = FLOOR_INTERVAL,
        period: float = 1.0,
        first_period: float | None = None,
    ) -> None:
        self.budget = budget
        self.min_interval = interval
        self.max_interval = max(floor_interval, interval)
        self.interval = interval
        self.period = period
        # the first decision may come sooner: start-up runs at the ceiling rate
        self.first_period = period if first_period is None else first_period
        self._decided = False
        self._last: tuple[float, float] | None = None  # (wall s, own CPU s) at last decision

    def update(self, wall_s: float, own_cpu_s: float) -> float | None:
        """Feed the clocks (any origin); returns a new interval when it should change."""
        if self._last is None:
            self._last = (wall_s, own_cpu_s)
            return None
        elapsed = wall_s - self._last[0]
        if elapsed < (self.period if self._decided else self.first_period):
            return None
        usage = max(0.0, own_cpu_s - self._last[1]) / elapsed
        self._last = (wall_s, own_cpu_s)
        self._decided = True
        interval = self.interval
        if usage > self.budget:
            interval *= min(4.0, 1.1 * usage / self.budget)
        elif usage < 0.6 * self.budget:
            # cost scales with the rate: aim at 80% of the budget, at most 2x per step
            interval *= max(0.5, usage / (0.8 * self.budget))
        interval = min(self.max_interval, max(self.min_interval, interval))
        if abs(interval - self.interval) < 1e-9:
            return None
        self.interval = interval
        return interval
