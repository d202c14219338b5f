"""Which part of spanprof costs the application what, on the overhead workload.

Runs ``benchmarks/workloads/overhead_work.py`` in fresh processes, with spanprof
started in-process in several configurations, variants in alternation, and prints
per variant the medians of: wall time, process CPU, spanprof's own threads' CPU
(exporter, resolver, ticker: read from their CPU clocks) and the application's
CPU (process CPU minus spanprof's threads). The variants take spanprof apart:

- ``plain``: no spanprof
- ``full``: spanprof at default settings (as under ``spanprof run``)
- ``sampling``: the sampler only (no span processors, no context hook)
- ``tracing``: span processors, context hook and exporter, no sampler
- ``timers``: ``cpu_timers=True`` (per-thread perf-event CPU timers instead of
  the ticker's signals)
- ``gil-only``: ``signal=off`` (every capture under the GIL, no signal)
- ``wakeup``: no spanprof; *another process* sleeps to a 10 ms schedule and
  does nothing else while the workload runs: what waking up 100 times a second
  costs the application on this machine, whoever wakes (the floor of any
  100 Hz sampler)

    python benchmarks/overhead_parts.py [--rounds 8] [--variants plain,full,...]

A script that prints figures, not a test. The machine's noise (a few % between
processes) is larger than some differences: read medians over many rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "overhead_work.py"
VARIANTS = ["plain", "full", "sampling", "tracing", "timers", "gil-only", "wakeup"]


def child(variant: str, out: str) -> None:
    """Run the workload in this process under ``variant``; print its figures."""
    import builtins
    import contextvars

    sys.argv = [str(WORKLOAD)]
    profiler = None
    if variant not in ("plain", "wakeup"):
        import spanprof
        from spanprof import sampler

        kwargs: dict[str, object] = {}
        if variant == "sampling":

            class NoLinker:
                var: contextvars.ContextVar[object] = contextvars.ContextVar("unused")
                value_type = None

                def link(self, value: object) -> None:
                    return None

                def clear(self) -> None:
                    pass

            kwargs["linker"] = NoLinker()
        elif variant == "tracing":
            sampler.Sampler.start = lambda self, window: None  # type: ignore[method-assign]
            sampler.Sampler.stop = lambda self, timeout=5.0: None  # type: ignore[method-assign]
        elif variant == "timers":
            kwargs["cpu_timers"] = True
        elif variant == "gil-only":
            kwargs["signal"] = "off"
        profiler = spanprof.start(output_dir=out, **kwargs)

    real_print = builtins.print

    def report(*args: object, **kw: object) -> None:
        # the workload prints one JSON line at its end: add our threads' CPU to it
        if args and isinstance(args[0], str) and args[0].startswith('{"wall_s"'):
            figures = json.loads(args[0])
            figures["ours_s"] = own_cpu(profiler) / 1e9
            args = (json.dumps(figures),)
        real_print(*args, **kw)  # type: ignore[call-overload]

    builtins.print = report
    runpy.run_path(str(WORKLOAD), run_name="__main__")


def own_cpu(profiler: object) -> int:
    if profiler is None:
        return 0
    from spanprof import _sampler

    total = 0
    for t in threading.enumerate():
        if t.name.startswith("spanprof") and t.native_id:
            total += _sampler.thread_cpu_ns(t.native_id)
    native = getattr(profiler, "_sampler", None)
    ticker = native._native.ticker_native_id() if native is not None else 0
    if ticker:
        total += _sampler.thread_cpu_ns(ticker)
    return total


WAKER = """
import time
next_ = time.monotonic()
while True:
    next_ += 0.010
    time.sleep(max(0.0, next_ - time.monotonic()))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.out)
        return 0
    variants = opts.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown or variants[0] != "plain":
        parser.error(f"variants are {', '.join(VARIANTS)}, starting with plain")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {opts.rounds} rounds")
    for r in range(opts.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            waker = None
            if variant == "wakeup":
                waker = subprocess.Popen([sys.executable, "-c", WAKER])
            try:
                with tempfile.TemporaryDirectory(prefix="spanprof-parts-") as out:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", variant, "--out", out],
                        capture_output=True,
                        text=True,
                    )
            finally:
                if waker is not None:
                    waker.kill()
                    waker.wait()
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"wall_s"')]
            if proc.returncode != 0 or len(lines) != 1:
                print(f"{variant} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[variant].append(json.loads(lines[0]))
    base = results["plain"]
    print(
        f"{'variant':9s} {'wall s':>7s} {'vs plain':>9s} {'app CPU s':>10s} {'vs plain':>9s}"
        f" {'spanprof threads':>17s}"
    )
    for variant in variants:
        runs = results[variant]
        wall = statistics.median(x["wall_s"] for x in runs)
        app = statistics.median(x["cpu_s"] - x["ours_s"] for x in runs)
        ours = statistics.median(x["ours_s"] for x in runs)
        wall_ratio = statistics.median(
            a["wall_s"] / b["wall_s"] for a, b in zip(runs, base, strict=True)
        )
        app_ratio = statistics.median(
            (a["cpu_s"] - a["ours_s"]) / b["cpu_s"] for a, b in zip(runs, base, strict=True)
        )
        print(
            f"{variant:9s} {wall:7.3f} {wall_ratio - 1:+9.1%} {app:10.3f} {app_ratio - 1:+9.1%}"
            f" {ours * 1000:14.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
