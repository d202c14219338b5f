"""``spanprof view``, ``flamegraph``, ``summary`` and ``export``, called as ``cli.main``.

Outputs are parsed, never eyeballed: summary rows split into numbers, the flame
graph's embedded JSON is decoded back out of the HTML, exports are read with the
pprof parser and checked against speedscope's schema. One test records a real
program with ``spanprof run`` and reads it through every command.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import site
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pprof_utils import samples as pprof_samples
from test_views import (
    MS,
    PID,
    S1,
    S2,
    S3,
    S4,
    S5,
    T1,
    T2,
    build_store,
    check_speedscope,
    deep_store,
    node,
)
from workload_runs import clean_env

import spanprof
from spanprof import cli
from spanprof.cli import flamegraph as flamegraph_mod
from spanprof.cli import view as view_mod
from spanprof.store import StoreReader
from spanprof.views.server import ViewerServer

TIMEOUT = 60  # only to never hang; nothing here measures time
VIEWER_LINE = r"spanprof: viewer at (http://127\.0\.0\.1:{port}/) \(Ctrl-C to stop\)"
SPANPROF_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(spanprof.__file__)))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return build_store(tmp_path / "out")


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """A viewer bundle shaped like the real one (regions between markers)."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text(
        '<!doctype html>\n<!-- how to embed: <script src="bundle.js"></script> -->\n'
        "<html><head><title>spanprof</title>\n"
        '<!--SPANPROF_CSS--><link rel="stylesheet" href="bundle.css"><!--/SPANPROF_CSS-->\n'
        '</head><body><div id="app"></div>\n'
        "<!--SPANPROF_DATA--><!--/SPANPROF_DATA-->\n"
        '<!--SPANPROF_JS--><script src="bundle.js"></script><!--/SPANPROF_JS-->\n'
        "</body></html>\n"
    )
    (root / "bundle.css").write_text("body { color: red } /* </style> inside */")
    (root / "bundle.js").write_text(
        'window.BUNDLE_RAN = "</script><b>x</b>"; // <!--SPANPROF_DATA--> in the code\n'
    )
    return root


# -- summary ------------------------------------------------------------------------------------


def tables(out: str) -> dict[str, list[str]]:
    """Table title (without the "(top ...)") -> its row lines (header dropped)."""
    found: dict[str, list[str]] = {}
    for block in out.strip().split("\n\n")[1:]:
        lines = block.splitlines()
        title = lines[0].split(" (top ")[0]
        found[title] = [] if lines[1:] == ["  (none)"] else lines[2:]
    return found


def function_rows(out: str) -> list[tuple[str, str, float, float, float, float]]:
    rows = []
    for line in tables(out)["Functions by self CPU"]:
        self_ms, self_pct, total_ms, total_pct, function, filename = line.split(maxsplit=5)
        rows.append(
            (
                function,
                filename,
                float(self_ms),
                float(self_pct.rstrip("%")),
                float(total_ms),
                float(total_pct.rstrip("%")),
            )
        )
    return rows


def test_summary_functions_endpoints_spans(capsys, store_dir: Path) -> None:
    code, out, err = run(capsys, "summary", str(store_dir))
    assert (code, err) == (0, "")
    head = out.splitlines()[:2]
    assert head == [
        f"spanprof summary of {store_dir}: whole recording",
        "22 samples, CPU 98.000 ms, wall 219.000 ms",
    ]
    assert function_rows(out) == [
        ("render", "/app/views.py", 40.0, 40.8, 40.0, 40.8),
        ("price", "/app/pricing.py", 38.0, 38.8, 38.0, 38.8),
        ("handle", "/app/service.py", 12.0, 12.2, 52.0, 53.1),
        ("fib", "/app/mathutil.py", 8.0, 8.2, 8.0, 8.2),
        ("main", "/app/service.py", 0.0, 0.0, 60.0, 61.2),
        ("_worker", "/usr/lib/python3/concurrent/futures/thread.py", 0.0, 0.0, 38.0, 38.8),
    ]
    endpoints = [line.split(maxsplit=4) for line in tables(out)["Endpoints by CPU"]]
    assert endpoints == [
        ["47.000", "48.0%", "58.000", "1", "GET /orders"],
        ["40.000", "40.8%", "50.000", "1", "GET /report"],
        ["8.000", "8.2%", "108.000", "0", "(outside any trace)"],
        ["3.000", "3.1%", "3.000", "1", "GET /lost"],
    ]
    spans = [line.split(maxsplit=5) for line in tables(out)["Spans by total CPU"]]
    assert spans == [
        ["47.000", "48.0%", "12.000", T1[:8], S1, "GET /orders"],
        ["40.000", "40.8%", "40.000", T2[:8], S4, "GET /report"],
        ["35.000", "35.7%", "30.000", T1[:8], S2, "price items"],
        ["5.000", "5.1%", "5.000", T1[:8], S3, "db"],
        ["3.000", "3.1%", "3.000", "c3c3c3c3", S5, "(span not stored)"],
    ]


def test_summary_selection_and_limit(capsys, store_dir: Path) -> None:
    code, out, _ = run(capsys, "summary", str(store_dir), "--span", S2.upper(), "--limit", "1")
    assert code == 0
    assert out.splitlines()[0].endswith(f": span {S2}")
    assert function_rows(out) == [("price", "/app/pricing.py", 35.0, 100.0, 35.0, 100.0)]
    assert [line.split(maxsplit=5) for line in tables(out)["Spans by total CPU"]] == [
        ["35.000", "100.0%", "30.000", T1[:8], S2, "price items"]
    ]
    assert "Functions by self CPU (top 1 of 2)" in out

    code, out, _ = run(capsys, "summary", str(store_dir), "--endpoint", "GET /report")
    assert code == 0
    assert [r[0] for r in function_rows(out)] == ["render", "handle", "main"]
    assert [line.split(maxsplit=4)[-1] for line in tables(out)["Endpoints by CPU"]] == [
        "GET /report"
    ]


def test_summary_of_a_selection_without_cpu(capsys, tmp_path: Path) -> None:
    from spanprof.model import Chunk
    from spanprof.store import StoreWriter, store_path

    tmp_path.joinpath("empty").mkdir()
    writer = StoreWriter(store_path(tmp_path / "empty"))
    writer.write_chunk(Chunk(1, 0, 0, 1, 1, (), ()))
    writer.close()
    code, out, _ = run(capsys, "summary", str(tmp_path / "empty"))
    assert code == 0
    assert tables(out) == {
        "Functions by self CPU": [],
        "Endpoints by CPU": [],
        "Spans by total CPU": [],
    }


# -- flamegraph ---------------------------------------------------------------------------------


def embedded(page: str) -> dict[str, Any]:
    """``window.SPANPROF_EMBEDDED`` decoded from the page: the one occurrence that is JSON
    (the page's own comments may quote the contract)."""
    found = []
    for match in re.finditer(r"window\.SPANPROF_EMBEDDED = ", page):
        try:
            value, _ = json.JSONDecoder().raw_decode(page, match.end())
        except json.JSONDecodeError:
            continue
        found.append(value)
    assert len(found) == 1
    return found[0]


def outside_comments(page: str) -> str:
    return re.sub(r"<!--.*?-->", "", page, flags=re.DOTALL)


def test_flamegraph_fills_the_template(capsys, store_dir, static, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(flamegraph_mod, "static_dir", lambda: str(static))
    out = tmp_path / "fg.html"
    code, _, err = run(capsys, "flamegraph", str(store_dir), "-o", str(out), "--span", S1)
    assert code == 0, err
    assert err == f"spanprof: flame graph written to {out}\n"
    page = out.read_text()
    data = embedded(page)
    assert data["value"] == "cpu"
    assert data["title"] == f"spanprof: span {S1} (GET /orders)"
    assert data["flame"]["value"] == 47 * MS
    assert node(data["flame"], "thread pricing_0")["value"] == 30 * MS
    # self-contained: CSS and JS inline, nothing linked, regions replaced whole
    markup = outside_comments(page.split("<script>", 1)[0]) + page.rsplit("</script>", 1)[1]
    assert "src=" not in markup and "href=" not in markup
    assert "<style>body { color: red } /* <\\/style> inside */</style>" in page
    assert 'window.BUNDLE_RAN = "<\\/script><b>x</b>"' in page
    assert "/SPANPROF_" not in page
    assert page.index("window.SPANPROF_EMBEDDED = {") < page.index("window.BUNDLE_RAN")
    assert "<title>spanprof: span 1111111111111111 (GET /orders)</title>" in page


def test_flamegraph_data_cannot_close_its_script(capsys, tmp_path, static, monkeypatch) -> None:
    from spanprof.store import StoreWriter, store_path

    monkeypatch.setattr(flamegraph_mod, "static_dir", lambda: str(static))
    store = build_store(tmp_path / "out")
    writer = StoreWriter(store_path(store))
    evil = "</script><script>alert(1)</script><!--"
    writer.write_spans(
        [
            {
                "trace_id": T2,
                "span_id": S4,
                "parent_span_id": None,
                "name": evil,
                "kind": "server",
                "start_ns": 0,
                "end_ns": 1,
                "status": "UNSET",
                "attributes": {},
                "pid": PID,
            }
        ]
    )
    writer.close()
    out = tmp_path / "fg.html"
    assert run(capsys, "flamegraph", str(store), "-o", str(out), "--span", S4)[0] == 0
    page = out.read_text()
    assert "<script>alert(1)" not in page  # neither in the data nor in the <title>
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the title, escaped
    assert embedded(page)["title"] == f"spanprof: span {S4} ({evil})"


def test_flamegraph_with_the_viewer_bundle(capsys, store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fg.html"
    code, _, err = run(
        capsys, "flamegraph", str(store_dir), "-o", str(out), "--endpoint", "GET /orders",
        "--value", "wall",
    )  # fmt: skip
    assert code == 0, err
    page = out.read_text()
    data = embedded(page)
    assert (data["value"], data["flame"]["value"]) == ("wall", 58 * MS)
    assert data["title"] == "spanprof: endpoint GET /orders"
    markup = outside_comments(page)
    assert not re.search(r"<script[^>]*\ssrc=", markup)
    assert not re.search(r"<link[^>]*stylesheet", markup)
    assert "http://" not in markup.split("<script>", 1)[0]


def test_flamegraph_of_the_deepest_stacks_parses_in_a_browser(
    capsys, tmp_path: Path, static: Path, monkeypatch
) -> None:
    """Browsers cannot parse a JS object literal ~2000 levels deep; JSON.parse can."""
    monkeypatch.setattr(flamegraph_mod, "static_dir", lambda: str(static))
    out = tmp_path / "deep.html"
    assert run(capsys, "flamegraph", str(deep_store(tmp_path / "deep")), "-o", str(out))[0] == 0
    page = out.read_text()
    prefix = "<script>window.SPANPROF_EMBEDDED = JSON.parse("
    assert page.count(prefix) == 1
    text, _ = json.JSONDecoder().raw_decode(page, page.index(prefix) + len(prefix))
    assert text.startswith('{"title":"spanprof: whole recording","flame":{"name":"all"')
    assert text.count('"children":[') == 4098

    shallow = tmp_path / "shallow.html"
    assert (
        run(capsys, "flamegraph", str(deep_store(tmp_path / "d2", 400)), "-o", str(shallow))[0] == 0
    )
    assert embedded(shallow.read_text())["flame"]["value"] == 5 * MS  # the literal form


# -- export --------------------------------------------------------------------------------------


def test_export_pprof_round_trip(capsys, store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.pprof"
    code, _, err = run(capsys, "export", str(store_dir), "--format", "pprof", "-o", str(out))
    assert code == 0, err
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    parsed = pprof_samples(out)
    assert sum(s.cpu_ns for s in parsed) == 98 * MS
    assert sum(s.wall_ns for s in parsed) == 219 * MS
    assert sum(s.count for s in parsed) == 22
    by_span: dict[Any, int] = {}
    for s in parsed:
        key = s.labels.get("span_id")
        by_span[key] = by_span.get(key, 0) + s.cpu_ns
    assert by_span == {S1: 12 * MS, S2: 30 * MS, S3: 5 * MS, S4: 40 * MS, S5: 3 * MS, None: 8 * MS}
    [render] = [s for s in parsed if s.functions[0] == "render"]
    assert render.functions == ["render", "handle", "main"]  # leaf first
    assert render.lines == [30, 20, 10]
    assert render.filenames == ["/app/views.py", "/app/service.py", "/app/service.py"]
    assert render.labels == {  # every label of the contract, as stored
        "thread.id": 1,
        "thread.native_id": 101,
        "thread.name": "MainThread",
        "trace_id": T2,
        "span_id": S4,
        "span_name": "GET /report",
        "local_root_span_id": S4,
        "trace_endpoint": "GET /report",
        "trace_type": "server",
    }
    [price] = [s for s in parsed if s.labels.get("span_id") == S2]
    assert price.labels["thread.native_id"] == 102
    assert price.labels["span_name"] == "price items"
    [fib] = [s for s in parsed if s.functions[0] == "fib"]  # outside any span
    assert fib.labels == {"thread.id": 1, "thread.native_id": 101, "thread.name": "MainThread"}
    [lost] = [s for s in parsed if s.labels.get("span_id") == S5]
    assert lost.labels["span_name"] == "lost"  # its span was never stored; the sample's label is
    assert lost.labels["trace_endpoint"] == "GET /lost"


def test_export_pprof_merges_windows_and_filters(capsys, store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s1.pprof"
    argv = ["export", str(store_dir), "--format", "pprof", "-o", str(out), "--trace", T1]
    assert run(capsys, *argv)[0] == 0
    parsed = pprof_samples(out)
    assert {s.labels["trace_id"] for s in parsed} == {T1}
    assert sum(s.cpu_ns for s in parsed) == 47 * MS
    # the same stack and span in two windows is one sample
    main_s1 = [s for s in parsed if s.labels["span_id"] == S1]
    assert [(s.count, s.cpu_ns) for s in main_s1] == [(2, 12 * MS)]

    from pprof_utils import load_pprof

    profile = load_pprof(out)
    strings = profile.string_table
    assert [strings[t.type] for t in profile.sample_type] == ["samples", "cpu", "wall"]
    assert profile.time_nanos == 1_000_000_000_000
    assert profile.duration_nanos == 2000 * MS
    assert profile.period == 10 * MS


def test_export_speedscope(capsys, store_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.speedscope.json"
    argv = ["export", str(store_dir), "--format", "speedscope", "-o", str(out), "--span", S1]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    doc = json.loads(out.read_text())
    check_speedscope(doc)
    assert doc["name"] == f"spanprof: span {S1}"
    assert {p["name"]: p["endValue"] for p in doc["profiles"]} == {
        "thread MainThread (cpu)": 12 * MS,
        "thread pricing_0 (cpu)": 30 * MS,
        "thread pricing_1 (cpu)": 5 * MS,
    }
    argv = ["export", str(store_dir), "--format", "speedscope", "-o", str(out), "--value", "wall"]
    assert run(capsys, *argv)[0] == 0
    doc = json.loads(out.read_text())
    check_speedscope(doc)
    assert sum(sum(p["weights"]) for p in doc["profiles"]) == 219 * MS


# -- errors -------------------------------------------------------------------------------------


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spanprof: error: ")
    assert "Traceback" not in err
    return lines[0]


def command_lines(directory: str, out: Path) -> list[list[str]]:
    return [
        ["summary", directory],
        ["flamegraph", directory, "-o", str(out / "fg.html")],
        ["export", directory, "--format", "pprof", "-o", str(out / "x.pprof")],
        ["export", directory, "--format", "speedscope", "-o", str(out / "x.json")],
        ["view", directory, "--no-browser"],
    ]


def test_corrupt_store_is_one_error_line(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "spanprof.db").write_bytes(b"this is not sqlite at all\x00\x01" * 100)
    for argv in command_lines(str(bad), tmp_path):
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert "is not a readable spanprof store" in one_error_line(err)
        assert out == ""
    assert not (tmp_path / "fg.html").exists()


def test_missing_directory_and_store(capsys, tmp_path: Path) -> None:
    for argv in command_lines(str(tmp_path / "nowhere"), tmp_path):
        code, _, err = run(capsys, *argv)
        assert code == 1, argv
        assert one_error_line(err) == f"spanprof: error: no such directory: {tmp_path / 'nowhere'}"
    for argv in command_lines(str(tmp_path), tmp_path):  # a directory without a store
        code, _, err = run(capsys, *argv)
        assert code == 1, argv
        assert "no spanprof store at" in one_error_line(err)


@pytest.mark.parametrize(
    "selection, message",
    [
        (["--span", "9" * 16], f"unknown span {'9' * 16}"),
        (["--trace", "9" * 32], f"unknown trace {'9' * 32}"),
        (["--endpoint", "GET /nope"], "unknown endpoint 'GET /nope'"),
    ],
)
def test_unknown_selection_is_one_error_line(capsys, store_dir, tmp_path, selection, message):
    for argv in command_lines(str(store_dir), tmp_path)[:4]:
        code, _, err = run(capsys, *argv, *selection)
        assert code == 1, argv
        assert message in one_error_line(err)


@pytest.mark.parametrize(
    "extra",
    [
        ["--bogus"],
        ["--span", "xyz"],
        ["--trace", S1],  # a span id is not a trace id
        ["--span", S1, "--trace", T1],
        ["--value", "bytes"],
    ],
)
def test_usage_errors_exit_2(capsys, store_dir, tmp_path, extra) -> None:
    for argv in command_lines(str(store_dir), tmp_path)[1:4]:
        code, out, err = run(capsys, *argv, *extra)
        assert code == 2, argv
        assert err.startswith("usage: spanprof ")
        assert "Traceback" not in err


def test_usage_errors_of_summary_and_view(capsys, store_dir: Path) -> None:
    for argv in (
        ["summary", str(store_dir), "--limit", "0"],
        ["summary", str(store_dir), "--bogus"],
        ["view", str(store_dir), "--port", "70000"],
        ["view", str(store_dir), "--bogus"],
        ["export", str(store_dir), "-o", "x"],  # no --format
        ["flamegraph", str(store_dir)],  # no -o
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("usage: spanprof ")


def test_unwritable_output_is_one_error_line(capsys, store_dir: Path, tmp_path: Path) -> None:
    target = str(tmp_path / "no" / "such" / "dir" / "x.json")
    code, _, err = run(capsys, "export", str(store_dir), "--format", "speedscope", "-o", target)
    assert code == 1
    assert one_error_line(err).startswith(f"spanprof: error: cannot write {target}: ")


def test_commands_are_listed(capsys) -> None:
    assert cli.main([]) == 2
    listing = capsys.readouterr().err
    for name in ("run", "view", "flamegraph", "summary", "export"):
        assert f"  {name} " in listing


# -- view ---------------------------------------------------------------------------------------


def _browser_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "spanprof-browser"]


def test_view_serves_until_interrupted(capsys, store_dir, static, monkeypatch) -> None:
    """In process: one real request, then Ctrl-C; exit 0, the one line, a browser opened."""
    answers: list[Any] = []
    opened: list[str] = []

    class OneRequestThenCtrlC(ViewerServer):
        daemon_threads = False  # server_close joins the request thread

        def serve_forever(self, poll_interval: float = 0.5) -> None:
            assert self.server_address[0] == "127.0.0.1"

            def client() -> None:
                with urllib.request.urlopen(self.url + "api/traces", timeout=TIMEOUT) as resp:
                    answers.append(json.loads(resp.read()))

            thread = threading.Thread(target=client)
            thread.start()
            self.handle_request()
            thread.join()
            raise KeyboardInterrupt

    monkeypatch.setattr(view_mod, "ViewerServer", OneRequestThenCtrlC)
    monkeypatch.setattr(view_mod, "static_dir", lambda: str(static))
    monkeypatch.setattr(view_mod.webbrowser, "open", lambda url: opened.append(url))
    term = signal.getsignal(signal.SIGTERM)
    code, out, err = run(capsys, "view", str(store_dir))
    for thread in _browser_threads():
        thread.join()
    assert (code, err) == (0, "")
    [line] = out.splitlines()
    match = re.fullmatch(VIEWER_LINE.format(port=r"(\d+)"), line)
    assert match is not None, line
    assert int(match.group(2)) != 0
    assert opened == [match.group(1)]
    assert [t["trace_id"] for t in answers[0]["traces"]] == [T1, T2]
    assert signal.getsignal(signal.SIGTERM) == term  # put back


def test_view_no_browser_and_busy_port(capsys, store_dir, static, monkeypatch) -> None:
    opened: list[str] = []

    class Interrupted(ViewerServer):
        def serve_forever(self, poll_interval: float = 0.5) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(view_mod, "ViewerServer", Interrupted)
    monkeypatch.setattr(view_mod, "static_dir", lambda: str(static))
    monkeypatch.setattr(view_mod.webbrowser, "open", lambda url: opened.append(url))
    code, out, _ = run(capsys, "view", str(store_dir), "--no-browser")
    assert code == 0 and opened == [] and _browser_threads() == []
    assert out.startswith("spanprof: viewer at http://127.0.0.1:")

    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "view", str(store_dir), "--no-browser", "--port", str(port))
    assert (code, out) == (1, "")
    assert one_error_line(err).startswith(f"spanprof: error: cannot listen on 127.0.0.1:{port}: ")


def child_env() -> dict[str, str]:
    """Children import the spanprof these tests import (installed, or this source tree)."""
    env = clean_env()
    env.pop("PYTEST_CURRENT_TEST", None)
    installed = {os.path.realpath(p) for p in site.getsitepackages()}
    if SPANPROF_ROOT not in installed:
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([SPANPROF_ROOT, *([old] if old else [])])
    return env


# SIGINT is ignored in children of non-interactive shells; a terminal's Ctrl-C is not.
_CLI_WITH_CTRL_C = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from spanprof.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_view_process_stops_cleanly(store_dir: Path, stop: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI_WITH_CTRL_C, "view", str(store_dir), "--no-browser"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, "the viewer printed nothing"
        line = proc.stdout.readline()
        match = re.fullmatch(VIEWER_LINE.format(port=r"\d+") + "\n", line)
        assert match is not None, (line, proc.stderr and proc.stderr.read())
        url = match.group(1)
        with urllib.request.urlopen(url + "api/traces", timeout=TIMEOUT) as resp:
            assert resp.status == 200
            endpoints = json.loads(resp.read())["endpoints"]
            assert endpoints == ["GET /lost", "GET /orders", "GET /report"]
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert b"SPANPROF_JS" in resp.read()  # the real viewer page
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""


# -- end to end on a real recording --------------------------------------------------------------

APP = """
import time
from opentelemetry import trace

tracer = trace.get_tracer("e2e")


def burn_cpu(seconds):
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


with tracer.start_as_current_span("GET /e2e", kind=trace.SpanKind.SERVER):
    with tracer.start_as_current_span("crunch"):
        burn_cpu(0.4)
"""


def test_real_recording_through_every_view(capsys, tmp_path: Path) -> None:
    app = tmp_path / "e2e_app.py"
    app.write_text(APP)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "spanprof", "run", "-o", str(out), str(app)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    with StoreReader(out) as reader:
        [trace] = reader.traces()
        spans = {s["name"]: s["span_id"] for s in reader.trace(trace["trace_id"])["spans"]}
    assert trace["endpoint"] == "GET /e2e"
    crunch = spans["crunch"]

    code, text, err = run(capsys, "summary", str(out), "--endpoint", "GET /e2e")
    assert code == 0, err
    burn = [r for r in function_rows(text) if r[0] == "burn_cpu"]
    assert burn and burn[0][1] == str(app) and burn[0][2] > 0
    span_rows = [line.split(maxsplit=5) for line in tables(text)["Spans by total CPU"]]
    assert {(r[4], r[5]) for r in span_rows} >= {(crunch, "crunch")}

    html_out = tmp_path / "fg.html"
    code, _, err = run(capsys, "flamegraph", str(out), "-o", str(html_out), "--span", crunch)
    assert code == 0, err
    flame = embedded(html_out.read_text())["flame"]
    main = node(flame, "thread MainThread")
    labels = []
    todo = [main]
    while todo:
        current = todo.pop()
        labels.append(current["name"])
        todo.extend(current["children"])
    assert any(label.startswith("burn_cpu (e2e_app.py:") for label in labels)

    ss = tmp_path / "e2e.speedscope.json"
    argv = ["export", str(out), "--format", "speedscope", "-o", str(ss)]
    argv += ["--trace", trace["trace_id"]]
    assert run(capsys, *argv)[0] == 0
    doc = json.loads(ss.read_text())
    check_speedscope(doc)
    assert "burn_cpu" in {f["name"] for f in doc["shared"]["frames"]}

    pp = tmp_path / "e2e.pprof"
    argv = ["export", str(out), "--format", "pprof", "-o", str(pp), "--span", crunch]
    assert run(capsys, *argv)[0] == 0
    parsed = pprof_samples(pp)
    assert parsed and {s.labels["span_name"] for s in parsed} == {"crunch"}
    assert any("burn_cpu" in s.functions for s in parsed)
