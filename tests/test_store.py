"""The local store: written as the run goes, read read-only, refused when unusable."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from workload_runs import clean_env

from spanprof.model import Chunk, ChunkSample, Frame
from spanprof.store import SCHEMA_VERSION, StoreError, StoreReader, StoreWriter, store_path

MAIN = Frame("main", "app.py", 10, 1)
HANDLE = Frame("handle", "app.py", 20, 15)
PRICE = Frame("price", "pricing.py", 5, 3)
TRACE = "ab" * 16
ROOT, CHILD = "1" * 16, "2" * 16


def chunk(seq: int = 0, pid: int = 7) -> Chunk:
    request = (
        ("thread.id", 1),
        ("thread.native_id", 101),
        ("thread.name", "request"),
        ("trace_id", TRACE),
        ("span_id", ROOT),
        ("span_name", "GET /price"),
        ("local_root_span_id", ROOT),
        ("trace_endpoint", "GET /price"),
        ("trace_type", "server"),
    )
    worker = (
        ("thread.id", 2),
        ("thread.native_id", 102),
        ("thread.name", "pricing_0"),
        ("trace_id", TRACE),
        ("span_id", CHILD),
        ("span_name", "price"),
        ("local_root_span_id", ROOT),
        ("trace_endpoint", "GET /price"),
        ("trace_type", "server"),
    )
    idle = (("thread.id", 3), ("thread.native_id", 103), ("thread.name", "idle"))
    return Chunk(
        pid=pid,
        seq=seq,
        start_ns=seq * 1000,
        end_ns=seq * 1000 + 1000,
        period_ns=10,
        frames=(MAIN, HANDLE, PRICE),
        samples=(
            ChunkSample((1, 0), request, 2, 20_000_000, 30_000_000),
            ChunkSample((2, 1, 0), worker, 5, 50_000_000, 50_000_000),
            ChunkSample((0,), idle, 1, 1_000_000, 90_000_000),
        ),
    )


SPANS = [
    {
        "trace_id": TRACE,
        "span_id": ROOT,
        "parent_span_id": None,
        "name": "GET /price",
        "kind": "server",
        "start_ns": 1_000,
        "end_ns": 500_000_000,
        "status": "OK",
        "attributes": {"http.route": "/price"},
        "pid": 7,
    },
    {
        "trace_id": TRACE,
        "span_id": CHILD,
        "parent_span_id": ROOT,
        "name": "price",
        "kind": "internal",
        "start_ns": 2_000,
        "end_ns": 400_000_000,
        "status": "UNSET",
        "attributes": {},
        "pid": 7,
    },
]


def write_store(directory: Path) -> None:
    writer = StoreWriter(store_path(directory))
    writer.write_chunk(chunk(0))
    writer.write_chunk(chunk(1))
    writer.write_spans(SPANS)
    writer.close()


def test_round_trip_traces_spans_and_samples(tmp_path: Path) -> None:
    write_store(tmp_path)
    with StoreReader(tmp_path) as store:
        (trace,) = store.traces()
        assert trace == {
            "trace_id": TRACE,
            "endpoint": "GET /price",
            "trace_type": "server",
            "start_ns": 1_000,
            "duration_ns": 500_000_000 - 1_000,
            "cpu_ns": 2 * 70_000_000,
            "wall_ns": 2 * 80_000_000,
            "span_count": 2,
        }
        root, child = store.trace(TRACE)["spans"]
        assert (root["name"], child["name"]) == ("GET /price", "price")
        assert root["self_cpu_ns"] == 40_000_000 and root["total_cpu_ns"] == 140_000_000
        assert child["self_cpu_ns"] == child["total_cpu_ns"] == 100_000_000
        assert root["threads"] == ["pricing_0", "request"]
        assert root["attributes"] == {"http.route": "/price"}
        # a span's samples include its descendants', from every thread
        under_root = list(store.samples(span=ROOT))
        assert {s.thread_name for s in under_root} == {"request", "pricing_0"}
        assert sum(s.cpu_ns for s in under_root) == 140_000_000
        (worker,) = store.samples(span=CHILD)
        assert worker.frames == (PRICE, HANDLE, MAIN)  # leaf first
        assert worker.count == 10
        assert dict(worker.labels) == dict(chunk().samples[1].labels)  # every label kept
        everything = list(store.samples())
        assert sum(s.cpu_ns for s in everything) == 142_000_000
        assert store.endpoints() == ["GET /price"]
        assert [c["seq"] for c in store.chunks()] == [0, 1]
        assert store.traces(endpoint="GET /nothing") == []
        assert len(store.traces(text="route")) == 1  # attributes are searched


def test_reader_is_read_only(tmp_path: Path) -> None:
    write_store(tmp_path)
    with StoreReader(tmp_path) as store, pytest.raises(sqlite3.OperationalError):
        store._db.execute("DELETE FROM samples")


def test_corrupt_or_missing_store_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no spanprof store"):
        StoreReader(tmp_path)
    Path(store_path(tmp_path)).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        StoreReader(tmp_path)
    assert "\n" not in str(info.value) and "spanprof.db" in str(info.value)
    with pytest.raises(StoreError):
        StoreWriter(store_path(tmp_path))


def test_truncated_store_is_refused_or_readable_never_a_crash(tmp_path: Path) -> None:
    write_store(tmp_path)
    path = Path(store_path(tmp_path))
    path.write_bytes(path.read_bytes()[:6000])
    try:
        with StoreReader(tmp_path) as store:
            store.traces()
            list(store.samples())
    except StoreError as exc:
        assert "\n" not in str(exc)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    write_store(tmp_path)
    db = sqlite3.connect(store_path(tmp_path))
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer spanprof"):
        StoreReader(tmp_path)
    with pytest.raises(StoreError, match="schema version"):
        StoreWriter(store_path(tmp_path))


def stored_chunks(directory: Path) -> int:
    try:
        with StoreReader(directory) as store:
            return len(store.chunks())
    except StoreError:
        return 0


def test_a_run_killed_part_way_keeps_every_window_before_the_kill(tmp_path: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(
        textwrap.dedent("""
        import time
        def burn_forever():
            while True:
                pass
        print("started", flush=True)
        burn_forever()
    """)
    )
    out = tmp_path / "out"
    env = clean_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanprof", "run", "-o", str(out), "--window", "0.3", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until a few windows have been stored
            if len(list(out.glob("*.pprof"))) >= 3 and stored_chunks(out) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with StoreReader(out) as store:
        chunks = store.chunks()
        assert len(chunks) >= 3
        assert [c["seq"] for c in chunks] == list(range(len(chunks)))
        burning = [
            s for s in store.samples() if s.frames and s.frames[0].function == "burn_forever"
        ]
        assert sum(s.cpu_ns for s in burning) > 0


def test_parent_and_child_processes_share_one_store(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = "import time\nend = time.thread_time() + 0.1\nwhile time.thread_time() < end: pass"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True)\n"
        "end = time.thread_time() + 0.1\nwhile time.thread_time() < end: pass\n"
    )
    env = clean_env()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanprof",
            "run",
            "-o",
            str(out),
            "--",
            sys.executable,
            "-c",
            parent,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with StoreReader(out) as store:
        assert len({c["pid"] for c in store.chunks()}) == 2


def test_span_processor_hands_finished_spans_to_the_store_as_rows() -> None:
    """The rows are built from real SDK spans (the per-span part runs in C)."""
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

    from spanprof.exporters.store import span_rows
    from spanprof.tracing import SpanprofProcessor

    processor = SpanprofProcessor(max_rows=3)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    remote = NonRecordingSpan(SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(1)))
    root = tracer.start_span(
        "GET /price", kind=trace.SpanKind.SERVER, context=trace.set_span_in_context(remote)
    )
    root.set_attribute("http.route", "/price")
    root.set_attribute("retries", (1, 2))
    child = tracer.start_span("price", context=trace.set_span_in_context(root))
    child.set_status(Status(StatusCode.ERROR, "boom"))
    child.end()
    root.end()
    assert processor.pending == 2
    assert span_rows(processor.take_rows(), pid=42) == [
        (
            format(7, "032x"),
            format(child.get_span_context().span_id, "016x"),
            format(root.get_span_context().span_id, "016x"),
            "price",
            "internal",
            child.start_time,
            child.end_time,
            "ERROR",
            "{}",
            42,
        ),
        (
            format(7, "032x"),
            format(root.get_span_context().span_id, "016x"),
            None,  # its parent is remote: a local root here
            "GET /price",
            "server",
            root.start_time,
            root.end_time,
            "UNSET",
            '{"http.route": "/price", "retries": [1, 2]}',
            42,
        ),
    ]
    assert span_rows(processor.take_rows(), pid=42) == [] and processor.pending == 0  # taken once
    for i in range(5):
        tracer.start_span(f"s{i}", context=Context()).end()
    assert len(span_rows(processor.take_rows(), pid=42)) == 3 and processor.dropped == 2  # bounded
    processor.shutdown()
    tracer.start_span("after", context=Context()).end()
    assert span_rows(processor.take_rows(), pid=42) == []


def test_rows_waiting_for_the_store_are_not_walked_by_the_garbage_collector() -> None:
    """Thousands of rows may wait for the exporter; none can be part of a cycle."""
    import gc

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from spanprof.tracing import SpanprofProcessor

    processor = SpanprofProcessor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(3):
        span = tracer.start_span(f"s{i}", context=Context())
        span.set_attribute("tags", ("a", "b"))  # a tuple value: itself a tracked container
        span.end()
    rows = processor.take_rows()
    assert [row[3] for row in rows] == ["s0", "s1", "s2"]
    assert [row[8] for row in rows] == [{"tags": ("a", "b")}] * 3
    assert not any(gc.is_tracked(row) for row in rows)
    gc.collect()  # a full collection with the rows alive finds them intact
    assert [row[3] for row in rows] == ["s0", "s1", "s2"]


def test_ids_and_times_are_read_whole() -> None:
    """Ids fill all 64 bits and times 62: every bit reaches the row, as Python has it."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind

    from spanprof.tracing import SpanprofProcessor

    class IntLike(int):  # not an exact int: read the usual way
        pass

    processor = SpanprofProcessor()
    cases = [  # span id, parent span id, start, end
        (2**64 - 1, 2**63, 2**62 + 12345, 2**62 + 2**31 + 7),
        (1, 2**60 + 2**30 + 1, 0, 2**30),
        (2**30 - 1, 2**32 + 5, 1_790_000_000_123_456_789, 1_790_000_000_123_456_790),
        (IntLike(2**64 - 2), IntLike(3), IntLike(2**61), IntLike(2**61 + 1)),
    ]
    for span_id, parent_id, start, end in cases:
        context = SpanContext(trace_id=2**127 + 1, span_id=span_id, is_remote=False)
        parent = SpanContext(trace_id=2**127 + 1, span_id=parent_id, is_remote=False)
        processor.on_end(
            ReadableSpan(
                "s", context, parent, kind=SpanKind.INTERNAL, start_time=start, end_time=end
            )
        )
    rows = processor.take_rows()
    assert [(row[1], row[2], row[5], row[6]) for row in rows] == cases
    assert all(row[0] == 2**127 + 1 for row in rows)
    assert processor.errors == 0


def test_the_kind_and_status_names_are_the_processors_own() -> None:
    """Rows refer to the names given at init: changing that mapping later changes no row."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from spanprof._spans import SpanRecorder

    kinds = {kind: f"kind {kind.name}".lower() for kind in SpanKind}
    statuses = {status: f"status {status.name}" for status in StatusCode}
    recorder = SpanRecorder(trace_types=kinds, status_names=statuses)
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("test")
    span = tracer.start_span("before", kind=SpanKind.CLIENT, context=Context())
    span.end()
    kinds.clear()  # the names' only other references go
    statuses.clear()
    span = tracer.start_span("after", kind=SpanKind.CLIENT, context=Context())
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    rows = recorder.take_rows()
    assert [(row[3], row[4], row[7]) for row in rows] == [
        ("before", "kind client", "status UNSET"),
        ("after", "kind client", "status ERROR"),
    ]
    assert recorder.errors == 0


def test_spans_that_end_while_rows_are_taken_are_kept() -> None:
    """Taking rows allocates, so the garbage collector may run a finalizer that
    ends spans meanwhile: those spans are neither lost nor a crash."""
    import gc

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider

    from spanprof.tracing import SpanprofProcessor

    processor = SpanprofProcessor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(300):
        tracer.start_span(f"early {i}", context=Context(), attributes={"i": i}).end()
    taking = [False]
    fired_while_taking: list[bool] = []

    class EndsSpansWhenCollected:
        def __del__(self) -> None:
            fired_while_taking.append(taking[0])
            for i in range(500):
                tracer.start_span(f"late {i}", context=Context(), attributes={"i": i}).end()

    garbage = EndsSpansWhenCollected()
    garbage.cycle = garbage  # type: ignore[attr-defined]
    del garbage
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        taking[0] = True
        first = processor.take_rows()
        taking[0] = False
    finally:
        gc.set_threshold(*threshold)
    second = processor.take_rows()
    assert fired_while_taking == [True]  # the collector did run during the take
    rows = first + second
    assert sorted(r[3] for r in rows) == sorted(
        [f"early {i}" for i in range(300)] + [f"late {i}" for i in range(500)]
    )
    assert all(r[8] == {"i": int(r[3].split()[1])} for r in rows)
    assert processor.dropped == 0 and processor.errors == 0
