"""Views over the store: flame tree, function summary, span costs, speedscope, the server.

Stores are built from synthetic chunks and spans (``build_store``), so every
expected tree, number and table is known exactly. The server is exercised over a
real socket on 127.0.0.1 with a temporary static directory.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spanprof.model import Chunk, ChunkSample, Frame
from spanprof.store import StoreReader, StoreWriter, store_path
from spanprof.views import server as server_mod
from spanprof.views import trees
from spanprof.views.server import ViewerApi, ViewerServer, resolve_static
from spanprof.views.speedscope import SCHEMA, speedscope_document
from spanprof.views.trees import (
    Selection,
    SelectionError,
    dumps,
    endpoint_costs,
    flame_tree,
    function_summary,
    parse_span_id,
    parse_trace_id,
    select_samples,
    span_costs,
)

MS = 1_000_000

# -- the synthetic recording ---------------------------------------------------------------

MAIN = Frame("main", "/app/service.py", 10, 5)
HANDLE = Frame("handle", "/app/service.py", 20, 18)
RENDER = Frame("render", "/app/views.py", 30, 28)
FIB = Frame("fib", "/app/mathutil.py", 4, 1)
WORKER = Frame("_worker", "/usr/lib/python3/concurrent/futures/thread.py", 80, 70)
PRICE = Frame("price", "/app/pricing.py", 7, 3)
WAIT = Frame("Event.wait", "/usr/lib/python3/threading.py", 600, 590)

T1 = "a1" * 16  # GET /orders: S1 > S2 > S3
T2 = "b2" * 16  # GET /report: S4
T3 = "c3" * 16  # samples only: its span was never stored
S1, S2, S3, S4, S5 = (str(i) * 16 for i in range(1, 6))
PID = 4242


def _thread(name: str, ident: int) -> tuple[tuple[str, Any], ...]:
    return (("thread.id", ident), ("thread.native_id", ident + 100), ("thread.name", name))


def _span(trace: str, span: str, endpoint: str, name: str) -> tuple[tuple[str, Any], ...]:
    return (
        ("trace_id", trace),
        ("span_id", span),
        ("span_name", name),
        ("local_root_span_id", span),
        ("trace_endpoint", endpoint),
        ("trace_type", "server"),
    )


MAIN_T = _thread("MainThread", 1)
POOL0 = _thread("pricing_0", 2)
POOL1 = _thread("pricing_1", 3)

# frames of each chunk, in this order; stacks index them, leaf first
FRAMES = (MAIN, HANDLE, RENDER, FIB, WORKER, PRICE, WAIT)
M, H, R, F, W, P, E = range(7)

CHUNK0 = (
    # (stack leaf first, labels, count, cpu, wall)
    ((H, M), MAIN_T + _span(T1, S1, "GET /orders", "GET /orders"), 1, 10 * MS, 20 * MS),
    ((P, W), POOL0 + _span(T1, S2, "GET /orders", "price items"), 3, 30 * MS, 30 * MS),
    ((P, W), POOL1 + _span(T1, S3, "GET /orders", "db"), 1, 5 * MS, 6 * MS),
    ((R, H, M), MAIN_T + _span(T2, S4, "GET /report", "GET /report"), 4, 40 * MS, 50 * MS),
    ((F, F, M), MAIN_T, 1, 8 * MS, 8 * MS),  # recursion, outside any span
    ((E, W), POOL0, 10, 0, 100 * MS),  # parked: wall only
)
CHUNK1 = (
    ((H, M), MAIN_T + _span(T1, S1, "GET /orders", "GET /orders"), 1, 2 * MS, 2 * MS),
    ((P, W), POOL1 + _span(T3, S5, "GET /lost", "lost"), 1, 3 * MS, 3 * MS),
)

SPANS = [
    (T1, S1, None, "GET /orders", "server"),
    (T1, S2, S1, "price items", "internal"),
    (T1, S3, S2, "db", "client"),
    (T2, S4, None, "GET /report", "server"),
]


def _chunk(seq: int, rows: tuple, start: int) -> Chunk:
    return Chunk(
        pid=PID,
        seq=seq,
        start_ns=start,
        end_ns=start + 1000 * MS,
        period_ns=10 * MS,
        frames=FRAMES,
        samples=tuple(ChunkSample(stack, labels, n, c, w) for stack, labels, n, c, w in rows),
        dropped=seq,
    )


def build_store(directory: Path) -> Path:
    """The synthetic recording above, written as ``spanprof run`` would."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = StoreWriter(store_path(directory))
    try:
        writer.write_chunk(_chunk(0, CHUNK0, 1_000_000_000_000))
        writer.write_chunk(_chunk(1, CHUNK1, 1_001_000_000_000))
        writer.write_spans(
            {
                "trace_id": trace,
                "span_id": span,
                "parent_span_id": parent,
                "name": name,
                "kind": kind,
                "start_ns": 1_000_000_000_000 + i * MS,
                "end_ns": 1_000_500_000_000 - i * MS,
                "status": "UNSET",
                "attributes": {"order.id": 7} if span == S1 else {},
                "pid": PID,
            }
            for i, (trace, span, parent, name, kind) in enumerate(SPANS)
        )
    finally:
        writer.close()
    return directory


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return build_store(tmp_path / "out")


@pytest.fixture
def reader(store_dir: Path) -> Iterator[StoreReader]:
    with StoreReader(store_dir) as r:
        yield r


def node(tree: dict[str, Any], *names: str) -> dict[str, Any]:
    """The node reached from ``tree`` by child names."""
    for name in names:
        matches = [c for c in tree["children"] if c["name"] == name]
        assert len(matches) == 1, (name, [c["name"] for c in tree["children"]])
        tree = matches[0]
    return tree


def shape(tree: dict[str, Any]) -> dict[str, Any]:
    """name -> (value, children shape): the whole tree, comparable in one assert."""
    return {c["name"]: (c["value"], shape(c)) for c in tree["children"]}


# -- selection ---------------------------------------------------------------------------------


def test_ids_are_checked_and_normalised() -> None:
    assert parse_span_id(" ABCDEF0123456789 ") == "abcdef0123456789"
    assert parse_trace_id("A" * 32) == "a" * 32
    for bad in ("", "123", "g" * 16, "1" * 17):
        with pytest.raises(ValueError):
            parse_span_id(bad)
    with pytest.raises(ValueError):
        parse_trace_id("1" * 16)
    with pytest.raises(ValueError):
        Selection(span=S1, trace=T1)


def test_unknown_span_trace_endpoint_are_errors_naming_them(reader: StoreReader) -> None:
    with pytest.raises(SelectionError, match="unknown span 9999999999999999"):
        select_samples(reader, Selection(span="9" * 16))
    with pytest.raises(SelectionError, match="unknown trace"):
        select_samples(reader, Selection(trace="9" * 32))
    with pytest.raises(SelectionError, match=r"endpoint 'GET /nope' \(known: .*GET /orders"):
        select_samples(reader, Selection(endpoint="GET /nope"))


# -- flame tree --------------------------------------------------------------------------------


def test_whole_recording_cpu_tree_groups_threads_and_merges_frames(reader: StoreReader) -> None:
    tree = flame_tree(select_samples(reader, Selection()), "cpu")
    assert (tree["name"], tree["value"]) == ("all", 98 * MS)
    assert shape(tree) == {
        "thread MainThread": (
            60 * MS,
            {
                "main (service.py:10)": (
                    60 * MS,
                    {
                        "fib (mathutil.py:4)": (8 * MS, {"fib (mathutil.py:4)": (8 * MS, {})}),
                        "handle (service.py:20)": (
                            52 * MS,
                            {"render (views.py:30)": (40 * MS, {})},
                        ),
                    },
                )
            },
        ),
        # the parked Event.wait has no CPU: no zero-value node
        "thread pricing_0": (
            30 * MS,
            {"_worker (thread.py:80)": (30 * MS, {"price (pricing.py:7)": (30 * MS, {})})},
        ),
        "thread pricing_1": (
            8 * MS,
            {"_worker (thread.py:80)": (8 * MS, {"price (pricing.py:7)": (8 * MS, {})})},
        ),
    }


def test_tree_nodes_carry_thread_file_and_line(reader: StoreReader) -> None:
    tree = flame_tree(select_samples(reader, Selection()))
    thread = node(tree, "thread pricing_0")
    assert thread["thread"] == "pricing_0"
    price = node(thread, "_worker (thread.py:80)", "price (pricing.py:7)")
    assert price == {
        "name": "price (pricing.py:7)",
        "value": 30 * MS,
        "children": [],
        "thread": "pricing_0",
        "file": "/app/pricing.py",
        "line": 7,
    }
    json.dumps(tree)  # plain JSON values only


def test_wall_tree_keeps_parked_stacks(reader: StoreReader) -> None:
    tree = flame_tree(select_samples(reader, Selection()), "wall")
    assert tree["value"] == (20 + 30 + 6 + 50 + 8 + 100 + 2 + 3) * MS
    pool0 = node(tree, "thread pricing_0", "_worker (thread.py:80)")
    assert shape(pool0) == {
        "Event.wait (threading.py:600)": (100 * MS, {}),
        "price (pricing.py:7)": (30 * MS, {}),
    }
    with pytest.raises(ValueError):
        flame_tree([], "bytes")


def test_span_filter_includes_descendants_on_other_threads_and_nothing_else(
    reader: StoreReader,
) -> None:
    # S1's own samples are on MainThread; its descendants S2 and S3 ran on the pool
    tree = flame_tree(select_samples(reader, Selection(span=S1)))
    assert tree["value"] == (10 + 2 + 30 + 5) * MS
    assert {c["name"]: c["value"] for c in tree["children"]} == {
        "thread MainThread": 12 * MS,
        "thread pricing_0": 30 * MS,
        "thread pricing_1": 5 * MS,  # not S5's 3 ms on the same thread
    }
    assert shape(node(tree, "thread MainThread")) == {
        "main (service.py:10)": (12 * MS, {"handle (service.py:20)": (12 * MS, {})})
    }
    # a child span: itself and below, not its parent's own samples
    tree = flame_tree(select_samples(reader, Selection(span=S2)))
    assert {c["name"]: c["value"] for c in tree["children"]} == {
        "thread pricing_0": 30 * MS,
        "thread pricing_1": 5 * MS,
    }
    # a leaf span
    assert flame_tree(select_samples(reader, Selection(span=S3)))["value"] == 5 * MS
    # a span known only from samples (never stored) still selects its samples
    assert flame_tree(select_samples(reader, Selection(span=S5)))["value"] == 3 * MS


def test_trace_and_endpoint_filters(reader: StoreReader) -> None:
    assert flame_tree(select_samples(reader, Selection(trace=T1)))["value"] == 47 * MS
    report = flame_tree(select_samples(reader, Selection(endpoint="GET /report")))
    assert shape(report) == {
        "thread MainThread": (
            40 * MS,
            {
                "main (service.py:10)": (
                    40 * MS,
                    {"handle (service.py:20)": (40 * MS, {"render (views.py:30)": (40 * MS, {})})},
                )
            },
        )
    }


def deep_store(directory: Path, depth: int = 4096) -> Path:
    """One sample whose stack is as deep as the sampler may keep (max_depth <= 4096)."""
    directory.mkdir(parents=True)
    frames = tuple(Frame(f"f{i}", "/app/deep.py", i + 1, i + 1) for i in range(depth))
    writer = StoreWriter(store_path(directory))
    sample = ChunkSample(tuple(range(depth)), MAIN_T, 1, 5 * MS, 6 * MS)
    writer.write_chunk(Chunk(PID, 0, 0, 10 * MS, 10 * MS, frames, (sample,)))
    writer.close()
    return directory


def test_deepest_stacks_build_and_encode(tmp_path: Path) -> None:
    with StoreReader(deep_store(tmp_path / "deep")) as reader:
        tree = flame_tree(select_samples(reader, Selection()))
        summary = function_summary(select_samples(reader, Selection()))
    assert len(summary["functions"]) == 4096
    current, depth = tree, 0
    while current["children"]:
        [current] = current["children"]
        depth += 1
    assert depth == 4097  # the thread node, then every frame
    assert current["name"] == "f0 (deep.py:1)"  # the leaf, last
    text = dumps(tree)  # deeper than json.dumps recurses
    assert text.startswith('{"name":"all","value":5000000,"children":[{"name":"thread MainThread"')
    assert text.count('"children":[') == 4098
    assert text.count("[") == text.count("]") and text.count("{") == text.count("}")


def test_dumps_with_a_stack_is_json_dumps() -> None:
    value = {
        "a": [1, 2.5, None, True, False, 'x\u2028<"', [], {}],
        "b": {"c": [{"d": []}, "é"]},
        "": -3,
    }
    assert trees._dumps_with_a_stack(value) == json.dumps(value, separators=(",", ":"))
    assert dumps(value) == json.dumps(value, separators=(",", ":"))
    for scalar in (1, "s", None, [], {}):
        assert trees._dumps_with_a_stack(scalar) == json.dumps(scalar)


# -- summaries ---------------------------------------------------------------------------------


def test_function_summary_self_and_total(reader: StoreReader) -> None:
    summary = function_summary(select_samples(reader, Selection()))
    assert summary["total_cpu_ns"] == 98 * MS
    rows = [
        (f["function"], f["self_cpu_ns"] // MS, f["total_cpu_ns"] // MS)
        for f in summary["functions"]
    ]
    assert rows == [
        ("render", 40, 40),
        ("price", 38, 38),
        ("handle", 12, 52),
        ("fib", 8, 8),  # recursive: counted once per sample
        ("main", 0, 60),
        ("_worker", 0, 38),
    ]
    assert summary["functions"][0]["file"] == "/app/views.py"


def test_endpoint_costs(reader: StoreReader) -> None:
    rows = endpoint_costs(select_samples(reader, Selection()))
    assert [(r["endpoint"], r["cpu_ns"] // MS, r["wall_ns"] // MS, r["traces"]) for r in rows] == [
        ("GET /orders", 47, 58, 1),
        ("GET /report", 40, 50, 1),
        (None, 8, 108, 0),
        ("GET /lost", 3, 3, 1),
    ]


def test_span_costs_self_total_and_scope(reader: StoreReader) -> None:
    def costs(selection: Selection) -> list[tuple[str, str | None, int, int]]:
        samples = select_samples(reader, selection)
        return [
            (r["span_id"], r["name"], r["self_cpu_ns"] // MS, r["total_cpu_ns"] // MS)
            for r in span_costs(reader, samples, selection)
        ]

    assert costs(Selection()) == [
        (S1, "GET /orders", 12, 47),
        (S4, "GET /report", 40, 40),
        (S2, "price items", 30, 35),
        (S3, "db", 5, 5),
        (S5, None, 3, 3),  # sampled, never stored
    ]
    # under S2 only: S2 and S3, S1 is above the selection
    assert costs(Selection(span=S2)) == [(S2, "price items", 30, 35), (S3, "db", 5, 5)]
    assert costs(Selection(endpoint="GET /report")) == [(S4, "GET /report", 40, 40)]


# -- speedscope --------------------------------------------------------------------------------

VALUE_UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def check_speedscope(doc: dict[str, Any]) -> None:
    """What speedscope's file-format schema requires of a file of sampled profiles."""
    assert doc["$schema"] == SCHEMA
    assert isinstance(doc["profiles"], list)
    frames = doc["shared"]["frames"]
    assert isinstance(frames, list)
    for frame in frames:
        assert isinstance(frame["name"], str)
        assert set(frame) <= {"name", "file", "line", "col"}
        assert isinstance(frame.get("file", ""), str)
        assert isinstance(frame.get("line", 0), int)
    for key in ("name", "exporter"):
        assert isinstance(doc.get(key, ""), str)
    assert isinstance(doc.get("activeProfileIndex", 0), int)
    assert 0 <= doc.get("activeProfileIndex", 0) < max(1, len(doc["profiles"]))
    for profile in doc["profiles"]:
        assert profile["type"] == "sampled"
        assert isinstance(profile["name"], str)
        assert profile["unit"] in VALUE_UNITS
        assert isinstance(profile["startValue"], int | float)
        assert isinstance(profile["endValue"], int | float)
        assert profile["endValue"] >= profile["startValue"]
        assert len(profile["samples"]) == len(profile["weights"])
        for stack in profile["samples"]:
            assert all(isinstance(i, int) and 0 <= i < len(frames) for i in stack)
        assert all(isinstance(w, int | float) and w >= 0 for w in profile["weights"])


def resolved(doc: dict[str, Any]) -> dict[str, list[tuple[tuple[str, ...], int]]]:
    """profile name -> [(function names root first, weight)]."""
    names = [f["name"] for f in doc["shared"]["frames"]]
    return {
        p["name"]: sorted(
            (tuple(names[i] for i in stack), w)
            for stack, w in zip(p["samples"], p["weights"], strict=True)
        )
        for p in doc["profiles"]
    }


def test_speedscope_document_structure_and_totals(reader: StoreReader) -> None:
    doc = speedscope_document(select_samples(reader, Selection()), name="test")
    check_speedscope(doc)
    json.loads(json.dumps(doc))
    assert doc["name"] == "test"
    assert [p["name"] for p in doc["profiles"]] == [
        "thread MainThread (cpu)",
        "thread pricing_0 (cpu)",
        "thread pricing_1 (cpu)",
    ]
    assert [p["endValue"] for p in doc["profiles"]] == [60 * MS, 30 * MS, 8 * MS]
    assert [sum(p["weights"]) for p in doc["profiles"]] == [60 * MS, 30 * MS, 8 * MS]
    assert doc["activeProfileIndex"] == 0  # the heaviest thread
    assert all(p["unit"] == "nanoseconds" for p in doc["profiles"])
    assert resolved(doc)["thread MainThread (cpu)"] == [
        (("main", "fib", "fib"), 8 * MS),  # root first
        (("main", "handle"), 12 * MS),
        (("main", "handle", "render"), 40 * MS),
    ]
    frames = {(f["name"], f["file"], f["line"]) for f in doc["shared"]["frames"]}
    assert ("price", "/app/pricing.py", 7) in frames
    assert len(frames) == len(doc["shared"]["frames"])  # each frame once


def test_speedscope_wall_and_selection(reader: StoreReader) -> None:
    doc = speedscope_document(select_samples(reader, Selection(span=S2)), name="x", value="wall")
    check_speedscope(doc)
    assert resolved(doc) == {
        "thread pricing_0 (wall)": [(("_worker", "price"), 30 * MS)],
        "thread pricing_1 (wall)": [(("_worker", "price"), 6 * MS)],
    }
    assert speedscope_document([], name="empty")["profiles"] == []


# -- the JSON API ------------------------------------------------------------------------------


def test_api_routes_and_errors(reader: StoreReader) -> None:
    api = ViewerApi(reader)
    status, body = api.handle("traces", "")
    assert status == 200
    assert [t["trace_id"] for t in body["traces"]] == [T1, T2]
    assert body["endpoints"] == ["GET /lost", "GET /orders", "GET /report"]
    assert api.handle("traces", "endpoint=GET%20/report")[1]["traces"][0]["trace_id"] == T2
    assert [t["trace_id"] for t in api.handle("traces", "q=order.id")[1]["traces"]] == [T1]
    assert len(api.handle("traces", "limit=1")[1]["traces"]) == 1

    status, body = api.handle(f"trace/{T1}", "")
    assert status == 200
    assert [s["span_id"] for s in body["spans"]] == [S1, S2, S3]
    assert api.handle(f"trace/{T3}", "")[0] == 200  # samples, no stored span

    status, body = api.handle("flame", f"span={S1}")
    assert (status, body["value"]) == (200, 47 * MS)
    assert api.handle("flame", "value=wall")[1]["value"] == 219 * MS
    status, body = api.handle("summary", "endpoint=GET+%2Freport")
    assert status == 200
    assert body["total_cpu_ns"] == 40 * MS
    assert body["functions"][0] == {
        "function": "render",
        "file": "/app/views.py",
        "self_cpu_ns": 40 * MS,
        "total_cpu_ns": 40 * MS,
    }

    for path, query in [
        ("traces", "limit=x"),
        ("traces", "limit=0"),
        ("traces", "bogus=1"),
        ("flame", "value=bytes"),
        ("flame", "span=xyz"),
        ("flame", f"span={S1}&trace={T1}"),
        ("flame", f"span={S1}&span={S2}"),
        ("summary", "value=cpu"),
        ("trace/not-hex", ""),
    ]:
        status, body = api.handle(path, query)
        assert status == 400, (path, query, body)
        assert isinstance(body["error"], str) and body["error"]
    for path, query in [
        (f"trace/{'9' * 32}", ""),
        ("flame", f"span={'9' * 16}"),
        ("summary", "endpoint=nope"),
        ("nothing", ""),
    ]:
        assert api.handle(path, query)[0] == 404, (path, query)


def test_api_store_error_is_500(store_dir: Path) -> None:
    reader = StoreReader(store_dir)
    reader.close()  # every query now fails inside the store
    status, body = ViewerApi(reader).handle("traces", "")
    assert status == 500
    assert "could not be read" in body["error"]


# -- the HTTP server over a real socket --------------------------------------------------------


@pytest.fixture
def static(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>viewer</title>")
    (root / "bundle.js").write_text("console.log(1)")
    (root / "bundle.css").write_text("body{}")
    (root / "sub").mkdir()
    (root / "sub" / "data.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    return root


class Served:
    def __init__(self, server: ViewerServer) -> None:
        self.server = server

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def json(self, path: str) -> tuple[int, Any]:
        status, kind, body = self.get(path)
        assert kind == "application/json"
        return status, json.loads(body)


class _JoiningServer(ViewerServer):
    daemon_threads = False  # server_close joins request threads: the test leaves none


@pytest.fixture
def served(reader: StoreReader, static: Path) -> Iterator[Served]:
    server = _JoiningServer(ViewerApi(reader), static, port=0)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="spanprof-test-viewer"
    )
    thread.start()
    try:
        yield Served(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_server_binds_loopback_only(served: Served) -> None:
    host, port = served.server.server_address[:2]
    assert host == "127.0.0.1"
    assert port != 0
    assert served.server.url == f"http://127.0.0.1:{port}/"
    # another loopback address of this machine reaches nothing: bound to 127.0.0.1 alone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()


def test_server_static_files_and_content_types(served: Served) -> None:
    assert served.get("/") == (
        200,
        "text/html; charset=utf-8",
        b"<!doctype html><title>viewer</title>",
    )
    assert served.get("/index.html")[:2] == (200, "text/html; charset=utf-8")
    assert served.get("/bundle.js")[:2] == (200, "text/javascript; charset=utf-8")
    assert served.get("/bundle.css")[:2] == (200, "text/css; charset=utf-8")
    assert served.get("/sub/data.json")[:2] == (200, "application/json")
    assert served.get("/bundle.js?v=1")[0] == 200
    assert served.get("/missing.js")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%2Fetc%2Fpasswd",
        "//etc/passwd",
        "/etc/passwd",
        "/escape.txt",  # a symlink out of the static directory
        "/..\\secret.txt",
        "/%00index.html",
    ],
)
def test_server_refuses_paths_outside_static(served: Served, path: str) -> None:
    status, _, body = served.get(path)
    assert status in (403, 404)
    assert b"secret" not in body
    assert b"root:" not in body


def test_resolve_static_unit(static: Path) -> None:
    root = os.path.realpath(static)
    assert resolve_static(root, "/") == (200, os.path.join(root, "index.html"))
    assert resolve_static(root, "/sub/./data.json") == (200, os.path.join(root, "sub", "data.json"))
    assert resolve_static(root, "/../secret.txt") == (403, None)
    assert resolve_static(root, "/escape.txt") == (403, None)
    assert resolve_static(root, "/sub/") == (404, None)


def test_server_json_api(served: Served) -> None:
    status, body = served.json("/api/traces?limit=5")
    assert status == 200
    assert [t["trace_id"] for t in body["traces"]] == [T1, T2]
    assert "GET /orders" in body["endpoints"]
    status, body = served.json(f"/api/trace/{T2}")
    assert (status, [s["name"] for s in body["spans"]]) == (200, ["GET /report"])
    status, body = served.json(f"/api/flame?span={S2}&value=cpu")
    assert (status, body["name"], body["value"]) == (200, "all", 35 * MS)
    status, body = served.json("/api/flame?endpoint=GET%20%2Forders&value=wall")
    assert (status, body["value"]) == (200, 58 * MS)
    status, body = served.json(f"/api/summary?trace={T1}")
    assert (status, body["total_cpu_ns"]) == (200, 47 * MS)


def test_server_json_errors(served: Served) -> None:
    assert served.json("/api/flame?value=bytes")[0] == 400
    assert served.json("/api/traces?limit=-1")[0] == 400
    status, body = served.json(f"/api/trace/{'0' * 32}")
    assert status == 404
    assert body == {"error": f"unknown trace {'0' * 32}"}
    assert served.json("/api/nothing")[0] == 404


def test_server_refuses_foreign_host_header(served: Served) -> None:
    """A page on another origin rebinding its DNS name to 127.0.0.1 gets nothing."""
    status, _, body = served.get("/api/traces", headers={"Host": "evil.example:80"})
    assert status == 403
    assert list(json.loads(body)) == ["error"]
    port = served.server.port
    assert served.get("/api/traces", headers={"Host": f"localhost:{port}"})[0] == 200


def test_static_dir_is_the_viewer_bundle() -> None:
    path = server_mod.static_dir()
    assert os.path.isfile(os.path.join(path, "index.html"))


def test_static_dir_missing_is_a_store_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import spanprof.viewer

    monkeypatch.setattr(spanprof.viewer, "STATIC_DIR", tmp_path / "nothing")
    with pytest.raises(server_mod.StoreError, match="no index.html"):
        server_mod.static_dir()
