"""The native sampler, driven one synchronous tick at a time on real threads."""

from __future__ import annotations

import contextvars
import signal
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from spanprof import _sampler
from spanprof.sampler import SpanprofWarning, choose_signal

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("spanprof_test_var")


def native_ids() -> dict[int, int]:
    return {t.ident: t.native_id for t in threading.enumerate()}


def names(sampler: _sampler.Sampler, stack: bytes) -> list[str]:
    out = []
    for cid, _off in struct.iter_unpack("=Ii", stack):
        code = sampler.code(cid)
        out.append(code.co_name if code is not None else f"<{cid}>")
    return out


@contextmanager
def thread(target: Callable[[threading.Event], None]) -> Iterator[threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=target, args=(stop,), daemon=True)
    t.start()
    try:
        yield t
    finally:
        stop.set()
        t.join()


def parked_at_depth(depth: int, ready: threading.Event) -> Callable[[threading.Event], None]:
    def level(n: int, stop: threading.Event) -> None:
        if n == 0:
            VAR.set("parked-value")
            ready.set()
            stop.wait()
        else:
            level(n - 1, stop)

    return lambda stop: level(depth - 1, stop)


def busy_in_hot_loop(stop: threading.Event) -> None:
    VAR.set("running-value")
    while not stop.is_set():
        pass


@pytest.fixture
def sampler() -> Iterator[_sampler.Sampler]:
    s = _sampler.Sampler(max_depth=128, signum=_sampler.free_signal())
    yield s
    s.close()


def by_ident(samples: list, ident: int) -> tuple:
    (found,) = [s for s in samples if s[0] == ident]
    return found


def test_parked_thread_is_captured_with_its_stack_and_context(sampler) -> None:
    ready = threading.Event()
    with thread(parked_at_depth(10, ready)) as t:
        ready.wait()
        samples = sampler.tick(VAR, native_ids())
        ident, native_id, cpu, wall, stack, value, in_place, when, count = by_ident(
            samples, t.ident
        )
        assert native_id == t.native_id
        assert names(sampler, stack)[:2] == ["wait", "wait"]  # Event.wait -> Condition.wait
        assert names(sampler, stack).count("level") == 10
        assert value == "parked-value"
        assert cpu >= 0 and wall >= 0
        assert abs(when - time.time_ns()) < 5e9  # a wall-clock capture time
        assert count == 1
    # the caller never samples itself
    assert threading.get_ident() not in [s[0] for s in samples]


def test_running_thread_is_captured_in_place(sampler) -> None:
    assert sampler.stats()["signal"] != 0, "tests expect a free real-time signal"
    with thread(busy_in_hot_loop) as t:
        in_place = []
        for _ in range(20):
            time.sleep(0.01)
            _, _, cpu, _, stack, value, captured, _, _ = by_ident(
                sampler.tick(VAR, native_ids()), t.ident
            )
            if captured:
                in_place.append((names(sampler, stack)[0], value, cpu))
        assert in_place, sampler.stats()
        assert {leaf for leaf, _, _ in in_place} <= {"busy_in_hot_loop", "is_set"}
        assert {value for _, value, _ in in_place} == {"running-value"}
        assert all(cpu > 0 for _, _, cpu in in_place)
    assert sampler.stats()["in_place"] >= len(in_place)


def run_loop(sampler: _sampler.Sampler, seconds: float, *args: object) -> None:
    """sampler.run(*args) on a thread for ``seconds``."""
    loop = threading.Thread(target=sampler.run, args=args, name="spanprof-test")
    loop.start()
    time.sleep(seconds)
    sampler.stop()
    loop.join()


def run_for(sampler: _sampler.Sampler, seconds: float, interval: float, ident: int) -> list:
    """run() for ``seconds``; the samples of thread ``ident``."""
    mine: list = []

    def sink(samples: list) -> None:
        mine.extend(s for s in samples if s[0] == ident)

    run_loop(sampler, seconds, sink, interval, VAR, native_ids)
    return mine


@pytest.mark.parametrize("cpu_timers", [True, False], ids=["cpu-timer", "ticker-signal"])
def test_run_captures_running_threads_in_place(cpu_timers: bool) -> None:
    """A running thread is sampled on its own CPU, by its CPU timer or, where perf
    events are not allowed, by the ticker's signals; its CPU is whole either way."""
    sampler = _sampler.Sampler(signum=_sampler.free_signal(), cpu_timers=cpu_timers)
    try:
        with thread(busy_in_hot_loop) as t:
            before = _sampler.thread_cpu_ns(t.native_id)
            wall0 = time.monotonic()
            mine = run_for(sampler, 0.6, 0.005, t.ident)
            used = _sampler.thread_cpu_ns(t.native_id) - before
            share = used / 1e9 / (time.monotonic() - wall0)  # < 1 on a busy machine
        stats = sampler.stats()
    finally:
        sampler.close()
    if cpu_timers and stats["timer_errno"]:
        pytest.skip(f"perf events are not allowed here (errno {stats['timer_errno']})")
    in_place = [s for s in mine if s[6]]
    assert len(in_place) > 0.5 * len(mine), stats
    assert {names(sampler, s[4])[0] for s in in_place} <= {"busy_in_hot_loop", "is_set"}
    assert {s[5] for s in in_place} == {"running-value"}
    # the samples' CPU is the thread's (from the first sight on), within a last interval
    assert sum(s[2] for s in mine) == pytest.approx(used, rel=0.15)
    # each sample stands for about one interval of CPU (jittered 0.5-1.5x): of the
    # thread's CPU with its timer; with the ticker, of wall time, the thread getting
    # `share` of a CPU meanwhile
    cpu = sorted(s[2] for s in in_place)
    low = 0.004 if cpu_timers else 0.004 * min(1.0, share)
    assert low < cpu[len(cpu) // 2] / 1e9 < 0.0065, (cpu, share)
    if cpu_timers:
        # the timer samples per interval of CPU, while clocks are read every WALL_TICKS
        assert len(in_place) > 2 * stats["ticks"], stats
        assert stats["timers"] == 0  # dropped when run() returned
        if not stats["timer_user_only"]:
            # what the captures cost the thread is measured (for the CPU budget): more
            # than nothing, less than the periods themselves
            assert 0 < stats["capture_cost_ns"] < 0.5 * 0.005e9 * len(in_place), stats
    else:
        assert len(in_place) <= stats["ticks"], stats


def busy_with(value: str) -> Callable[[threading.Event], None]:
    def work(stop: threading.Event) -> None:
        VAR.set(value)
        while not stop.is_set():
            pass

    return work


def test_run_counts_into_a_window_linking_captures_taken_while_the_span_ran() -> None:
    """With a window, run() asks its callback once per batch for the labels of
    the distinct context values and threads, and counts every sample in C: a
    value's labels go to the captures taken in its [start, end), none to others;
    a thread whose labels are None is left out."""
    from spanprof._profile import Window

    window = Window()
    now = time.time_ns()
    spans = {  # value -> (its labels, start, end): as a linker gives them
        "open": ((("span_name", "open"),), 0, None),
        "ended": ((("span_name", "ended"),), 0, now),  # ended before sampling began
        "later": ((("span_name", "later"),), now + 10**12, None),  # starts after it
    }
    asked: list[tuple[list, list]] = []
    labels_of: dict[int, tuple] = {}

    def callback(values: list, threads: list) -> tuple[list, list]:
        asked.append((values, threads))
        assert len(set(map(id, values))) == len(values)  # distinct
        return (
            [spans.get(v) for v in values],
            [labels_of.get(ident) for ident, _tid in threads],
        )

    sampler = _sampler.Sampler(signum=_sampler.free_signal())
    try:
        with (
            thread(busy_with("open")) as a,
            thread(busy_with("ended")) as b,
            thread(busy_with("later")) as c,
            thread(busy_with("open")) as skipped,
        ):
            for t in (a, b, c):
                labels_of[t.ident] = (("thread.id", t.ident),)
            run_loop(sampler, 0.6, callback, 0.005, VAR, native_ids, None, window)
    finally:
        sampler.close()
    rows, dropped = window.take()
    assert dropped == 0 and len(window) == 0
    assert asked and all(len(threads) == len(set(threads)) for _, threads in asked)
    seen = {(thread_labels[0][1], link) for _stack, thread_labels, link, *_ in rows}
    ticks = {ident: 0 for ident in labels_of}
    for _stack, thread_labels, _link, count, _cpu, _wall in rows:
        ticks[thread_labels[0][1]] += count
    assert seen == {(a.ident, spans["open"][0]), (b.ident, ()), (c.ident, ())}
    assert skipped.ident not in ticks  # its labels were None
    assert min(ticks.values()) > 10, ticks  # each thread sampled many times


def test_a_thread_that_ran_and_now_waits_is_captured_by_the_ticker_without_a_signal() -> None:
    """A thread that ran since the last tick but is not running now (it sleeps,
    waits for a lock or the GIL) is read by the ticker itself, at the tick, with
    no signal to wake it: its CPU clock is the same before and after the read."""
    sampler = _sampler.Sampler(signum=_sampler.free_signal())

    def nap(stop: threading.Event) -> None:
        time.sleep(0.02)  # C: nap is the leaf Python frame

    def bursts(stop: threading.Event) -> None:
        VAR.set("napping-value")
        while not stop.is_set():
            end = time.thread_time() + 0.001
            while time.thread_time() < end:
                pass
            nap(stop)

    try:
        with thread(bursts) as t:
            mine = run_for(sampler, 0.8, 0.005, t.ident)
        stats = sampler.stats()
    finally:
        sampler.close()
    still = [s for s in mine if s[6] and names(sampler, s[4])[0] == "nap"]
    assert len(still) >= 10, stats  # ~40 naps, most of them found asleep
    assert stats["still_captures"] >= len(still)
    assert {s[5] for s in still} == {"napping-value"}  # its context, read by the ticker
    assert all(names(sampler, s[4])[:2] == ["nap", "bursts"] for s in still)


def test_a_stale_pointer_is_read_safely_whether_mapped_or_not() -> None:
    """Captured pointers may point at freed memory by the time they are resolved:
    the sampler reads through them with a guard (a fault returns an error)."""
    import ctypes
    import mmap

    sampler = _sampler.Sampler(signum=_sampler.free_signal())  # installs the guard
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE)
        buf = ctypes.c_char.from_buffer(page)
        address = ctypes.addressof(buf)
        del buf
        assert _sampler._readable(address)
        page.close()  # unmapped: reading there faults
        assert not _sampler._readable(address)
        assert not _sampler._readable(address)  # and again: the fault left no signal blocked
        assert not _sampler._readable(8)  # not a user-space pointer at all
        assert _sampler._readable(id(page))
    finally:
        sampler.close()


def test_hundreds_of_code_objects_keep_their_ids(sampler) -> None:
    """The code map grows (it starts small, so no page of it is read before it
    is written): ids stay right through its growth."""
    codes: list[int] = []
    for round_ in range(6):  # 600 distinct functions: the map doubles twice
        names_ = [f"fn_{round_}_{i}" for i in range(100)]
        src = "\n".join(
            f"def {name}(ev, stop):\n    return {nxt}(ev, stop)"
            for name, nxt in zip(names_, names_[1:] + ["park"], strict=True)
        )
        ns: dict = {}
        exec(src + "\ndef park(ev, stop):\n    ev.set()\n    stop.wait()\n", ns)
        ready = threading.Event()
        first = ns[names_[0]]
        with thread(lambda stop, first=first, ready=ready: first(ready, stop)) as t:
            ready.wait()
            stack = by_ident(sampler.tick(None, native_ids()), t.ident)[4]
        got = names(sampler, stack)
        start = got.index("park")  # under Event.wait's frames
        assert got[start : start + 101] == ["park", *reversed(names_)], got[:5]
        codes.append(sampler.stats()["codes"])
    # Each round adds its 101 functions, nothing else: the frames every round
    # shares (the thread's bootstrap, Event.wait) kept their ids as the map grew.
    assert [b - a for a, b in zip(codes, codes[1:], strict=False)] == [101] * 5


def test_the_ticker_never_preempts_the_application_at_wake_up() -> None:
    """SCHED_BATCH: a woken ticker waits for an idle CPU or the end of the running
    thread's slice instead of preempting it (it keeps its fair share)."""
    import os

    sampler = _sampler.Sampler(signum=_sampler.free_signal())
    policies: list[int] = []

    def sink(samples: list) -> None:
        tid = sampler.ticker_native_id()
        if tid and not policies:
            policies.append(os.sched_getscheduler(tid))

    try:
        with thread(busy_in_hot_loop):
            run_loop(sampler, 0.3, sink, 0.005, None, native_ids)
    finally:
        sampler.close()
    assert policies == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the application's own is untouched


def test_run_keeps_no_reference_to_what_its_callback_returns() -> None:
    import sys

    returned = object()
    before = sys.getrefcount(returned)
    calls: list[int] = []

    def sink(samples: list) -> object:
        calls.append(len(samples))
        return returned

    sampler = _sampler.Sampler(signum=_sampler.free_signal())
    try:
        with thread(busy_in_hot_loop):
            run_loop(sampler, 0.3, sink, 0.005, None, native_ids)
    finally:
        sampler.close()
    assert calls
    assert sys.getrefcount(returned) == before


def queued_signals() -> int:
    """Real-time signals queued for this user (SigQ), all processes together.

    Per user, not per process: another process of the same user queueing signals
    meanwhile (e.g. a second test suite run alongside) counts too.
    """
    with open("/proc/self/status") as status:
        line = next(ln for ln in status if ln.startswith("SigQ:"))
    return int(line.split()[1].split("/")[0])


@pytest.mark.parametrize("cpu_timers", [True, False], ids=["cpu-timer", "ticker-signal"])
def test_a_thread_that_blocks_our_signal_is_left_alone(cpu_timers: bool) -> None:
    """Its signals would pile up in the queue (and with a perf event's F_SETSIG a
    full queue falls back to SIGIO, which kills): it is captured under the GIL,
    or by the ticker while it waits for the GIL (no signal either way)."""
    signum = _sampler.free_signal()
    sampler = _sampler.Sampler(signum=signum, cpu_timers=cpu_timers)

    def blocked_spin(stop: threading.Event) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        while not stop.is_set():
            pass

    try:
        before = queued_signals()
        with thread(blocked_spin) as t:
            mine = run_for(sampler, 1.0, 0.002, t.ident)
            pending = queued_signals() - before
            used = _sampler.thread_cpu_ns(t.native_id)
        stats = sampler.stats()
    finally:
        sampler.close()  # (its pending signal is discarded: SIG_IGN)
    assert pending <= 4, (pending, stats)  # not one per interval of its CPU (hundreds)
    assert mine  # sampled
    assert sum(1 for s in mine if s[6]) <= stats["still_captures"]  # no handler ran
    assert {names(sampler, s[4])[0] for s in mine} <= {"blocked_spin", "is_set"}
    assert sum(s[2] for s in mine) == pytest.approx(used, rel=0.3)


def test_cpu_deltas_add_up_to_thread_cpu(sampler) -> None:
    def burn(stop: threading.Event) -> None:
        while not stop.is_set():
            pass

    total = 0
    with thread(burn) as t:
        before = _sampler.thread_cpu_ns(t.native_id)
        sampler.tick(None, native_ids())  # first sight: baseline
        for _ in range(10):
            time.sleep(0.02)
            total += by_ident(sampler.tick(None, native_ids()), t.ident)[2]
        used = _sampler.thread_cpu_ns(t.native_id) - before
    # the ticks' readings lie between the two outside readings
    assert 0 < total <= used
    assert total == pytest.approx(used, rel=0.2)


def test_deep_stack_keeps_leaf_side_and_marks_the_cut() -> None:
    s = _sampler.Sampler(max_depth=5, signum=0)
    try:
        ready = threading.Event()
        with thread(parked_at_depth(20, ready)) as t:
            ready.wait()
            stack = by_ident(s.tick(None, native_ids()), t.ident)[4]
            frames = names(s, stack)
            assert frames[:2] == ["wait", "wait"]
            assert len(frames) == 6
            assert frames[-1] == f"<{_sampler.CODE_ID_TRUNCATED}>"
    finally:
        s.close()


def test_dead_thread_clock_is_an_error_not_a_crash() -> None:
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    time.sleep(0.05)  # let the OS reap it
    with pytest.raises(OSError):
        _sampler.thread_cpu_ns(t.native_id)


def test_signal_in_use_is_refused_and_falls_back_with_a_warning() -> None:
    signum = signal.SIGRTMAX - 1
    previous = signal.signal(signum, lambda *a: None)
    try:
        assert not _sampler.signal_is_free(signum)
        with pytest.raises(OSError, match="already in use"):
            _sampler.Sampler(signum=signum)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert choose_signal(signum) == 0
        assert any(issubclass(w.category, SpanprofWarning) for w in caught)
        assert _sampler.free_signal() != signum
    finally:
        signal.signal(signum, previous)


def test_closed_sampler_refuses_to_tick() -> None:
    s = _sampler.Sampler(signum=_sampler.free_signal())
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError):
        s.tick(None, native_ids())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        _sampler.Sampler(max_depth=0)
    with pytest.raises(ValueError):
        _sampler.Sampler(signum=signal.SIGUSR1)


def test_parked_threads_are_not_signalled_again_and_again(sampler) -> None:
    """Our own handler advances a thread's clock; that must not make it look running.

    This thread parks in time.sleep: a signal interrupts the sleep, which Python
    resumes (PEP 475), so a sampler fooled by its own handler would signal it at
    every tick.
    """
    me = threading.get_ident()
    seen: list[bool] = []

    def sink(samples: list) -> None:
        seen.extend(s[6] for s in samples if s[0] == me)

    run_loop(sampler, 0.5, sink, 0.005, None, native_ids)
    # run() reads clocks every WALL_TICKS intervals (CPU timers sample running threads)
    assert len(seen) > 0.8 * 0.5 / (0.005 * _sampler.WALL_TICKS)
    # Only around its first sight (its clock advanced as it parked) and the end
    # (it ran to call stop()) may this thread have been signalled.
    assert seen[5:-5].count(True) == 0, seen


def test_hundreds_of_parked_threads_are_read_in_turns_with_weighted_samples(sampler) -> None:
    """Beyond 16 parked threads each is read every few ticks; its samples carry the
    ticks they stand for, and its wall time is whole, so totals stay right."""
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(200)]
    for t in threads:
        t.start()
    idents = {t.ident for t in threads}
    counts: dict[int, int] = {}
    walls: dict[int, int] = {}
    emitted = [0]

    def sink(samples: list) -> None:
        for s in samples:
            if s[0] in idents:
                counts[s[0]] = counts.get(s[0], 0) + s[8]
                walls[s[0]] = walls.get(s[0], 0) + s[3]
                emitted[0] += 1

    try:
        run_loop(sampler, 1.0, sink, 0.005, None, native_ids)
    finally:
        stop.set()
        for t in threads:
            t.join()
    ticks = sampler.stats()["ticks"]
    assert ticks > 0.5 * 1.0 / (0.005 * _sampler.WALL_TICKS)  # clocks read every WALL_TICKS
    assert set(counts) == idents
    # each thread: the ticks covered add up to (nearly) all ticks, read ~ every 4th tick
    stride = -(-len(threads) // 16)
    for ident in idents:
        assert ticks - 2 * stride <= counts[ident] <= ticks
    assert emitted[0] < len(threads) * ticks / 2  # far fewer samples than threads x ticks
    # wall time per thread is whole: what the samples carry ~ the time sampled
    wall = sorted(walls.values())
    assert wall[0] > 0.8 * wall[-1]
