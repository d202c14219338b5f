"""Immutable profile chunks: what the profile stage hands to exporters.

A chunk is one window of one process, with its frames already resolved to
names and line numbers, so exporters never touch the sampler or code objects.
"""

from __future__ import annotations

from dataclasses import dataclass

LabelValue = str | int
Labels = tuple[tuple[str, LabelValue], ...]


@dataclass(frozen=True, slots=True)
class Frame:
    """One resolved Python frame: the function and the line being executed."""

    function: str  # qualified name where Python has one
    filename: str
    line: int  # line being executed (0 if unknown)
    start_line: int  # first line of the function (0 if unknown)


@dataclass(frozen=True, slots=True)
class ChunkSample:
    """Aggregated samples sharing one stack, one thread and one set of labels."""

    stack: tuple[int, ...]  # indices into Chunk.frames, leaf first
    labels: Labels  # e.g. (("thread.id", 1403...), ("thread.name", "MainThread"), ...)
    count: int
    cpu_ns: int
    wall_ns: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """One rotated window of one process."""

    pid: int
    seq: int  # 0, 1, 2 ... per process
    start_ns: int  # wall clock (time.time_ns) at window start
    end_ns: int
    period_ns: int  # nominal sampling interval
    frames: tuple[Frame, ...]
    samples: tuple[ChunkSample, ...]
    dropped: int = 0  # samples lost (bounded memory, timeouts); 0 when nothing was lost
