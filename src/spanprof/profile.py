"""The profile stage: aggregates samples and rotates them into immutable chunks.

Samples are counted by (packed stack, thread labels, link labels) in a native
:class:`~spanprof._profile.Window`, which the sampler's resolver adds to without
a Python call per sample. Stacks stay packed bytes until a window is rotated;
only then are frames resolved to names and lines, through a cache.
"""

from __future__ import annotations

import os
import struct
import time
from bisect import bisect_right
from collections.abc import Callable
from types import CodeType

from spanprof._profile import Window
from spanprof.model import Chunk, ChunkSample, Frame, Labels

__all__ = ["Profile", "FrameResolver"]

CODE_ID_UNKNOWN = 0
CODE_ID_TRUNCATED = 1
UNKNOWN_FRAME = Frame("<unknown>", "", 0, 0)
TRUNCATED_FRAME = Frame("<truncated>", "", 0, 0)
_PAIR = struct.Struct("=Ii")


class FrameResolver:
    """Turns (code id, byte offset) into a :class:`Frame`, cached.

    ``code_for_id`` is the sampler's table; :meth:`clear` must be called when
    that table is reset, since ids are then reused.
    """

    def __init__(self, code_for_id: Callable[[int], CodeType | None]) -> None:
        self._code_for_id = code_for_id
        self._frames: dict[tuple[int, int], Frame] = {}
        self._lines: dict[int, tuple[list[int], list[int]]] = {}

    def clear(self) -> None:
        self._frames.clear()
        self._lines.clear()

    def frame(self, code_id: int, offset: int) -> Frame:
        key = (code_id, offset)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = self._resolve(code_id, offset)
        return frame

    def _resolve(self, code_id: int, offset: int) -> Frame:
        if code_id == CODE_ID_TRUNCATED:
            return TRUNCATED_FRAME
        code = self._code_for_id(code_id) if code_id != CODE_ID_UNKNOWN else None
        if code is None:
            return UNKNOWN_FRAME
        name = getattr(code, "co_qualname", code.co_name)
        return Frame(name, code.co_filename, self._line(code_id, code, offset), code.co_firstlineno)

    def _line(self, code_id: int, code: CodeType, offset: int) -> int:
        if offset < 0:
            return code.co_firstlineno
        table = self._lines.get(code_id)
        if table is None:
            starts: list[int] = []
            lines: list[int] = []
            for start, _end, line in code.co_lines():
                starts.append(start)
                lines.append(line if line is not None else -1)
            table = self._lines[code_id] = (starts, lines)
        starts, lines = table
        i = bisect_right(starts, offset) - 1
        line = lines[i] if i >= 0 else -1
        # Offsets with no line of their own (e.g. cache entries) fall back to
        # the nearest earlier instruction that has one.
        while line < 0 and i > 0:
            i -= 1
            line = lines[i]
        return line if line > 0 else code.co_firstlineno


class Profile:
    """One process's samples for the current window; ``rotate`` seals it into a Chunk.

    Memory is bounded: past ``max_keys`` distinct keys, samples of new keys are
    counted as dropped; :attr:`full` says when to rotate early.
    """

    def __init__(
        self,
        resolver: FrameResolver,
        *,
        period_ns: int,
        max_keys: int = 100_000,
        clock: Callable[[], int] = time.time_ns,
        pid: int | None = None,
    ) -> None:
        self.resolver = resolver
        self.period_ns = period_ns
        self.window = Window(max_keys)
        self._clock = clock
        self.pid = os.getpid() if pid is None else pid
        self._seq = 0
        self._start_ns = clock()

    def __len__(self) -> int:
        return len(self.window)

    @property
    def full(self) -> bool:
        return len(self.window) >= self.window.max_keys

    def rotate(self) -> Chunk | None:
        """Seal the window into a Chunk (None if it holds nothing) and start the next."""
        end_ns = self._clock()
        rows, dropped = self.window.take()
        start_ns, self._start_ns = self._start_ns, end_ns
        if not rows and not dropped:
            return None
        # Equal labels held by distinct tuples are separate rows of the window.
        values: dict[tuple[bytes, Labels], list[int]] = {}
        for stack, thread_labels, link_labels, count, cpu, wall in rows:
            key = (stack, thread_labels + link_labels)
            sums = values.get(key)
            if sums is None:
                values[key] = [count, cpu, wall]
            else:
                sums[0] += count
                sums[1] += cpu
                sums[2] += wall
        frames: dict[Frame, int] = {}
        stacks: dict[bytes, tuple[int, ...]] = {}
        resolve = self.resolver.frame
        samples = []
        for (stack, labels), (count, cpu, wall) in values.items():
            indices = stacks.get(stack)
            if indices is None:
                out = []
                for code_id, offset in _PAIR.iter_unpack(stack):
                    frame = resolve(code_id, offset)
                    index = frames.get(frame)
                    if index is None:
                        index = frames[frame] = len(frames)
                    out.append(index)
                indices = stacks[stack] = tuple(out)
            samples.append(ChunkSample(indices, labels, count, cpu, wall))
        chunk = Chunk(
            pid=self.pid,
            seq=self._seq,
            start_ns=start_ns,
            end_ns=end_ns,
            period_ns=self.period_ns,
            frames=tuple(frames),
            samples=tuple(samples),
            dropped=dropped,
        )
        self._seq += 1
        return chunk
