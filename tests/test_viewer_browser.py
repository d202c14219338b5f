"""The viewer in real headless Chromium: trace -> span -> flame graph across threads.

Records the bundled demo with ``spanprof run``, serves it with ``spanprof view``,
and drives Debian's Chromium with Playwright as a user would: open the slowest
trace, click a span whose work ran on pool threads, find the pool worker's
function in that span's flame graph. The screenshot is kept in artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from workload_runs import clean_env

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("viewer") / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanprof",
            "run",
            "-o",
            str(out),
            "--cpu-budget",  # a steady 100 Hz: the budget would lower it on a busy machine
            "100",
            str(ROOT / "examples" / "demo_service.py"),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def viewer(recording: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanprof", "view", str(recording), "--no-browser"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        for line in proc.stdout:
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if found:
                url = found.group(0)
                break
        assert url, "spanprof view did not say where it serves"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def api(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.load(response)


def test_slowest_trace_to_a_pool_span_flame_graph(viewer: str) -> None:
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is required (.ci/run installs it)"
    slowest = api(viewer, "api/traces")["traces"][0]
    spans = api(viewer, f"api/trace/{slowest['trace_id']}")["spans"]
    on_pool = [s for s in spans if any(t.startswith("pricing") for t in s["threads"])]
    assert on_pool, "the slowest trace of the demo fans out to the pool"
    target = max(on_pool, key=lambda s: s["self_cpu_ns"])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(viewer)
            rows = page.locator('[data-testid="trace-row"]')
            rows.first.wait_for()
            # slowest first: the first row is the slowest trace
            assert rows.first.get_attribute("data-trace-id") == slowest["trace_id"]
            rows.first.click()
            span_row = page.locator(f'[data-testid="span-row"][data-span-id="{target["span_id"]}"]')
            span_row.wait_for()
            span_row.click()
            flame = page.locator('[data-testid="flamegraph"][data-ready="1"]')
            flame.wait_for()
            frames = json.loads(flame.get_attribute("data-frames") or "[]")
            page.wait_for_timeout(800)  # let the flame graph's entry animation finish
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "viewer-span-flamegraph.png"), full_page=True)
        finally:
            browser.close()
    assert any(name.startswith("render_section") for name in frames), frames
