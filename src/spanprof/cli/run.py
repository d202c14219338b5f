"""``spanprof run``: profile a script, a module, or any command and its Python children.

A script or ``-m`` module runs in this process, exactly as ``python script.py`` or
``python -m module`` would run it. ``-- COMMAND`` runs as a child process. Either way
the config is exported as ``SPANPROF_*`` variables with the bootstrap directory first
on ``PYTHONPATH``, so every Python process the program starts profiles itself into
the same directory, each writing its own files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import runpy
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

from spanprof import config
from spanprof.config import Config, ConfigError

BOOTSTRAP_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bootstrap"
)
AUTOSTART = "SPANPROF_AUTOSTART"

USAGE = """spanprof run [options] script.py [args ...]
       spanprof run [options] -m module [args ...]
       spanprof run [options] -- command [args ...]"""

DESCRIPTION = """\
Profile a Python program. A script or -m module runs in this process as python
would run it; '-- command' runs any command as a child. Python processes started
by the program are profiled too, each writing its own .pprof files to the
output directory."""

_SI_KERNEL = 0x80  # siginfo si_code of a signal sent by the kernel (e.g. ^C at a tty)
_OWN_MODULES = frozenset({"runpy", __name__})  # frames hidden from the program's traceback


@dataclasses.dataclass(frozen=True)
class _Target:
    kind: str  # "script", "module" or "command"
    name: str
    args: list[str]


class _UsageError(Exception):
    pass


class _NotRun(Exception):
    """The program could not be started; the message is printed, args[0] is the exit code."""


def main(argv: list[str]) -> int:
    """Run the program under the profiler; return its exit code (2 for usage errors)."""
    parser = argparse.ArgumentParser(
        prog="spanprof run", usage=USAGE, description=DESCRIPTION, allow_abbrev=False
    )
    takes_value = {
        flag
        for action in config.add_arguments(parser)
        if action.nargs != 0
        for flag in action.option_strings
    }
    try:
        try:
            options, target = _split(argv, takes_value)
        except _UsageError as exc:
            parser.error(str(exc))
        args = parser.parse_args(options)
        if target is None:
            parser.error("expected a script, -m module or -- command")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2

    kwargs = config.kwargs_from_args(args)
    cfg = Config.from_sources(kwargs)
    out_dir = os.path.abspath(cfg.output_dir)  # children may chdir: give them an absolute path
    cfg = dataclasses.replace(cfg, output_dir=out_dir)
    kwargs["output_dir"] = out_dir
    if target.kind == "script" and not os.path.exists(target.name):
        path = os.path.abspath(target.name)
        print(
            f"spanprof: error: can't open file {path!r}: [Errno 2] No such file or directory",
            file=sys.stderr,
        )
        return 2  # as python does

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out_dir!r}: {exc.strerror}") from None

    _stop_autostarted()
    env = child_environ(cfg, os.environ)
    try:
        if target.kind == "command":
            code = _run_command(target, {**os.environ, **env})
        else:
            code = _run_in_process(target, kwargs, env)
    except _NotRun as exc:
        return int(exc.args[0])
    _report(out_dir)
    return code


def child_environ(cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """Variables that make a child Python process profile itself with ``cfg``.

    The bootstrap directory goes first on PYTHONPATH (once, even when nested) so its
    sitecustomize runs at interpreter start; it chains to any other sitecustomize.
    """
    env = cfg.to_environ()
    env[AUTOSTART] = "1"
    old = environ.get("PYTHONPATH", "")
    rest = [p for p in old.split(os.pathsep) if p != BOOTSTRAP_DIR] if old else []
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *rest])
    return env


def _split(argv: list[str], takes_value: set[str]) -> tuple[list[str], _Target | None]:
    """Cut argv into spanprof's options and the target, as python does: what follows
    the script, ``-m module`` or ``--`` belongs to the program, flags included."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            if i + 1 == len(argv):
                raise _UsageError("expected a command after '--'")
            return argv[:i], _Target("command", argv[i + 1], argv[i + 2 :])
        if token.startswith("-m") and not token.startswith("--"):
            if token != "-m":  # -mmodule, as python accepts
                return argv[:i], _Target("module", token[2:], argv[i + 1 :])
            if i + 1 == len(argv):
                raise _UsageError("argument -m: expected a module name")
            return argv[:i], _Target("module", argv[i + 1], argv[i + 2 :])
        if token.startswith("-") and token != "-":
            i += 2 if token in takes_value else 1  # "--flag=value" and "-oDIR" are one token
            continue
        return argv[:i], _Target("script", token, argv[i + 1 :])
    return argv, None


def _stop_autostarted() -> None:
    """When spanprof itself runs under a profiled parent, the bootstrap has already
    started a profiler in this process: stop it, so this process never runs two."""
    if os.environ.get(AUTOSTART) == "1":
        import spanprof

        spanprof.stop()


def _run_in_process(target: _Target, kwargs: dict[str, object], env: dict[str, str]) -> int:
    import spanprof

    # Saved and restored so an in-process caller (tests) gets its state back.
    saved_argv, saved_path = sys.argv, sys.path[:]
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    sys.argv = [target.name, *target.args]  # runpy replaces argv[0] with the file path
    if not getattr(sys.flags, "safe_path", False):  # python -P / PYTHONSAFEPATH: no path[0]
        if target.kind == "module":
            path0 = os.getcwd()
        elif os.path.isdir(target.name):
            path0 = os.path.abspath(target.name)
        else:
            path0 = os.path.dirname(os.path.realpath(target.name))
        sys.path[:1] = [path0]
    try:
        spanprof.start(**kwargs)
        try:
            return _execute(target)
        finally:
            spanprof.stop()
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _execute(target: _Target) -> int:
    """Run the script or module as ``__main__``; map its ending to an exit code as python does."""
    try:
        if target.kind == "module":
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        else:
            # python gives __main__ an absolute __file__ (3.9+); runpy also puts it in argv[0].
            runpy.run_path(os.path.abspath(target.name), run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return int(exc.code)  # sys.exit(True) is 1
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _print_exception(exc)
        return 130
    except BaseException as exc:
        if isinstance(exc, ImportError) and _innermost_module(exc) == "runpy":
            # runpy could not find the module or __main__: one line, like python's.
            print(f"spanprof: error: {exc}", file=sys.stderr)
        else:
            _print_exception(exc)
        return 1
    return 0


def _innermost_module(exc: BaseException) -> object:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return None if tb is None else tb.tb_frame.f_globals.get("__name__")


def _print_exception(exc: BaseException) -> None:
    """Show an uncaught exception through sys.excepthook (the program may have set its
    own), without the frames of spanprof and runpy that python would not show."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in _OWN_MODULES:
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _run_command(target: _Target, env: dict[str, str]) -> int:
    """Run the command as a child, forwarding SIGINT and SIGTERM; return a shell-style code.

    Signals are taken with sigtimedwait to see who sent them: a ^C at the terminal
    (sent by the kernel to the whole foreground group) already reached the child, and
    a second SIGINT could cut short its cleanup, including the profile flush.
    """
    if threading.current_thread() is not threading.main_thread():
        return _exit_code(_spawn(target, env).wait())  # signals are the main thread's job
    forwarded = (signal.SIGINT, signal.SIGTERM)
    proc: subprocess.Popen[bytes] | None = None
    early: list[int] = []

    def forward(signum: int, frame: object) -> None:
        # Before Popen returns, or when the signal hit another thread.
        if proc is None:
            early.append(signum)
        else:
            proc.send_signal(signum)

    handlers = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        proc = _spawn(target, env)
        for signum in early:
            proc.send_signal(signum)
        waited = {*forwarded, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        try:
            while proc.poll() is None:
                info = signal.sigtimedwait(waited, 1.0)  # SIGCHLD wakes us when it ends
                if info is None or info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo == signal.SIGINT and info.si_code == _SI_KERNEL:
                    continue  # ^C at the terminal: the child, in our process group, got it
                proc.send_signal(info.si_signo)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(signum, handler)
    return _exit_code(proc.returncode)


def _spawn(target: _Target, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen([target.name, *target.args], env=env)
    except FileNotFoundError:
        print(f"spanprof: error: command not found: {target.name}", file=sys.stderr)
        raise _NotRun(127) from None
    except OSError as exc:  # not executable, exec format error, ...
        print(f"spanprof: error: cannot run {target.name}: {exc.strerror}", file=sys.stderr)
        raise _NotRun(126) from None


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _report(out_dir: str) -> None:
    try:
        count = sum(1 for name in os.listdir(out_dir) if name.endswith(".pprof"))
    except OSError:
        count = 0
    files = "file" if count == 1 else "files"
    print(f"spanprof: profiles written to {out_dir} ({count} .pprof {files})", file=sys.stderr)
