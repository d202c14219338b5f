"""How exactly CPU is attributed: in-place capture vs capture under the GIL only.

Runs the acceptance workloads (tests/workloads) under ``spanprof run`` at the
default 100 Hz, with the real-time signal (in-place capture of running threads)
and with ``--signal off`` (GIL-only capture), and prints each function's true
CPU share (measured inside the workload) next to its sampled share.

    python benchmarks/accuracy.py [--rounds 3] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from spanprof._proto.profile_pb2 import Profile

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "tests" / "workloads"
CASES = {
    "asyncio 2/4/6 ms steps": ("asyncio_tasks.py", ["300"]),
    "threads 1:2:3": ("three_threads.py", ["0.5"]),
}


def cpu_under(directory: Path, names: list[str]) -> Counter:
    cpu: Counter = Counter()
    for path in directory.glob("*.pprof"):
        prof = Profile.FromString(gzip.decompress(path.read_bytes()))
        st = prof.string_table
        funcs = {f.id: st[f.name] for f in prof.function}
        locs = {loc.id: funcs[loc.line[0].function_id] for loc in prof.location}
        cpu_index = [st[t.type] for t in prof.sample_type].index("cpu")
        for sample in prof.sample:
            stack = {locs[i] for i in sample.location_id}
            for name in names:
                if name in stack:
                    cpu[name] += sample.value[cpu_index] / 1e9
    return cpu


def run_case(script: str, args: list[str], signal: str, interval: str) -> tuple[dict, Counter]:
    with tempfile.TemporaryDirectory() as tmp:
        out, truth = Path(tmp) / "out", Path(tmp) / "truth.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPANPROF_")}
        env["SPANPROF_TEST_TRUTH"] = str(truth)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "spanprof",
                "run",
                "-o",
                str(out),
                "--interval",
                interval,
                "--signal",
                signal,
                str(WORKLOADS / script),
                *args,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        real = json.loads(truth.read_text())["cpu"]
        return real, cpu_under(out, list(real))


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
