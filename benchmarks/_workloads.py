"""Shared by the accuracy benchmarks: run a test workload under ``spanprof run``."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from spanprof._proto.profile_pb2 import Profile

WORKLOADS = Path(__file__).resolve().parents[1] / "tests" / "workloads"

# (functions in the stack, string labels, cpu ns) of one pprof sample
Sample = tuple[set[str], dict[str, str], int]


def record(script: str, args: list[str], *flags: str) -> tuple[list[Sample], dict]:
    """Profile a workload with ``flags``; its samples and the ground truth it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out, truth = Path(tmp) / "out", Path(tmp) / "truth.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPANPROF_", "OTEL_"))}
        env["SPANPROF_TEST_TRUTH"] = str(truth)
        command = [
            sys.executable,
            "-m",
            "spanprof",
            "run",
            "-o",
            str(out),
            *flags,
            str(WORKLOADS / script),
            *args,
        ]
        subprocess.run(command, env=env, check=True, capture_output=True)
        return _samples(out), json.loads(truth.read_text())


def _samples(directory: Path) -> list[Sample]:
    out = []
    for path in directory.glob("*.pprof"):
        prof = Profile.FromString(gzip.decompress(path.read_bytes()))
        st = prof.string_table
        funcs = {f.id: st[f.name] for f in prof.function}
        locs = {loc.id: funcs[loc.line[0].function_id] for loc in prof.location}
        cpu = [st[t.type] for t in prof.sample_type].index("cpu")
        for s in prof.sample:
            labels = {st[lb.key]: st[lb.str] for lb in s.label if lb.str}
            out.append(({locs[i] for i in s.location_id}, labels, s.value[cpu]))
    return out
