"""Ground truth written by workloads (CPU measured inside them) for the tests to compare."""

from __future__ import annotations

import json
import os


def write(truth: dict[str, object]) -> None:
    path = os.environ.get("SPANPROF_TEST_TRUTH")
    if path:
        with open(path, "w") as f:
            json.dump(truth, f)
