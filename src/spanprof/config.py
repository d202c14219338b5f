"""Configuration: one table of options, read from keyword arguments, env vars or CLI flags.

Every option is a field of :class:`Config` whose metadata carries its parser, so adding
an option is adding one field: its ``SPANPROF_<NAME>`` variable, its ``--flag``, its
validation and its :meth:`Config.to_environ` form all follow from that row.

Precedence is keyword argument (or CLI flag) > ``SPANPROF_*`` environment variable >
default. An empty environment variable counts as unset, as in OpenTelemetry.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import signal as _signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

ENV_PREFIX = "SPANPROF_"
SIGNAL_AUTO = -1  # Config.signal: let the sampler pick a free real-time signal
_META = "spanprof.option"
_SIGRTMIN = int(getattr(_signal, "SIGRTMIN", 34))
_SIGRTMAX = int(getattr(_signal, "SIGRTMAX", 64))


class ConfigError(ValueError):
    """Bad configuration. ``str()`` is one line: where the value came from, what is expected."""


@dataclass(frozen=True)
class Kind:
    """How one option's values are parsed, checked and written back as text."""

    expected: str  # completes "expected ...", e.g. "an integer from 1 to 4096"
    parse: Callable[[object], Any]  # str or Python value -> value; ValueError/TypeError if bad
    format: Callable[[Any], str] = str  # value -> text that ``parse`` reads back
    metavar: str | None = None
    is_bool: bool = False  # CLI: --name / --no-name instead of taking a value


@dataclass(frozen=True)
class _Spec:
    kind: Kind
    help: str
    short: str | None


def option(default: Any, kind: Kind, help: str, short: str | None = None) -> Any:
    """One row of the option table: a dataclass field carrying its parser and CLI help."""
    return field(default=default, metadata={_META: _Spec(kind, help, short)})


def number(lo: float, hi: float, unit: str) -> Kind:
    """A float within [lo, hi]; strings are parsed, bools refused (``True`` is not 1 s)."""

    def parse(value: object) -> float:
        if isinstance(value, str):
            result = float(value.strip())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        else:
            raise TypeError(value)
        if not lo <= result <= hi:  # also refuses nan
            raise ValueError(value)
        return result

    return Kind(f"a number of {unit} from {lo:g} to {hi:g}", parse, repr, metavar=unit.upper())


def integer(lo: int, hi: int) -> Kind:
    """An int within [lo, hi]."""

    def parse(value: object) -> int:
        if isinstance(value, str):
            result = int(value.strip(), 10)
        elif isinstance(value, int) and not isinstance(value, bool):
            result = int(value)
        else:
            raise TypeError(value)
        if not lo <= result <= hi:
            raise ValueError(value)
        return result

    return Kind(f"an integer from {lo} to {hi}", parse, str, metavar="N")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(value)


BOOLEAN = Kind(
    "a boolean (1/0, true/false, yes/no, on/off)",
    _parse_bool,
    lambda v: "true" if v else "false",
    is_bool=True,
)


def _parse_path(value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(value)
    result = os.fspath(value)
    if not isinstance(result, str) or not result.strip():
        raise ValueError(value)
    return result


PATH = Kind("a non-empty directory path", _parse_path, str, metavar="DIR")

_RT_NAME = re.compile(r"(?:sig)?rt(min|max)(?:([+-])(\d+))?")


def _parse_signal(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return SIGNAL_AUTO
        if text == "off":
            return None
        named = _RT_NAME.fullmatch(text)
        if named:
            base = _SIGRTMIN if named[1] == "min" else _SIGRTMAX
            offset = int(named[3] or 0)
            signum = base + offset if named[2] == "+" else base - offset
        else:
            signum = int(text, 10)
    elif isinstance(value, int) and not isinstance(value, bool):
        signum = int(value)
    else:
        raise TypeError(value)
    if signum != SIGNAL_AUTO and not _SIGRTMIN <= signum <= _SIGRTMAX:
        raise ValueError(value)
    return signum


def _format_signal(value: int | None) -> str:
    if value is None:
        return "off"
    return "auto" if value == SIGNAL_AUTO else str(value)


SIGNAL = Kind(
    f"'auto', 'off' or a real-time signal number from {_SIGRTMIN} to {_SIGRTMAX}"
    " (SIGRTMIN+n works too)",
    _parse_signal,
    _format_signal,
    metavar="SIG",
)


_C = TypeVar("_C", bound="Config")


@dataclass(frozen=True)
class Config:
    """Validated profiler settings; build it with :meth:`from_sources`."""

    output_dir: str = option(
        "spanprof-out", PATH, "directory the profiles are written to", short="-o"
    )
    interval: float = option(0.01, number(0.001, 1.0, "seconds"), "sampling interval")
    window: float = option(
        60.0, number(0.1, 86400.0, "seconds"), "how much time each profile file covers"
    )
    max_depth: int = option(
        128, integer(1, 4096), "deepest stack kept; deeper ones keep their leaf side"
    )
    signal: int | None = option(
        SIGNAL_AUTO,
        SIGNAL,
        "real-time signal for in-place capture of running threads; 'off' disables it",
    )
    propagate: bool = option(
        True,
        BOOLEAN,
        "run new threads and thread-pool work in a copy of the caller's context",
    )
    cpu_budget: float = option(
        1.0,
        number(0.1, 100.0, "percent"),
        "CPU the sampler may use, in % of one core; the interval adapts (down to 10 Hz)",
    )
    cpu_timers: bool = option(
        False,
        BOOLEAN,
        "sample running threads with a perf-event timer on their own CPU time "
        "(nothing wakes up to find them; but on a VM each capture costs the thread "
        "~60 µs, against ~3 µs for the default ticker's signal)",
    )

    def __post_init__(self) -> None:
        # Direct construction is validated too, so a Config is always a good one.
        for f in _fields(type(self)):
            raw = getattr(self, f.name)
            value = _convert(f, raw, f"Config({f.name}={_show(raw)})")
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_sources(
        cls: type[_C],
        kwargs: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> _C:
        """Resolve every option: kwargs > ``SPANPROF_*`` in ``environ`` (os.environ) > default.

        Raises ConfigError naming the first bad source, so a bad setting fails at start.
        """
        kwargs = {} if kwargs is None else kwargs
        environ = os.environ if environ is None else environ
        fields = _fields(cls)
        known = {f.name for f in fields}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            name = unknown[0]
            hint = difflib.get_close_matches(name, known, n=1)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigError(
                f"unknown keyword argument {name!r}: {did_you_mean}"
                f"known options are {', '.join(f.name for f in fields)}"
            )
        values: dict[str, Any] = {}
        for f in fields:
            if f.name in kwargs:
                raw: object = kwargs[f.name]
                source = f"keyword argument {f.name}={_show(raw)}"
            elif environ.get(env_name(f.name), ""):
                raw = environ[env_name(f.name)]
                source = f"environment variable {env_name(f.name)}={_show(raw)}"
            else:
                continue
            values[f.name] = _convert(f, raw, source)
        return cls(**values)

    def to_environ(self) -> dict[str, str]:
        """The ``SPANPROF_*`` variables that reproduce this config in a child process."""
        return {
            env_name(f.name): _spec(f).kind.format(getattr(self, f.name))
            for f in _fields(type(self))
        }


def env_name(name: str) -> str:
    """``interval`` -> ``SPANPROF_INTERVAL``."""
    return ENV_PREFIX + name.upper()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(
    parser: argparse.ArgumentParser, cls: type[Config] = Config
) -> list[argparse.Action]:
    """Register one flag per option; values are checked later by :func:`kwargs_from_args`.

    Flags default to "absent" so that unset ones leave the env vars in charge.
    Returns the actions, so a caller splitting argv can tell which flags take a value.
    """
    group = parser.add_argument_group(
        "profiler options",
        f"Each can also be set with a {ENV_PREFIX}<NAME> environment variable; flags win.",
    )
    actions = []
    for f in _fields(cls):
        spec = _spec(f)
        flags = ([spec.short] if spec.short else []) + [_flag(f.name)]
        default = spec.kind.format(f.default)
        help_ = f"{spec.help} (default: {default}; env {env_name(f.name)})".replace("%", "%%")
        if spec.kind.is_bool:
            action = group.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_,
            )
        else:
            action = group.add_argument(
                *flags,
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar=spec.kind.metavar,
                help=help_,
            )
        actions.append(action)
    return actions


def kwargs_from_args(args: argparse.Namespace, cls: type[Config] = Config) -> dict[str, object]:
    """Options the user gave on the command line, parsed; errors name the ``--flag``."""
    kwargs: dict[str, object] = {}
    for f in _fields(cls):
        if hasattr(args, f.name):
            raw = getattr(args, f.name)
            kwargs[f.name] = _convert(f, raw, f"{_flag(f.name)} {_show(raw)}")
    return kwargs


def _fields(cls: type[Config]) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if _META in f.metadata)


def _spec(f: dataclasses.Field[Any]) -> _Spec:
    spec: _Spec = f.metadata[_META]
    return spec


def _show(value: object) -> str:
    text = repr(value)  # repr escapes newlines: the message stays one line
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(f: dataclasses.Field[Any], value: object, source: str) -> Any:
    kind = _spec(f).kind
    try:
        return kind.parse(value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"invalid {source}: expected {kind.expected}") from None
