"""The profile model, driven with synthetic packed stacks and a fake clock."""

from __future__ import annotations

import struct

from spanprof.profile import (
    CODE_ID_TRUNCATED,
    CODE_ID_UNKNOWN,
    TRUNCATED_FRAME,
    UNKNOWN_FRAME,
    FrameResolver,
    Profile,
)


def outer() -> None:
    x = 1
    inner()
    return x


def inner() -> None:
    y = 2  # a line of its own
    return y


CODES = {2: outer.__code__, 3: inner.__code__}


def pack(*frames: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("=Ii", cid, off) for cid, off in frames)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def offset_of_line(code, line: int) -> int:
    return next(start for start, _end, ln in code.co_lines() if ln == line)


def make_profile(**kw) -> tuple[Profile, FakeClock]:
    clock = FakeClock()
    return Profile(FrameResolver(CODES.get), period_ns=10_000_000, clock=clock, pid=42, **kw), clock


def add(
    profile: Profile, stack: bytes, labels: tuple, cpu: int, wall: int, link: tuple = ()
) -> bool:
    """Count one sample as the sampler's resolver does (True: dropped)."""
    return profile.window.add(stack, labels, link, cpu, wall)


def test_samples_aggregate_by_stack_and_labels() -> None:
    profile, clock = make_profile()
    a = pack((3, -1), (2, -1))
    b = pack((2, -1))
    t1 = (("thread.id", 1),)
    t2 = (("thread.id", 2),)
    add(profile, a, t1, 10, 100)
    add(profile, a, t1, 5, 50)
    add(profile, a, t2, 7, 70)
    add(profile, b, t1, 1, 10)
    clock.now = 61_000
    chunk = profile.rotate()
    assert chunk is not None
    assert (chunk.pid, chunk.seq, chunk.start_ns, chunk.end_ns) == (42, 0, 1_000, 61_000)
    got = {
        (tuple(chunk.frames[i].function for i in s.stack), s.labels): (s.count, s.cpu_ns, s.wall_ns)
        for s in chunk.samples
    }
    assert got == {
        (("inner", "outer"), t1): (2, 15, 150),
        (("inner", "outer"), t2): (1, 7, 70),
        (("outer",), t1): (1, 1, 10),
    }
    # frames are shared, not repeated per sample
    assert len(chunk.frames) == 2


def test_rotation_starts_a_new_window() -> None:
    profile, clock = make_profile()
    add(profile, pack((2, -1)), (), 1, 1)
    first = profile.rotate()
    assert first is not None and first.seq == 0
    assert profile.rotate() is None  # nothing sampled since
    clock.now = 5_000
    add(profile, pack((2, -1)), (), 3, 3)
    second = profile.rotate()
    assert second is not None
    assert second.seq == 1
    assert second.start_ns == first.end_ns
    assert [s.cpu_ns for s in second.samples] == [3]


def test_lines_resolved_from_offsets() -> None:
    profile, _ = make_profile()
    line = inner.__code__.co_firstlineno + 1
    off = offset_of_line(inner.__code__, line)
    add(profile, pack((3, off), (2, -1)), (), 1, 1)
    chunk = profile.rotate()
    leaf, caller = (chunk.frames[i] for i in chunk.samples[0].stack)
    assert leaf.function == "inner"
    assert leaf.line == line
    assert leaf.start_line == inner.__code__.co_firstlineno
    assert leaf.filename == __file__
    # unknown offset: the function's first line
    assert caller.line == outer.__code__.co_firstlineno


def test_unknown_and_truncated_frames() -> None:
    profile, _ = make_profile()
    add(profile, pack((99, 0), (CODE_ID_UNKNOWN, -1), (CODE_ID_TRUNCATED, -1)), (), 1, 1)
    chunk = profile.rotate()
    frames = [chunk.frames[i] for i in chunk.samples[0].stack]
    assert frames == [UNKNOWN_FRAME, UNKNOWN_FRAME, TRUNCATED_FRAME]


def test_memory_is_bounded_by_max_keys() -> None:
    profile, _ = make_profile(max_keys=3)
    for i in range(3):
        assert not profile.full
        assert add(profile, pack((2, i)), (), 1, 1) is False
    assert profile.full  # asks for rotation
    assert add(profile, pack((2, 9)), (), 1, 1) is True  # a new key is dropped, counted
    assert add(profile, pack((2, 0)), (), 1, 1) is False  # an existing key still counts
    assert len(profile) == 3
    chunk = profile.rotate()
    assert chunk.dropped == 1
    assert sum(s.count for s in chunk.samples) == 4


def test_resolver_cache_cleared_with_code_table() -> None:
    table = dict(CODES)
    resolver = FrameResolver(table.get)
    assert resolver.frame(2, -1).function == "outer"
    table[2] = inner.__code__  # the sampler reset its table and reused the id
    assert resolver.frame(2, -1).function == "outer"  # cached
    resolver.clear()
    assert resolver.frame(2, -1).function == "inner"


def test_equal_keys_held_by_distinct_objects_make_one_sample() -> None:
    """The window compares labels by identity (as the pipeline reuses its tuples)
    and stacks by content; rotation merges what is equal."""
    profile, _ = make_profile()
    thread = (("thread.id", 1),)
    link = (("span_id", "00000000000000aa"),)
    add(profile, pack((3, -1), (2, -1)), thread, 1, 10, link=link)
    add(profile, pack((3, -1), (2, -1)), thread, 2, 20, link=link)  # other bytes, same content
    add(profile, pack((3, -1), (2, -1)), tuple(list(thread)), 4, 40, link=tuple(list(link)))
    add(profile, pack((3, -1), (2, -1)), thread, 8, 80)  # not linked: a sample of its own
    assert len(profile) == 3
    chunk = profile.rotate()
    got = {s.labels: (s.count, s.cpu_ns, s.wall_ns) for s in chunk.samples}
    assert got == {thread + link: (3, 7, 70), thread: (1, 8, 80)}
