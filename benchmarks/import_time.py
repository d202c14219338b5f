"""Import time of the auto-start path (what every profiled process pays at start).

Under ``spanprof run -- COMMAND`` every Python process imports the bootstrap
``sitecustomize``, which imports spanprof and starts it. Prints the
``python -X importtime`` total of that import (median of --rounds fresh
processes), and the wall time of ``python -c pass`` with and without it.

    python benchmarks/import_time.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from spanprof.cli.run import BOOTSTRAP_DIR


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPANPROF_")}
    with tempfile.TemporaryDirectory() as out:
        auto = dict(
            base,
            SPANPROF_AUTOSTART="1",
            SPANPROF_OUTPUT_DIR=out,
            PYTHONPATH=os.pathsep.join(filter(None, [BOOTSTRAP_DIR, base.get("PYTHONPATH")])),
        )
        imports, plain, started = [], [], []
        for _ in range(opts.rounds):
            _, err = run(auto, "-X", "importtime", "-c", "pass")
            # ours is the outermost sitecustomize (it chains to any other one)
            found = re.findall(r"\|\s+(\d+) \|\s+sitecustomize$", err, re.MULTILINE)
            if not found:
                raise SystemExit("sitecustomize not in the importtime output: is it the bootstrap?")
            imports.append(max(int(us) for us in found) / 1e6)
            plain.append(run(base, "-c", "pass")[0])
            started.append(run(auto, "-c", "pass")[0])
    print(f"python {sys.version.split()[0]}, {opts.rounds} fresh processes each (median)")
    print(
        f"import of the auto-start sitecustomize (spanprof + start): "
        f"{statistics.median(imports):.3f} s"
    )
    print(
        f"python -c pass: {statistics.median(plain):.3f} s plain, "
        f"{statistics.median(started):.3f} s with spanprof auto-start (incl. its exit flush)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
