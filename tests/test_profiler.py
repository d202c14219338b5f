"""The Python API: start/stop, the context manager, configuration errors, fork, exporters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest
from pprof_utils import load_dir

import spanprof
from spanprof.model import Chunk


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_context_manager_writes_a_profile_of_this_process(tmp_path: Path) -> None:
    with spanprof.Profiler(output_dir=str(tmp_path), interval=0.005):
        worker = threading.Thread(target=spin, args=(0.3,), name="worker")
        worker.start()
        worker.join()
    files = list(tmp_path.glob(f"spanprof-{os.getpid()}-*.pprof"))
    assert len(files) == 1
    samples = load_dir(tmp_path)
    mine = [s for s in samples if s.labels.get("thread.name") == "worker"]
    assert sum(s.cpu_ns for s in mine if "spin" in s.functions) / 1e9 == pytest.approx(0.3, rel=0.1)
    # spanprof's own threads are not in the profile
    names = {s.labels.get("thread.name") for s in samples}
    assert not any(str(n).startswith("spanprof-") for n in names)


def test_spanprofs_threads_carry_names_the_os_tools_show(tmp_path: Path) -> None:
    """top -H, perf and /proc tell spanprof's threads from the application's."""

    def os_names() -> list[str]:
        tasks = Path("/proc/self/task")
        return sorted((tasks / t / "comm").read_text().strip() for t in os.listdir(tasks))

    before = os_names()
    with spanprof.Profiler(output_dir=str(tmp_path)):
        time.sleep(0.2)
        during = os_names()
    assert sorted(set(during) - set(before)) == [
        "spanprof-export",
        "spanprof-resolv",
        "spanprof-ticker",
    ]
    assert during.count("spanprof-ticker") == 1
    assert os_names() == before  # all gone at stop; the process keeps its name


@pytest.mark.parametrize("cpu_timers", [True, False])
def test_cpu_timers_option_picks_how_running_threads_are_sampled(
    tmp_path: Path, cpu_timers: bool
) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=lambda: stop.wait(0.4) or spin(0.3), name="worker")
    with spanprof.Profiler(output_dir=str(tmp_path), interval=0.005, cpu_timers=cpu_timers) as p:
        worker.start()  # after start: sampled from its first instructions
        time.sleep(0.5)  # the timers are armed once the thread has been seen
        stats = p.stats()
        worker.join()
    if cpu_timers and stats["timer_errno"]:
        pytest.skip(f"perf events are not allowed here (errno {stats['timer_errno']})")
    assert (stats["timers"] > 0) == cpu_timers, stats
    mine = [s for s in load_dir(tmp_path) if s.labels.get("thread.name") == "worker"]
    assert sum(s.cpu_ns for s in mine if "spin" in s.functions) / 1e9 == pytest.approx(0.3, rel=0.1)


def test_start_stop_is_idempotent_and_flushes(tmp_path: Path) -> None:
    profiler = spanprof.start(output_dir=str(tmp_path), window=3600)
    assert spanprof.active() is profiler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert spanprof.start(output_dir=str(tmp_path)) is profiler
    assert caught, "a second start() warns"
    spin(0.05)
    spanprof.stop()
    spanprof.stop()
    assert spanprof.active() is None
    assert len(list(tmp_path.glob("*.pprof"))) == 1  # the open window was flushed


def test_windows_rotate_into_numbered_files(tmp_path: Path) -> None:
    with spanprof.Profiler(output_dir=str(tmp_path), window=0.2, interval=0.005):
        t = threading.Thread(target=spin, args=(0.7,))
        t.start()
        t.join()
    files = sorted(p.name for p in tmp_path.glob("*.pprof"))
    assert len(files) >= 3
    assert files[0] == f"spanprof-{os.getpid()}-00000.pprof"
    assert files[1] == f"spanprof-{os.getpid()}-00001.pprof"


def stored_spans(directory: Path) -> int:
    import sqlite3

    db = sqlite3.connect(f"file:{directory / 'spanprof.db'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])
    finally:
        db.close()


def test_spans_are_written_in_batches_not_every_second(tmp_path: Path, monkeypatch) -> None:
    """Each write takes the GIL from the app many times: spans wait for the
    window, a period, or a batch's worth of them (here 20), and none is lost."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from spanprof import profiler as profiler_mod

    monkeypatch.setattr(profiler_mod, "_SPAN_WRITE_EVERY", 3600.0)
    monkeypatch.setattr(profiler_mod, "_SPAN_WRITE_AT", 20)
    with spanprof.Profiler(output_dir=str(tmp_path), window=3600) as profiler:
        provider = TracerProvider()
        provider.add_span_processor(profiler._spans)
        tracer = provider.get_tracer("test")
        for i in range(5):
            tracer.start_span(f"few {i}", context=Context()).end()
        time.sleep(1.5)  # the exporter wakes every second
        assert stored_spans(tmp_path) == 0  # not yet: too few
        for i in range(20):
            tracer.start_span(f"many {i}", context=Context()).end()
        deadline = time.monotonic() + 5
        while stored_spans(tmp_path) < 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stored_spans(tmp_path) == 25  # a batch's worth: written
        tracer.start_span("last", context=Context()).end()
    assert stored_spans(tmp_path) == 26  # the rest at stop


def test_the_exporter_sleeps_until_it_has_work(tmp_path: Path, monkeypatch) -> None:
    """An idle profiler costs its wake-ups (~1 ms of CPU each on a shared VM): the
    exporter waits for a window, for spans to be due, or for the resolver's word
    that many spans wait, and does not poll."""
    import queue

    from spanprof import profiler as profiler_mod

    monkeypatch.setattr(profiler_mod, "_SPAN_WRITE_EVERY", 3600.0)
    waits: list[float | None] = []
    real_get = queue.Queue.get

    def get(self: queue.Queue, block: bool = True, timeout: float | None = None) -> object:
        if threading.current_thread().name == "spanprof-exporter":
            waits.append(timeout)
        return real_get(self, block, timeout)

    monkeypatch.setattr(queue.Queue, "get", get)
    with spanprof.Profiler(output_dir=str(tmp_path), window=3600):
        time.sleep(2.5)
    # asleep until spans are due (not a poll), woken only by stop: its last window, the end
    assert 1 <= len(waits) <= 2 and all(t is not None and t > 3000 for t in waits)


def test_bad_options_fail_at_start_with_one_line(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(spanprof.ConfigError) as err:
        spanprof.start(interval="fast")
    assert "\n" not in str(err.value) and "interval" in str(err.value)
    with pytest.raises(spanprof.ConfigError, match="unknown"):
        spanprof.start(intervall=0.01)
    monkeypatch.setenv("SPANPROF_MAX_DEPTH", "0")
    with pytest.raises(spanprof.ConfigError, match="SPANPROF_MAX_DEPTH"):
        spanprof.start()
    monkeypatch.delenv("SPANPROF_MAX_DEPTH")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(spanprof.ConfigError, match="cannot be created"):
        spanprof.start(output_dir=str(blocker / "sub"))
    assert spanprof.active() is None


def test_options_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPANPROF_OUTPUT_DIR", str(tmp_path / "env-out"))
    monkeypatch.setenv("SPANPROF_SIGNAL", "off")
    profiler = spanprof.start()
    try:
        assert profiler.config.output_dir == str(tmp_path / "env-out")
        assert profiler.config.signal is None
        assert profiler.stats()["signal"] == 0  # GIL-only capture as asked
    finally:
        spanprof.stop()
    assert list((tmp_path / "env-out").glob("*.pprof"))


class Exploding:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, chunk: Chunk) -> None:
        self.calls += 1
        raise RuntimeError("collector unreachable")

    def shutdown(self) -> None:
        raise RuntimeError("still unreachable")


def test_failing_exporter_never_reaches_the_app(tmp_path: Path) -> None:
    bad = Exploding()
    with spanprof.Profiler(output_dir=str(tmp_path), exporters=[bad], interval=0.005):
        spin(0.05)
    assert bad.calls == 1
    assert len(list(tmp_path.glob("*.pprof"))) == 1  # the other exporter still wrote


def test_a_stuck_exporter_does_not_hang_stop(tmp_path: Path, monkeypatch) -> None:
    """An exporter blocked on an unreachable collector fills the queue; stop()
    still returns within its timeout (the app's exit never hangs on us)."""
    from spanprof import profiler as profiler_mod

    monkeypatch.setattr(profiler_mod, "_EXPORT_QUEUE", 2)  # full after a few windows
    release = threading.Event()

    class Stuck:
        def export(self, chunk: Chunk) -> None:
            release.wait(30)

        def shutdown(self) -> None:
            pass

    profiler = spanprof.Profiler(
        output_dir=str(tmp_path), exporters=[Stuck()], interval=0.005, window=0.1
    ).start()
    try:
        deadline = time.monotonic() + 20
        while profiler.exports_dropped == 0 and time.monotonic() < deadline:
            spin(0.05)  # windows pile up behind the stuck one
        assert profiler.exports_dropped > 0  # the queue is full
        started = time.monotonic()
        profiler.stop(timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        release.set()
    profiler._exporter_thread.join(10)  # once unstuck, it drains the queue and ends
    assert not profiler._exporter_thread.is_alive()


def test_forked_child_profiles_itself(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(spanprof.__file__).parents[1])!r})
        import spanprof
        def spin(s):
            end = time.thread_time() + s
            while time.thread_time() < end:
                pass
        spanprof.start(output_dir={str(tmp_path)!r}, interval=0.005)
        pid = os.fork()
        if pid == 0:
            spin(0.2)
            spanprof.stop()
            os._exit(0)
        spin(0.1)
        _, status = os.waitpid(pid, 0)
        print(pid, status)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    child, status = proc.stdout.split()
    assert status == "0"
    pids = {p.name.split("-")[1] for p in tmp_path.glob("*.pprof")}
    assert child in pids and len(pids) == 2


def test_sigterm_flushes_the_open_window_then_terminates(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(Path(spanprof.__file__).parents[1])!r})
        import spanprof
        spanprof.start(output_dir={str(tmp_path)!r}, window=3600, interval=0.005)
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        print("not reached")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -15, proc.stderr  # still dies of SIGTERM
    assert "not reached" not in proc.stdout
    (path,) = tmp_path.glob("*.pprof")
    assert sum(s.cpu_ns for s in load_dir(tmp_path)) > 0


def test_an_application_sigterm_handler_is_left_alone(tmp_path: Path) -> None:
    import signal

    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        spanprof.start(output_dir=str(tmp_path))
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        spanprof.stop()
        signal.signal(signal.SIGTERM, previous)


def native_tasks() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def settled_tasks(expected: set[str] | None = None) -> set[str]:
    """The process's OS threads once exiting ones are gone.

    ``Thread.join`` returns a moment before the OS thread has exited, so poll
    (bounded) until every task is a live Python thread, or ``expected``.
    """
    deadline = time.monotonic() + 5
    while True:
        tasks = native_tasks()
        want = (
            expected if expected is not None else {str(t.native_id) for t in threading.enumerate()}
        )
        if tasks == want or time.monotonic() > deadline:
            return tasks
        time.sleep(0.01)


def test_stop_leaves_no_thread_behind_not_even_native_ones(tmp_path: Path) -> None:
    before = settled_tasks()
    python_threads = set(threading.enumerate())
    with spanprof.Profiler(output_dir=str(tmp_path), interval=0.005):
        during = native_tasks()
        spin(0.05)
    # sampler (Python), ticker (native) and exporter threads ran, and are gone
    assert len(during - before) == 3
    assert settled_tasks(before) == before
    assert set(threading.enumerate()) == python_threads
