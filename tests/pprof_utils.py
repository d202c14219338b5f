"""Read pprof files back into plain Python values, for assertions in any test.

Tests should check what a profile viewer would see (function names, lines,
labels, values), not protobuf ids, so this resolves every id and string index.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

from spanprof._proto.profile_pb2 import Profile

__all__ = ["ParsedSample", "load_dir", "load_pprof", "samples"]

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ParsedSample:
    """One pprof sample with every id resolved; stacks are leaf first."""

    functions: list[str]
    filenames: list[str]
    lines: list[int]
    labels: dict[str, str | int] = field(default_factory=dict)
    count: int = 0
    cpu_ns: int = 0
    wall_ns: int = 0


def load_pprof(path: str | os.PathLike[str]) -> Profile:
    """Parse a pprof file, gzip'd (as written to disk) or raw."""
    data = Path(path).read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    return Profile.FromString(data)


def samples(path_or_profile: str | os.PathLike[str] | Profile) -> list[ParsedSample]:
    """Every sample of a profile, resolved through its string/function/location tables.

    Values are read by sample type name, so a reordered profile still parses; a
    dangling id or string index raises (IndexError/KeyError) instead of passing.
    """
    prof = path_or_profile if isinstance(path_or_profile, Profile) else load_pprof(path_or_profile)
    st = prof.string_table
    value_index = {st[vt.type]: i for i, vt in enumerate(prof.sample_type)}
    functions = {f.id: f for f in prof.function}
    locations = {loc.id: loc for loc in prof.location}

    out: list[ParsedSample] = []
    for sample in prof.sample:
        names: list[str] = []
        files: list[str] = []
        lines: list[int] = []
        for loc_id in sample.location_id:
            # A location's lines run innermost (inlined) first, like the stack.
            for line in locations[loc_id].line:
                func = functions[line.function_id]
                names.append(st[func.name])
                files.append(st[func.filename])
                lines.append(line.line)
        labels: dict[str, str | int] = {}
        for label in sample.label:
            # Index 0 is "", which the encoder never emits as a str label value.
            labels[st[label.key]] = st[label.str] if label.str else label.num
        values = list(sample.value)
        out.append(
            ParsedSample(
                functions=names,
                filenames=files,
                lines=lines,
                labels=labels,
                count=_value(values, value_index, "samples"),
                cpu_ns=_value(values, value_index, "cpu"),
                wall_ns=_value(values, value_index, "wall"),
            )
        )
    return out


def _value(values: list[int], index: dict[str, int], kind: str) -> int:
    i = index.get(kind)
    return values[i] if i is not None else 0


def load_dir(directory: str | os.PathLike[str]) -> list[ParsedSample]:
    """Samples of every ``*.pprof`` file in ``directory`` (sorted by name), concatenated."""
    merged: list[ParsedSample] = []
    for path in sorted(Path(directory).glob("*.pprof")):
        merged.extend(samples(path))
    return merged
