"""``spanprof run`` and the bootstrap: python's semantics, exit codes, errors, children.

Most tests call ``spanprof.cli.main`` in-process with a fake profiler (``calls``), so
they check the CLI alone; the ``real_profiler`` ones need ``spanprof.start``/``stop``.
Programs report what they saw as JSON (tests/fixtures/record.py), never as text.
"""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import spanprof
from spanprof import cli
from spanprof.cli.run import BOOTSTRAP_DIR
from spanprof.config import Config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCRIPT = FIXTURES / "record.py"
PACKAGE = os.path.dirname(os.path.realpath(spanprof.__file__))
SPANPROF_ROOT = os.path.dirname(PACKAGE)  # the directory spanprof is imported from
TIMEOUT = 60  # only to never hang; nothing here measures time


def environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(autouse=True)
def leaves_no_trace() -> Iterator[None]:
    """No SPANPROF_* from the developer's shell; afterwards the process state is as found.

    Autouse fixtures are set up first, so this is torn down after monkeypatch's undo.
    """
    saved_env = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("SPANPROF_")]:
        del os.environ[key]
    clean_env = environ()
    argv, path, threads = list(sys.argv), list(sys.path), set(threading.enumerate())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        yield
        assert environ() == clean_env
        assert (sys.argv, sys.path) == (argv, path)
        assert set(threading.enumerate()) == threads
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    finally:
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where record.py (and children) write what they saw."""
    path = tmp_path / "record.json"
    monkeypatch.setenv("SPANPROF_TEST_RECORD", str(path))
    monkeypatch.setenv("SPANPROF_TEST_CHILD", str(tmp_path / "child.json"))
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, record: Path) -> list[tuple[str, object, bool]]:
    """A fake profiler: (call, config, had the program run yet?) per start/stop."""
    log: list[tuple[str, object, bool]] = []
    current: list[Config] = []

    def start(**kwargs: object) -> None:
        cfg = Config.from_sources(kwargs)  # as the real start() does
        current.append(cfg)
        log.append(("start", cfg, record.exists()))

    def stop() -> None:
        log.append(("stop", None, record.exists()))
        if current:  # like the real one, a no-op when not started
            cfg = current.pop()
            Path(cfg.output_dir, f"spanprof-{os.getpid()}-{len(log)}.pprof").write_bytes(b"")

    monkeypatch.setattr(spanprof, "start", start, raising=False)
    monkeypatch.setattr(spanprof, "stop", stop, raising=False)
    return log


@pytest.fixture
def child_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Children (and `python -m spanprof`) must import the spanprof these tests import:
    the installed one (scripts/test.sh), or a source tree on PYTHONPATH or the cwd."""
    installed = {os.path.realpath(p) for p in site.getsitepackages()}
    if SPANPROF_ROOT not in installed:
        old = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([SPANPROF_ROOT, *([old] if old else [])]))
    return dict(os.environ)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def seen(record: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(record.read_text())
    return result


def pprofs(directory: Path, pid: object) -> list[Path]:
    return sorted(directory.glob(f"spanprof-{pid}-*.pprof"))


# --- script and module, in-process -------------------------------------------------------


def test_script_runs_as_python_would(tmp_path, monkeypatch, capsys, record, calls) -> None:
    monkeypatch.chdir(tmp_path)
    script = os.path.relpath(SCRIPT)
    code, err = run(capsys, "run", "-o", "out", "--interval", "0.05", script, "a", "-o", "--x")
    assert code == 0, err
    got = seen(record)
    assert got["name"] == "__main__"
    assert got["argv"] == [str(SCRIPT), "a", "-o", "--x"]  # the rest is the program's
    assert got["file"] == str(SCRIPT)
    assert got["path0"] == str(FIXTURES)
    assert got["pid"] == os.getpid()
    out = tmp_path / "out"
    assert [(c[0], c[2]) for c in calls] == [("start", False), ("stop", True)]
    assert calls[0][1] == Config(output_dir=str(out), interval=0.05)


def test_program_environment_profiles_its_children(tmp_path, monkeypatch, capsys, record, calls):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/a", BOOTSTRAP_DIR, "/b"]))
    monkeypatch.setenv("SPANPROF_WINDOW", "7")
    code, err = run(capsys, "run", "--signal", "off", str(SCRIPT))
    assert code == 0, err
    got = seen(record)
    out = str(tmp_path / "spanprof-out")  # the default, made absolute
    assert got["env"] == {
        **Config(output_dir=out, window=7.0, signal=None).to_environ(),
        "SPANPROF_AUTOSTART": "1",
        "SPANPROF_TEST_RECORD": str(record),
        "SPANPROF_TEST_CHILD": str(tmp_path / "child.json"),
    }
    assert got["pythonpath"] == os.pathsep.join([BOOTSTRAP_DIR, "/a", "/b"])
    # the bootstrap dir holds nothing that could shadow the program's own modules
    assert set(os.listdir(BOOTSTRAP_DIR)) - {"__pycache__"} == {"sitecustomize.py"}


def test_nested_run_stops_the_autostarted_profiler_first(tmp_path, monkeypatch, capsys, calls):
    monkeypatch.setenv("SPANPROF_AUTOSTART", "1")  # set by an outer `spanprof run`
    code, err = run(capsys, "run", "-o", str(tmp_path), str(SCRIPT))
    assert code == 0, err
    assert [c[0] for c in calls] == ["stop", "start", "stop"]


@pytest.mark.parametrize(
    "form", [["-m", "spanprof_fixture_pkg.mod"], ["-mspanprof_fixture_pkg.mod"]]
)
def test_module_runs_as_python_m_would(form, tmp_path, monkeypatch, capsys, record, calls):
    monkeypatch.chdir(FIXTURES)
    try:
        code, err = run(capsys, "run", "-o", str(tmp_path), *form, "a", "b")
    finally:
        for name in [n for n in sys.modules if n.startswith("spanprof_fixture_pkg")]:
            del sys.modules[name]
    assert code == 0, err
    got = seen(record)
    assert got["argv"] == [str(FIXTURES / "spanprof_fixture_pkg" / "mod.py"), "a", "b"]
    assert got["name"] == "__main__"
    assert got["path0"] == str(FIXTURES)  # the cwd, as for python -m
    assert [c[0] for c in calls] == ["start", "stop"]


@pytest.mark.parametrize(
    ("args", "code", "stderr_start"),
    [
        ([], 0, ""),
        (["exit", "0"], 0, ""),
        (["exit", "3"], 3, ""),
        (["exit-msg", "went wrong"], 1, "went wrong\n"),
        (["raise"], 1, "Traceback (most recent call last):\n"),
        (["interrupt"], 130, "Traceback (most recent call last):\n"),
    ],
)
def test_exit_codes_are_pythons(args, code, stderr_start, tmp_path, capsys, calls) -> None:
    got_code, err = run(capsys, "run", "-o", str(tmp_path), str(SCRIPT), *args)
    assert got_code == code
    assert err.startswith(stderr_start)
    assert [c[0] for c in calls] == ["start", "stop"]  # stopped whatever happened
    assert err.splitlines()[-1] == f"spanprof: profiles written to {tmp_path} (1 .pprof file)"


def test_uncaught_exception_shows_only_the_programs_frames(tmp_path, capsys, calls) -> None:
    code, err = run(capsys, "run", "-o", str(tmp_path), str(SCRIPT), "raise")
    assert code == 1
    assert "ValueError: boom from the fixture" in err
    assert "in fail" in err
    assert "runpy" not in err
    assert PACKAGE not in err


def test_uncaught_exception_goes_through_sys_excepthook(tmp_path, monkeypatch, capsys, calls):
    hooked = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc_info: hooked.append(exc_info))
    code, _ = run(capsys, "run", "-o", str(tmp_path), str(SCRIPT), "raise")
    assert code == 1
    [(exc_type, exc, tb)] = hooked
    assert exc_type is ValueError
    frames = traceback.extract_tb(tb)
    assert [(f.filename, f.name) for f in frames] == [
        (str(SCRIPT), "<module>"),
        (str(SCRIPT), "fail"),
    ]


# --- usage and configuration errors: exit 2, one line, nothing run ------------------------


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error:" in line]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frob"], "unknown command 'frob'"),
        (["run", "--bogus", str(SCRIPT)], "--bogus"),
        (["run"], "expected a script, -m module or -- command"),
        (["run", "-o", "x"], "expected a script"),
        (["run", "--"], "expected a command after '--'"),
        (["run", "-m"], "-m: expected a module name"),
        (["run", "--interval"], "--interval: expected one argument"),
    ],
)
def test_usage_errors(argv, needle, tmp_path, monkeypatch, capsys, record, calls) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, *argv)
    assert code == 2
    [line] = error_lines(err)
    assert line == err.splitlines()[-1]
    assert needle in line
    assert calls == []
    assert not record.exists()


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_top_level_usage_goes_to_stderr(argv, capsys) -> None:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("usage: spanprof <command>")
    assert "\n  run " in err


def test_run_help_is_on_stdout(capsys) -> None:
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--output-dir", "--interval", "--window", "--max-depth", "--signal"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            ["--interval", "5"],
            {},
            "spanprof: error: invalid --interval '5': expected a number of seconds from 0.001 to 1",
        ),
        (
            ["--max-depth", "0"],
            {"SPANPROF_MAX_DEPTH": "50"},
            "spanprof: error: invalid --max-depth '0': expected an integer from 1 to 4096",
        ),
        (
            [],
            {"SPANPROF_WINDOW": "forever"},
            "spanprof: error: invalid environment variable SPANPROF_WINDOW='forever': "
            "expected a number of seconds from 0.1 to 86400",
        ),
    ],
)
def test_config_errors_are_one_line(argv, env, line, monkeypatch, capsys, record, calls) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, err = run(capsys, "run", *argv, str(SCRIPT))
    assert (code, err) == (2, line + "\n")
    assert calls == []
    assert not record.exists()


def test_missing_script(tmp_path, monkeypatch, capsys, calls) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, "run", "nope.py")
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("spanprof: error: can't open file") and "nope.py" in line
    assert calls == []


def test_missing_module(tmp_path, capsys, calls) -> None:
    code, err = run(capsys, "run", "-o", str(tmp_path), "-m", "spanprof_no_such_module")
    assert code == 1
    [line] = error_lines(err)
    assert line == "spanprof: error: No module named spanprof_no_such_module"


def test_missing_command(tmp_path, capsys) -> None:
    code, err = run(capsys, "run", "-o", str(tmp_path), "--", "spanprof-no-such-command")
    assert (code, err) == (127, "spanprof: error: command not found: spanprof-no-such-command\n")


# --- commands: environment, exit codes, signals -------------------------------------------


def test_command_gets_the_profiling_environment(tmp_path, capsys, record, child_env) -> None:
    code, err = run(capsys, "run", "-o", str(tmp_path), "--", sys.executable, str(SCRIPT), "x")
    assert code == 0, err
    got = seen(record)
    assert got["pid"] != os.getpid()
    assert got["argv"] == [str(SCRIPT), "x"]
    env = got["env"]
    assert isinstance(env, dict)
    assert env["SPANPROF_AUTOSTART"] == "1"
    assert env["SPANPROF_OUTPUT_DIR"] == str(tmp_path)
    inherited = child_env.get("PYTHONPATH")
    assert got["pythonpath"] == os.pathsep.join(
        [BOOTSTRAP_DIR, *([inherited] if inherited else [])]
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("raise SystemExit(5)", 5),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + signal.SIGTERM),
    ],
)
def test_command_exit_code(code, expected, tmp_path, capsys, child_env) -> None:
    got, err = run(capsys, "run", "-o", str(tmp_path), "--", sys.executable, "-c", code)
    assert got == expected, err


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never got ready"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_to_the_command(sig, tmp_path, child_env) -> None:
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, sys\n"
        "for s in (signal.SIGINT, signal.SIGTERM):\n"
        "    signal.signal(s, lambda n, f: sys.exit(40 + n))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    argv = ["run", "-o", str(tmp_path), "--", sys.executable, "-c", child]
    with subprocess.Popen(
        [sys.executable, "-m", "spanprof", *argv], env=child_env, stderr=subprocess.PIPE, text=True
    ) as proc:
        wait_for(ready, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 40 + sig, err


# --- the bootstrap sitecustomize ----------------------------------------------------------


def python_with_bootstrap(
    tmp_path, env, code, *, other_site: str | None
) -> subprocess.CompletedProcess:
    other = tmp_path / "other"
    other.mkdir()
    if other_site is not None:
        (other / "sitecustomize.py").write_text(other_site)
    inherited = env.get("PYTHONPATH")
    pythonpath = os.pathsep.join([BOOTSTRAP_DIR, str(other), *([inherited] if inherited else [])])
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_bootstrap_chains_to_the_sitecustomize_it_hides(tmp_path, child_env) -> None:
    result = python_with_bootstrap(
        tmp_path,
        child_env,
        "import sitecustomize; print(sitecustomize.CHAINED)",
        other_site="CHAINED = 'yes'\n",
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "yes\n", "")


def test_bootstrap_survives_a_broken_chained_sitecustomize(tmp_path, child_env) -> None:
    result = python_with_bootstrap(
        tmp_path, child_env, "print('ran')", other_site="raise RuntimeError('site is broken')\n"
    )
    assert (result.returncode, result.stdout) == (0, "ran\n")
    assert "Error in sitecustomize" in result.stderr
    assert "RuntimeError: site is broken" in result.stderr


# --- with the real profiler ---------------------------------------------------------------


def test_real_profiler_in_process(tmp_path, capsys, record) -> None:
    code, err = run(capsys, "run", "-o", str(tmp_path), str(SCRIPT), "sampled")
    assert code == 0, err
    assert pprofs(tmp_path, os.getpid())
    # leaves_no_trace checks the profiler's threads are gone


def test_real_profiler_command_pprof_carries_the_childs_pid(tmp_path, capsys, record, child_env):
    out = tmp_path / "out"
    argv = ["run", "-o", str(out), "--", sys.executable, str(SCRIPT), "sampled"]
    code, err = run(capsys, *argv)
    assert code == 0, err
    [pprof] = pprofs(out, seen(record)["pid"])
    assert pprof.read_bytes()[:2] == b"\x1f\x8b"  # gzip'd pprof
    assert err.splitlines()[-1] == f"spanprof: profiles written to {out} (1 .pprof file)"


def test_real_profiler_child_python_of_a_script_is_profiled(tmp_path, record, child_env) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "spanprof", "run", "-o", str(out), str(SCRIPT), "child"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    parent = seen(record)["pid"]
    child = seen(tmp_path / "child.json")["pid"]
    assert parent != child
    assert pprofs(out, parent)
    assert pprofs(out, child)


def test_real_profiler_bad_env_config_in_a_child_is_one_line(tmp_path, child_env) -> None:
    env = {**child_env, "SPANPROF_AUTOSTART": "1", "SPANPROF_INTERVAL": "fast"}
    result = python_with_bootstrap(tmp_path, env, "print('ran')", other_site=None)
    assert (result.returncode, result.stdout) == (0, "ran\n")
    [line] = result.stderr.splitlines()
    assert line.startswith("spanprof: not started: ")
    assert "SPANPROF_INTERVAL='fast'" in line
