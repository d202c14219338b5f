"""Run a workload of tests/workloads under ``spanprof run`` and read back what it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pprof_utils import ParsedSample, load_dir

WORKLOADS = Path(__file__).resolve().parent / "workloads"


def clean_env() -> dict[str, str]:
    """This environment without SPANPROF_* or OTEL_* settings from the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SPANPROF_", "OTEL_"))}


def record(
    tmp_path: Path, script: str, *args: str, interval: str
) -> tuple[list[ParsedSample], dict]:
    """Profile ``script`` at a fixed rate; return the parsed pprof and the truth it wrote."""
    out, truth = tmp_path / "out", tmp_path / "truth.json"
    env = clean_env() | {"SPANPROF_TEST_TRUTH": str(truth)}
    # --cpu-budget 100 keeps the rate the test asks for: accuracy is measured, not cost
    command = [
        sys.executable,
        "-m",
        "spanprof",
        "run",
        "-o",
        str(out),
        "--interval",
        interval,
        "--cpu-budget",
        "100",
        str(WORKLOADS / script),
        *args,
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return load_dir(out), json.loads(truth.read_text())
