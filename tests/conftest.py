"""Suite-wide guarantees: no test leaves a spanprof thread or a running profiler behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import spanprof


def _spanprof_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("spanprof-")]


@pytest.fixture(autouse=True)
def no_profiler_left_behind() -> Iterator[None]:
    assert _spanprof_threads() == [], "a previous test leaked spanprof threads"
    yield
    leaked = _spanprof_threads()
    running = spanprof.active()
    spanprof.stop()  # clean up for the next test before failing this one
    assert leaked == [], f"spanprof threads left alive: {leaked}"
    assert running is None, "a profiler was left running"
