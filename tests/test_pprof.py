"""Round-trip tests for the pprof exporter, driven by synthetic chunks."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import pytest
from pprof_utils import ParsedSample, load_dir, load_pprof, samples

from spanprof._proto.profile_pb2 import Profile
from spanprof.exporters.pprof import PprofFileExporter, encode_chunk
from spanprof.model import Chunk, ChunkSample, Frame

START_NS = 1_700_000_000_123_456_789
MAIN = Frame("main", "/app/main.py", 40, 38)
HANDLE = Frame("Server.handle", "/app/server.py", 12, 10)
HANDLE_LATER = Frame("Server.handle", "/app/server.py", 15, 10)  # same function, other line
QUERY = Frame("query", "/app/db.py", 7, 5)
OTHER_QUERY = Frame("query", "/lib/orm.py", 99, 90)  # same name, other file
THREAD_LABELS = (
    ("thread.id", 140_234_567_890_123),
    ("thread.native_id", 4242),
    ("thread.name", "MainThread"),
)
SPAN_LABELS = (
    *THREAD_LABELS,
    ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("span_id", "00f067aa0ba902b7"),
    ("span_name", "GET /users/{id}"),
)


def make_chunk(
    *,
    frames: tuple[Frame, ...] = (MAIN, HANDLE, QUERY, HANDLE_LATER, OTHER_QUERY),
    samples_: tuple[ChunkSample, ...] | None = None,
    dropped: int = 0,
    pid: int = 321,
    seq: int = 7,
) -> Chunk:
    if samples_ is None:
        samples_ = (
            # stacks are indices into frames, leaf first
            ChunkSample((2, 1, 0), SPAN_LABELS, 3, 30_000_000, 31_000_000),
            ChunkSample((3, 0), THREAD_LABELS, 1, 0, 10_000_000),
            ChunkSample((4, 3, 0), THREAD_LABELS, 2, 5_000, 20_000_000),
        )
    return Chunk(
        pid=pid,
        seq=seq,
        start_ns=START_NS,
        end_ns=START_NS + 10_000_000_000,
        period_ns=10_000_000,
        frames=frames,
        samples=samples_,
        dropped=dropped,
    )


def decode(chunk: Chunk) -> Profile:
    return Profile.FromString(encode_chunk(chunk))


# --- encode_chunk -------------------------------------------------------------


def test_header_sample_types_period_and_times() -> None:
    prof = decode(make_chunk())
    st = prof.string_table
    assert st[0] == ""
    assert [(st[v.type], st[v.unit]) for v in prof.sample_type] == [
        ("samples", "count"),
        ("cpu", "nanoseconds"),
        ("wall", "nanoseconds"),
    ]
    assert (st[prof.period_type.type], st[prof.period_type.unit]) == ("wall", "nanoseconds")
    assert prof.period == 10_000_000
    assert st[prof.default_sample_type] == "cpu"
    assert prof.time_nanos == START_NS
    assert prof.duration_nanos == 10_000_000_000
    assert list(prof.comment) == []
    assert len(st) == len(set(st)), "strings are interned once"


def test_stacks_round_trip_leaf_first_with_values() -> None:
    parsed = samples(decode(make_chunk()))
    assert parsed[0] == ParsedSample(
        functions=["query", "Server.handle", "main"],
        filenames=["/app/db.py", "/app/server.py", "/app/main.py"],
        lines=[7, 12, 40],
        labels=dict(SPAN_LABELS),
        count=3,
        cpu_ns=30_000_000,
        wall_ns=31_000_000,
    )
    assert (parsed[1].functions, parsed[1].lines) == (["Server.handle", "main"], [15, 40])
    assert (parsed[1].count, parsed[1].cpu_ns, parsed[1].wall_ns) == (1, 0, 10_000_000)
    assert parsed[2].filenames == ["/lib/orm.py", "/app/server.py", "/app/main.py"]
    assert [(p.count, p.cpu_ns, p.wall_ns) for p in parsed][2] == (2, 5_000, 20_000_000)


def test_location_ids_follow_stack_order() -> None:
    prof = decode(make_chunk())
    st = prof.string_table
    funcs = {f.id: st[f.name] for f in prof.function}
    locs = {loc.id: (funcs[loc.line[0].function_id], loc.line[0].line) for loc in prof.location}
    assert [locs[i] for i in prof.sample[0].location_id] == [
        ("query", 7),
        ("Server.handle", 12),
        ("main", 40),
    ]


def test_functions_and_locations_are_deduplicated() -> None:
    frames = (MAIN, HANDLE, HANDLE_LATER, QUERY, OTHER_QUERY, HANDLE)  # HANDLE twice
    chunk = make_chunk(
        frames=frames,
        samples_=(
            ChunkSample((1, 0), THREAD_LABELS, 1, 1, 1),
            ChunkSample((5, 0), THREAD_LABELS, 1, 1, 1),
            ChunkSample((2, 0), THREAD_LABELS, 1, 1, 1),
        ),
    )
    prof = decode(chunk)
    st = prof.string_table
    # main, Server.handle (one function for two lines), query@db.py, query@orm.py
    functions = sorted((st[f.name], st[f.filename], f.start_line) for f in prof.function)
    assert functions == [
        ("Server.handle", "/app/server.py", 10),
        ("main", "/app/main.py", 38),
        ("query", "/app/db.py", 5),
        ("query", "/lib/orm.py", 90),
    ]
    assert all(f.system_name == f.name for f in prof.function)
    # five distinct frames -> five locations; the repeated frame shares one
    assert len(prof.location) == 5
    assert all(len(loc.line) == 1 for loc in prof.location)
    assert prof.sample[0].location_id == prof.sample[1].location_id
    assert prof.sample[0].location_id[0] != prof.sample[2].location_id[0]
    handle_fn = {loc.line[0].function_id for loc in prof.location if loc.line[0].line in (12, 15)}
    assert len(handle_fn) == 1


def test_ids_start_at_one_and_resolve() -> None:
    prof = decode(make_chunk())
    assert sorted(f.id for f in prof.function) == list(range(1, len(prof.function) + 1))
    assert sorted(loc.id for loc in prof.location) == list(range(1, len(prof.location) + 1))
    function_ids = {f.id for f in prof.function}
    location_ids = {loc.id for loc in prof.location}
    assert all(loc.line[0].function_id in function_ids for loc in prof.location)
    assert all(set(s.location_id) <= location_ids for s in prof.sample)
    assert all(len(s.value) == len(prof.sample_type) for s in prof.sample)


def test_labels_num_versus_str() -> None:
    labels = (
        ("thread.id", 140_234_567_890_123),
        ("thread.native_id", "4242"),  # a numeric key handed over as text stays num
        ("thread.name", "worker-1"),
        ("span_id", "00f067aa0ba902b7"),
        ("retries", 3),  # any int is a num label
        ("task.name", "12"),  # a digit string under another key stays a string
    )
    chunk = make_chunk(samples_=(ChunkSample((0,), labels, 1, 2, 3),))
    prof = decode(chunk)
    st = prof.string_table
    raw = {st[lb.key]: lb for lb in prof.sample[0].label}
    assert set(raw) == {k for k, _ in labels}
    for key in ("thread.id", "thread.native_id", "retries"):
        assert raw[key].str == 0, key
    assert raw["thread.id"].num == 140_234_567_890_123
    assert raw["thread.native_id"].num == 4242
    assert raw["retries"].num == 3
    for key, text in (("thread.name", "worker-1"), ("span_id", "00f067aa0ba902b7")):
        assert st[raw[key].str] == text and raw[key].num == 0
    assert st[raw["task.name"].str] == "12"
    assert samples(prof)[0].labels == {
        "thread.id": 140_234_567_890_123,
        "thread.native_id": 4242,
        "thread.name": "worker-1",
        "span_id": "00f067aa0ba902b7",
        "retries": 3,
        "task.name": "12",
    }


def test_unsigned_64_bit_thread_id_is_kept_as_its_int64_bit_pattern() -> None:
    labels = (("thread.id", 2**64 - 2), ("thread.name", ""))  # empty str label dropped
    prof = decode(make_chunk(samples_=(ChunkSample((0,), labels, 1, 0, 0),)))
    assert samples(prof)[0].labels == {"thread.id": -2}


def test_samples_without_labels_or_with_different_label_sets() -> None:
    chunk = make_chunk(
        samples_=(
            ChunkSample((0,), (), 1, 1, 1),
            ChunkSample((0,), SPAN_LABELS, 1, 1, 1),
            ChunkSample((0,), THREAD_LABELS, 1, 1, 1),
            ChunkSample((0,), SPAN_LABELS, 1, 1, 1),
        )
    )
    assert [p.labels for p in samples(decode(chunk))] == [
        {},
        dict(SPAN_LABELS),
        dict(THREAD_LABELS),
        dict(SPAN_LABELS),
    ]


def test_dropped_samples_become_a_comment() -> None:
    prof = decode(make_chunk(dropped=17))
    assert [prof.string_table[i] for i in prof.comment] == ["spanprof: 17 samples dropped"]
    assert list(decode(make_chunk(dropped=0)).comment) == []


def test_empty_chunk_is_a_valid_profile() -> None:
    prof = decode(make_chunk(frames=(), samples_=()))
    assert prof.string_table[0] == ""
    assert prof.string_table[prof.default_sample_type] == "cpu"
    assert len(prof.sample) == len(prof.location) == len(prof.function) == 0


# --- PprofFileExporter --------------------------------------------------------


def test_exporter_writes_gzipped_profile_named_by_pid_and_seq(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"  # created on demand
    exporter = PprofFileExporter(out)
    exporter.export(make_chunk(pid=321, seq=7))
    exporter.export(make_chunk(pid=321, seq=8, dropped=2))

    expected = [out / "spanprof-321-00007.pprof", out / "spanprof-321-00008.pprof"]
    assert exporter.written == [str(p) for p in expected]
    assert exporter.failed == 0
    assert sorted(os.listdir(out)) == [p.name for p in expected], "no temp files left"
    raw = expected[0].read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == encode_chunk(make_chunk(pid=321, seq=7))
    assert load_pprof(expected[1]).comment  # the dropped note survived the file


def test_exporter_never_raises_on_unwritable_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    exporter = PprofFileExporter(blocker / "sub")
    with caplog.at_level(logging.WARNING, logger="spanprof"):
        exporter.export(make_chunk())
        exporter.export(make_chunk(seq=8))
    assert exporter.failed == 2
    assert exporter.written == []
    records = [r for r in caplog.records if r.name == "spanprof"]
    assert len(records) == 2
    assert all("\n" not in r.getMessage() for r in records)
    assert str(blocker / "sub") in records[0].getMessage()
    assert blocker.read_text() == "not a directory"


def test_failed_publish_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", refuse)
    exporter = PprofFileExporter(tmp_path)
    exporter.export(make_chunk())
    assert exporter.failed == 1
    assert os.listdir(tmp_path) == []


def test_exporter_survives_a_malformed_chunk(tmp_path: Path) -> None:
    bad = make_chunk(samples_=(ChunkSample((99,), (), 1, 1, 1),))  # frame index out of range
    exporter = PprofFileExporter(tmp_path)
    exporter.export(bad)
    exporter.export(make_chunk(seq=9))
    assert exporter.failed == 1
    assert [Path(p).name for p in exporter.written] == ["spanprof-321-00009.pprof"]
    assert os.listdir(tmp_path) == ["spanprof-321-00009.pprof"]


def test_export_after_shutdown_is_ignored_and_counted(tmp_path: Path) -> None:
    exporter = PprofFileExporter(tmp_path)
    exporter.export(make_chunk(seq=1))
    exporter.shutdown()
    exporter.export(make_chunk(seq=2))
    assert exporter.failed == 1
    assert os.listdir(tmp_path) == ["spanprof-321-00001.pprof"]


# --- pprof_utils --------------------------------------------------------------


def test_load_pprof_reads_raw_and_gzipped(tmp_path: Path) -> None:
    data = encode_chunk(make_chunk())
    (tmp_path / "raw.pb").write_bytes(data)
    (tmp_path / "gz.pb.gz").write_bytes(gzip.compress(data))
    assert (
        load_pprof(tmp_path / "raw.pb") == load_pprof(tmp_path / "gz.pb.gz") == decode(make_chunk())
    )
    assert samples(tmp_path / "raw.pb") == samples(decode(make_chunk()))


def test_load_dir_merges_every_pprof_file(tmp_path: Path) -> None:
    exporter = PprofFileExporter(tmp_path)
    exporter.export(make_chunk(pid=1, seq=0))
    exporter.export(make_chunk(pid=2, seq=0, samples_=(ChunkSample((1,), (), 5, 6, 7),)))
    (tmp_path / "store.sqlite").write_bytes(b"not a profile")
    merged = load_dir(tmp_path)
    assert len(merged) == 4
    assert sum(p.count for p in merged) == 3 + 1 + 2 + 5
    assert merged[-1].functions == ["Server.handle"]


def test_a_restarted_process_with_the_same_pid_keeps_the_earlier_files(tmp_path: Path) -> None:
    """pid 1 in a container: the second run's chunk 0 must not replace the first's."""
    first = PprofFileExporter(tmp_path)
    first.export(_chunk_for_restart(cpu=1))
    second = PprofFileExporter(tmp_path)
    second.export(_chunk_for_restart(cpu=2))
    names = sorted(os.listdir(tmp_path))
    assert names == ["spanprof-1-00000-1.pprof", "spanprof-1-00000.pprof"]
    cpus = sorted(s.cpu_ns for name in names for s in samples(tmp_path / name))
    assert cpus == [1, 2]


def _chunk_for_restart(cpu: int) -> Chunk:
    frame = Frame("main", "app.py", 1, 1)
    return Chunk(
        pid=1,
        seq=0,
        start_ns=0,
        end_ns=1,
        period_ns=10,
        frames=(frame,),
        samples=(ChunkSample((0,), (("thread.id", 1),), 1, cpu, 1),),
    )
