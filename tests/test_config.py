"""Config: precedence, validation messages, the option table, env and argparse round trips."""

from __future__ import annotations

import argparse
import dataclasses
import signal

import pytest

from spanprof.config import (
    BOOLEAN,
    SIGNAL_AUTO,
    Config,
    ConfigError,
    add_arguments,
    kwargs_from_args,
    option,
)

ALL_ENV = {
    "SPANPROF_OUTPUT_DIR": "env-out",
    "SPANPROF_INTERVAL": "0.5",
    "SPANPROF_WINDOW": "30",
    "SPANPROF_MAX_DEPTH": "64",
    "SPANPROF_SIGNAL": "off",
    "SPANPROF_PROPAGATE": "no",
    "SPANPROF_CPU_BUDGET": "2.5",
    "SPANPROF_CPU_TIMERS": "on",
}


def error_line(kwargs: dict[str, object], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_sources(kwargs, environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_when_nothing_is_set() -> None:
    cfg = Config.from_sources({}, {})
    assert dataclasses.astuple(cfg) == (
        "spanprof-out",
        0.01,
        60.0,
        128,
        SIGNAL_AUTO,
        True,
        1.0,
        False,
    )


def test_env_overrides_defaults() -> None:
    cfg = Config.from_sources({}, ALL_ENV)
    assert dataclasses.astuple(cfg) == ("env-out", 0.5, 30.0, 64, None, False, 2.5, True)


def test_kwargs_override_env_option_by_option() -> None:
    cfg = Config.from_sources({"interval": 0.002, "signal": "auto"}, ALL_ENV)
    assert cfg.interval == 0.002
    assert cfg.signal == SIGNAL_AUTO
    assert (cfg.output_dir, cfg.window, cfg.max_depth) == ("env-out", 30.0, 64)


def test_empty_env_var_counts_as_unset() -> None:
    assert Config.from_sources({}, {"SPANPROF_INTERVAL": ""}).interval == 0.01


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPANPROF_MAX_DEPTH", "7")
    assert Config.from_sources({}).max_depth == 7


def test_signal_sources() -> None:
    lo, hi = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    assert Config.from_sources({"signal": None}, {}).signal is None
    assert Config.from_sources({"signal": lo + 1}, {}).signal == lo + 1
    assert Config.from_sources({}, {"SPANPROF_SIGNAL": str(hi)}).signal == hi
    assert Config.from_sources({}, {"SPANPROF_SIGNAL": "SIGRTMIN+3"}).signal == lo + 3
    assert Config.from_sources({}, {"SPANPROF_SIGNAL": "AUTO"}).signal == SIGNAL_AUTO


@pytest.mark.parametrize(
    ("kwargs", "environ", "source", "expected"),
    [
        ({"interval": 2}, {}, "keyword argument interval=2", "from 0.001 to 1"),
        ({"interval": True}, {}, "keyword argument interval=True", "number of seconds"),
        ({}, {"SPANPROF_INTERVAL": "10ms"}, "SPANPROF_INTERVAL='10ms'", "from 0.001 to 1"),
        ({}, {"SPANPROF_INTERVAL": "nan"}, "SPANPROF_INTERVAL='nan'", "from 0.001 to 1"),
        ({"window": 0.05}, {}, "keyword argument window=0.05", "from 0.1 to 86400"),
        ({}, {"SPANPROF_WINDOW": "86401"}, "SPANPROF_WINDOW='86401'", "from 0.1 to 86400"),
        ({"max_depth": 0}, {}, "keyword argument max_depth=0", "integer from 1 to 4096"),
        ({}, {"SPANPROF_MAX_DEPTH": "1.5"}, "SPANPROF_MAX_DEPTH='1.5'", "integer from 1 to 4096"),
        ({"signal": int(signal.SIGUSR1)}, {}, "keyword argument signal=10", "real-time signal"),
        ({}, {"SPANPROF_SIGNAL": "maybe"}, "SPANPROF_SIGNAL='maybe'", "'auto', 'off'"),
        ({"output_dir": ""}, {}, "keyword argument output_dir=''", "non-empty directory"),
        ({"output_dir": 3}, {}, "keyword argument output_dir=3", "non-empty directory"),
    ],
)
def test_each_bad_value_is_one_line_naming_its_source(
    kwargs: dict[str, object], environ: dict[str, str], source: str, expected: str
) -> None:
    message = error_line(kwargs, environ)
    assert message.startswith("invalid ")
    assert source in message
    assert expected in message.partition(": expected ")[2]
    if environ:
        assert message.startswith("invalid environment variable SPANPROF_")


def test_a_valid_kwarg_does_not_hide_a_bad_env_var_for_another_option() -> None:
    message = error_line({"interval": 0.1}, {"SPANPROF_WINDOW": "-1"})
    assert "SPANPROF_WINDOW='-1'" in message


def test_a_kwarg_shadows_a_bad_env_var_for_the_same_option() -> None:
    assert Config.from_sources({"window": 5}, {"SPANPROF_WINDOW": "-1"}).window == 5.0


def test_multiline_value_stays_on_one_line() -> None:
    message = error_line({}, {"SPANPROF_INTERVAL": "1\n2"})
    assert "SPANPROF_INTERVAL='1\\n2'" in message


def test_unknown_option_lists_known_ones() -> None:
    message = error_line({"intervall": 0.1}, {})
    assert "unknown keyword argument 'intervall'" in message
    assert "did you mean 'interval'?" in message
    for name in ("output_dir", "interval", "window", "max_depth", "signal"):
        assert name in message


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"^invalid Config\(max_depth=0\): expected an integer"):
        Config(max_depth=0)


@pytest.mark.parametrize(
    "cfg",
    [
        Config(),
        Config(output_dir="/tmp/x y", interval=0.001, window=86400.0, max_depth=1, signal=None),
        Config(interval=0.1 + 0.2, window=0.1, max_depth=4096, signal=int(signal.SIGRTMAX)),
    ],
)
def test_to_environ_round_trips(cfg: Config) -> None:
    environ = cfg.to_environ()
    assert set(environ) == {
        "SPANPROF_OUTPUT_DIR",
        "SPANPROF_INTERVAL",
        "SPANPROF_WINDOW",
        "SPANPROF_MAX_DEPTH",
        "SPANPROF_SIGNAL",
        "SPANPROF_PROPAGATE",
        "SPANPROF_CPU_BUDGET",
        "SPANPROF_CPU_TIMERS",
    }
    assert Config.from_sources({}, environ) == cfg
    # and the field values fed back as kwargs give the same config
    assert Config.from_sources(dataclasses.asdict(cfg), {}) == cfg


def parse(argv: list[str], cls: type[Config] = Config) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return kwargs_from_args(parser.parse_args(argv), cls)


def test_flags_give_only_what_the_user_set() -> None:
    kwargs = parse(["-o", "d", "--interval", "0.05", "--max-depth=9", "--signal", "off"])
    assert kwargs == {"output_dir": "d", "interval": 0.05, "max_depth": 9, "signal": None}
    assert parse([]) == {}
    # so env vars still apply to the flags left out
    cfg = Config.from_sources(parse(["--window", "5"]), {"SPANPROF_MAX_DEPTH": "3"})
    assert (cfg.window, cfg.max_depth) == (5.0, 3)


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        parse(["--window", "forever"])
    assert str(info.value) == (
        "invalid --window 'forever': expected a number of seconds from 0.1 to 86400"
    )


@dataclasses.dataclass(frozen=True)
class WithBool(Config):
    """A later option is one more row: a bool, to check the table handles them."""

    follow_forks: bool = option(True, BOOLEAN, "profile forked children")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("Yes", True), ("on", True)]
    + [("0", False), ("false", False), ("NO", False), ("off", False)],
)
def test_bool_env_values(text: str, value: bool) -> None:
    assert WithBool.from_sources({}, {"SPANPROF_FOLLOW_FORKS": text}).follow_forks is value


def test_a_new_row_gets_env_flag_validation_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="SPANPROF_FOLLOW_FORKS='2'.*expected a boolean"):
        WithBool.from_sources({}, {"SPANPROF_FOLLOW_FORKS": "2"})
    assert parse(["--no-follow-forks"], WithBool) == {"follow_forks": False}
    cfg = WithBool.from_sources({"follow_forks": False}, {"SPANPROF_FOLLOW_FORKS": "yes"})
    assert cfg.follow_forks is False
    assert cfg.to_environ()["SPANPROF_FOLLOW_FORKS"] == "false"
    assert WithBool.from_sources({}, cfg.to_environ()) == cfg
