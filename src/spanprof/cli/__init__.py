"""The ``spanprof`` command: one module per subcommand, each with ``main(argv) -> int``.

Subcommand modules are imported only when chosen, so ``spanprof run`` pays for
nothing the views need (and the other way round).
"""

from __future__ import annotations

import importlib
import sys

from spanprof.config import ConfigError

# name -> (module with main(argv) -> int, one-line description). Add a subcommand here.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("spanprof.cli.run", "profile a Python script, module or command"),
    "view": ("spanprof.cli.view", "browse a recording in the local web viewer"),
    "flamegraph": ("spanprof.cli.flamegraph", "write a self-contained HTML flame graph"),
    "summary": ("spanprof.cli.summary", "print the functions, endpoints and spans costing most"),
    "export": ("spanprof.cli.export", "export as one pprof or speedscope file"),
}

USAGE = "usage: spanprof <command> [options] ..."


def _help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [USAGE, "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'spanprof <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand and return its exit code (2 for usage and config errors)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_help(), file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(USAGE, file=sys.stderr)
        choices = ", ".join(COMMANDS)
        print(f"spanprof: error: unknown command {name!r} (choose from {choices})", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        code: int = module.main(rest)
    except ConfigError as exc:
        print(f"spanprof: error: {exc}", file=sys.stderr)
        return 2
    return code


def entry() -> None:
    """Console-script entry point (``spanprof = "spanprof.cli:entry"``)."""
    sys.exit(main())
