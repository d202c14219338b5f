"""What a profiler costs a span-instrumented program: spanprof next to ddtrace's.

Runs ``benchmarks/workloads/overhead_work.py`` (a fixed amount of work: requests
fanned out to an 8-thread pool, then 24 asyncio tasks, every piece in an
OpenTelemetry span) as separate processes, in alternation: each round runs every
variant once, in an order that rotates from round to round.

- ``plain``: no profiler (spans go to the OpenTelemetry SDK, no exporter)
- ``spanprof``: ``python -m spanprof run -o TMP`` at default settings
- ``spanprof@50Hz`` (one per ``--ceilings`` rate): the same with the sampling
  rate's ceiling lowered (``SPANPROF_INTERVAL``), to see what the rate costs
- ``dd-trace``: ``ddtrace-run`` with ddtrace's OpenTelemetry support, tracing only
- ``dd-prof``: the same plus ddtrace's stack profiler (lock, memory, heap and
  exception profilers off)

The ddtrace variants run only when ddtrace is importable by ``--python``
(``pip install ".[bench]"``). Nothing leaves the machine: the agent URL is a closed
port on loopback and ddtrace's profiles are written to a temporary file.

Each run reports wall time and process CPU (every thread, the profiler's own
included) around the work, measured inside the process. The machine may be noisy,
so the result is the median over rounds of *paired* ratios (a variant over its
baseline in the same round), with their min-max spread and a 95% bootstrap
interval of the median. The checks also say how often each profiler woke up to
sample, per second of the work (spanprof's ticks, from its profiles' sample
counts; ddtrace's sampling events): on a small VM the wake-ups are most of
what a sampler costs, so compare costs at the rates they were paid for.

    python benchmarks/overhead.py [--rounds 7] [--python PATH] [--scale 1.0] [--ceilings 50,25]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "overhead_work.py"

# ddtrace 4.16 settings (ddtrace/internal/settings/profiling.py, _agent.py, _config.py).
DD_COMMON = {
    "DD_TRACE_ENABLED": "true",
    "DD_TRACE_OTEL_ENABLED": "true",  # OTel spans become ddtrace spans
    "DD_TRACE_AGENT_URL": "http://127.0.0.1:9",  # no agent here: a closed loopback port
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
}
DD_PROFILER = {
    "DD_PROFILING_ENABLED": "true",
    "DD_PROFILING_STACK_ENABLED": "true",
    "DD_PROFILING_LOCK_ENABLED": "false",
    "DD_PROFILING_MEMORY_ENABLED": "false",
    "DD_PROFILING_HEAP_ENABLED": "false",
    "DD_PROFILING_EXCEPTION_ENABLED": "false",  # Python 3.12+ only; off to keep stack only
}
DD_RATIOS = [  # (variant, baseline, why)
    ("dd-prof", "dd-trace", "ddtrace stack profiler's cost"),
    ("dd-prof", "plain", "context: ddtrace tracing + profiler"),
    ("dd-trace", "plain", "context: ddtrace tracing"),
]


def ceiling_hz(name: str) -> int | None:
    """The ceiling rate a ``spanprof@<N>Hz`` variant sets; None for the default."""
    return int(name[len("spanprof@") : -len("Hz")]) if name.startswith("spanprof@") else None


def base_environ() -> dict[str, str]:
    """This environment without any spanprof or ddtrace settings of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SPANPROF_", "DD_"))}


def probe(python: str, code: str) -> str | None:
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def spanprof_check(out: Path) -> dict:
    """Files, samples and span-linked samples spanprof wrote (fails if none)."""
    files = sorted(out.glob("*.pprof"))
    if not files or not (out / "spanprof.db").exists():
        raise RuntimeError(f"spanprof wrote no profile into {out}")
    try:
        from spanprof._proto.profile_pb2 import Profile
    except ImportError:  # this Python lacks spanprof: count files only
        return {"files": len(files)}
    samples = linked = 0
    ticks: Counter = Counter()  # per thread: the ticks its samples stand for
    for path in files:
        prof = Profile.FromString(gzip.decompress(path.read_bytes()))
        strings = list(prof.string_table)
        span_key = strings.index("span_id") if "span_id" in strings else -1
        tid_key = strings.index("thread.native_id") if "thread.native_id" in strings else -1
        samples += len(prof.sample)
        for s in prof.sample:
            linked += any(lb.key == span_key for lb in s.label)
            tid = next((lb.num for lb in s.label if lb.key == tid_key), None)
            ticks[tid] += s.value[0]  # value 0 is the sample count (pprof.py's SAMPLE_TYPES)
    if not samples:
        raise RuntimeError(f"spanprof's profiles in {out} hold no samples")
    # every tick samples every thread: the longest-lived thread saw them all
    return {"files": len(files), "samples": samples, "linked": linked, "wakes": max(ticks.values())}


def ddtrace_check(prefix: Path) -> dict:
    """ddtrace's own record of its profiler: settings in force and samples taken.

    With DD_PROFILING_OUTPUT_PPROF=PREFIX, each flush writes PREFIX.<pid>.<n>.pprof
    with PREFIX.<pid>.<n>.info.json (the profiler's settings) and
    .internal_metadata.json (sample_count, sampling_interval_us, ...).
    """
    metas = sorted(glob.glob(f"{prefix}.*.internal_metadata.json"))
    infos = sorted(glob.glob(f"{prefix}.*.info.json"))
    if not metas or not infos:
        raise RuntimeError("ddtrace's profiler wrote no profile: it did not run")
    settings = json.loads(Path(infos[0]).read_text())["profiler"]["settings"]
    wanted = {"enabled": True, "stack.enabled": True, "lock.enabled": False}
    wanted.update({"memory.enabled": False, "heap.enabled": False, "exception.enabled": False})
    wrong = {k: settings.get(k) for k, v in wanted.items() if settings.get(k) != v}
    if wrong:
        raise RuntimeError(f"ddtrace profiler settings not as intended: {wrong}")
    meta = [json.loads(Path(m).read_text()) for m in metas]
    samples = sum(m.get("sample_count", 0) for m in meta)
    if not samples:
        raise RuntimeError("ddtrace's stack profiler took no samples")
    return {
        "files": len(metas),
        "samples": samples,
        "wakes": sum(m.get("sampling_event_count", 0) for m in meta),  # one pass per wake-up
        "interval_ms": meta[-1].get("sampling_interval_us", 0) / 1000,
    }


def run_variant(name: str, python: str, scale: float) -> tuple[dict, dict]:
    """One run: the workload's {"wall_s", "cpu_s"} and what the profiler check found."""
    env = base_environ()
    workload = [str(WORKLOAD), "--scale", str(scale)]
    with tempfile.TemporaryDirectory(prefix="spanprof-overhead-") as tmp:
        if name == "plain":
            cmd = [python, *workload]
        elif name.startswith("spanprof"):
            hz = ceiling_hz(name)
            if hz is not None:
                env["SPANPROF_INTERVAL"] = repr(1 / hz)
            cmd = [python, "-m", "spanprof", "run", "-o", str(Path(tmp) / "out"), *workload]
        else:
            env.update(DD_COMMON)
            if name == "dd-prof":
                env.update(DD_PROFILER)
                env["DD_PROFILING_OUTPUT_PPROF"] = str(Path(tmp) / "dd")  # not uploaded
            else:
                env["DD_PROFILING_ENABLED"] = "false"
            cmd = [python, "-m", "ddtrace.commands.ddtrace_run", python, *workload]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
            )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"wall_s"')]
        if len(lines) != 1:
            raise RuntimeError(f"{name}: expected one JSON line, got:\n{proc.stdout[-2000:]}")
        check = {}
        if name.startswith("spanprof"):
            check = spanprof_check(Path(tmp) / "out")
        elif name == "dd-prof":
            check = ddtrace_check(Path(tmp) / "dd")
        result = json.loads(lines[0])
        if "wakes" in check:  # per second of the work (wake-ups at start and exit count too)
            check["wakes_per_s"] = check["wakes"] / result["wall_s"]
        return result, check


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def between(values) -> str:
    values = list(values)
    return f"{min(values):g}-{max(values):g}"


def rate_range(values) -> str:
    values = list(values)
    return f"{min(values):.0f}-{max(values):.0f} (median {statistics.median(values):.0f})"


def median_interval(values: list[float], draws: int = 4000) -> tuple[float, float]:
    """95% bootstrap interval of the median (resampling rounds; fixed seed)."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return meds[int(0.025 * draws)], meds[int(0.975 * draws) - 1]


def fmt_ratios(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:6.3f} ({med - 1:+6.1%}) [{min(values):.3f}-{max(values):.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds (at least 5)")
    parser.add_argument("--python", default=sys.executable, help="Python that runs the variants")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the workload's CPU work")
    parser.add_argument(
        "--ceilings",
        default="",
        help="also run spanprof with these ceiling rates, in Hz (comma-separated, 10-1000)",
    )
    opts = parser.parse_args()
    if opts.rounds < 5:
        parser.error("--rounds must be at least 5 (medians of paired ratios)")
    try:
        ceilings = [int(x) for x in opts.ceilings.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--ceilings: expected rates in Hz like 50,25, got {opts.ceilings!r}")
    if any(not 10 <= hz <= 1000 for hz in ceilings):
        parser.error("--ceilings: each rate must be between 10 and 1000 Hz")
    python = shutil.which(opts.python) or opts.python
    version = probe(python, "import sys; print(sys.version.split()[0])")
    spanprof_version = probe(
        python, "import spanprof._sampler, importlib.metadata as m; print(m.version('spanprof'))"
    )
    if version is None or spanprof_version is None:
        print(f"error: {python} cannot import spanprof", file=sys.stderr)
        return 1
    ddtrace_version = probe(python, "import ddtrace; print(ddtrace.__version__)")
    print(f"Python {version} ({python}), {os.cpu_count()} CPUs")
    print(f"workload {WORKLOAD.name} --scale {opts.scale:g}, {opts.rounds} rounds")
    print(f"load average at start {load()}")
    ours = ["spanprof"] + [f"spanprof@{hz}Hz" for hz in ceilings]
    variants = ["plain", *ours]
    if ddtrace_version is None:
        print(
            'ddtrace not importable: ddtrace variants skipped (install with pip install ".[bench]")'
        )
        print(f"spanprof {spanprof_version}")
    else:
        variants += ["dd-trace", "dd-prof"]
        print(f"spanprof {spanprof_version}, ddtrace {ddtrace_version}")
    print()

    results: dict[str, list[dict]] = {v: [] for v in variants}
    checks: dict[str, list[dict]] = {v: [] for v in variants}
    print(f"{'round':5}  " + "  ".join(f"{v:>15}" for v in variants) + "   (wall s / CPU s)")
    for r in range(opts.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name in order:
            result, check = run_variant(name, python, opts.scale)
            results[name].append(result)
            checks[name].append(check)
        cells = [
            f"{results[v][-1]['wall_s']:6.3f} / {results[v][-1]['cpu_s']:6.3f}" for v in variants
        ]
        print(
            f"{r + 1:5}  " + "  ".join(f"{c:>15}" for c in cells) + f"   order {','.join(order)}",
            flush=True,
        )
    print()

    width = max(len(v) for v in variants)
    print(f"{'variant':{width}} {'median wall s':>14} {'median CPU s':>13}")
    for v in variants:
        wall = statistics.median(x["wall_s"] for x in results[v])
        cpu = statistics.median(x["cpu_s"] for x in results[v])
        print(f"{v:{width}} {wall:14.3f} {cpu:13.3f}")
    print()

    ratios = [(v, "plain", "spanprof's cost") for v in ours[:1]]
    ratios += [(v, "plain", f"spanprof's cost, {ceiling_hz(v)} Hz ceiling") for v in ours[1:]]
    ratios += [r for r in DD_RATIOS if r[0] in results]
    names = [f"{variant} / {baseline}" for variant, baseline, _ in ratios]
    width = max(20, *(len(n) for n in names))
    print(f"paired ratios, median (change) [min-max] over {opts.rounds} rounds")
    print(f"{'':{width}} {'wall':>31} {'process CPU':>31}")
    for name, (variant, baseline, why) in zip(names, ratios, strict=True):
        cols = []
        for key in ("wall_s", "cpu_s"):
            pairs = zip(results[variant], results[baseline], strict=True)
            cols.append(fmt_ratios([a[key] / b[key] for a, b in pairs]))
        print(f"{name:{width}} {cols[0]:>31} {cols[1]:>31}   {why}")
    print()
    # How sure the medians are: the machine's noise moves a median of 15 rounds by ~1%.
    print("the wall medians' 95% intervals (bootstrap over rounds)")
    costs: dict[str, list[float]] = {}
    for name, (variant, baseline, _) in zip(names, ratios, strict=True):
        if variant in ours or variant == "dd-prof" and baseline == "dd-trace":
            pairs = zip(results[variant], results[baseline], strict=True)
            costs[variant] = [a["wall_s"] / b["wall_s"] - 1 for a, b in pairs]
            lo, hi = median_interval(costs[variant])
            print(f"  {name:{width}} [{lo:+.1%}, {hi:+.1%}]")
    for variant in ours if "dd-prof" in costs else []:
        diff = [a - b for a, b in zip(costs[variant], costs["dd-prof"], strict=True)]
        lo, hi = median_interval(diff)
        print(
            f"  {variant}'s cost minus ddtrace profiler's, round by round: median "
            f"{statistics.median(diff):+.1%} [{lo:+.1%}, {hi:+.1%}]"
        )
    print()

    print(f"load average at end {load()}")
    for variant in ours:
        sp = checks[variant]
        if sp and "samples" in sp[0]:
            share = [c["linked"] / c["samples"] for c in sp]
            print(
                f"{variant} check: every run wrote a profile; samples per run "
                f"{between(c['samples'] for c in sp)}, linked to a span "
                f"{min(share):.0%}-{max(share):.0%}, "
                f"ticks {rate_range(c['wakes_per_s'] for c in sp)} a second of work"
            )
        elif sp:
            print(f"{variant} check: every run wrote a profile")
    dd = checks.get("dd-prof")
    if dd:
        print(
            "ddtrace check: in every dd-prof run ddtrace's profile info.json has stack on and "
            "lock/memory/heap/exception off;\n  its internal_metadata.json: samples per run "
            f"{between(c['samples'] for c in dd)}, sampling events "
            f"{between(c['wakes'] for c in dd)}, adaptive interval at exit "
            f"{between(c['interval_ms'] for c in dd)} ms,\n  sampling events (one pass over "
            f"every thread each) {rate_range(c['wakes_per_s'] for c in dd)} a second of work"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
