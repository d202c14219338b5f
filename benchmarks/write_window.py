"""Cost of writing one profile window: pprof encoding and the local store.

Builds a synthetic 60 s window of 10,000 distinct stacks (30 frames each, from
2,000 distinct frames, over 64 threads and 500 spans: a busy service), then
times encoding it as gzip'd pprof and writing it to a fresh SQLite store.
Median of --rounds. Then the wall time of storing 200 spans while two threads
spin in Python (a busy application wanting the GIL): what a store write that
gives up the GIL often would cost in GIL hand-offs.

    python benchmarks/write_window.py [--stacks 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import sys
import tempfile
import threading
import time

from spanprof.exporters.pprof import encode_chunk
from spanprof.model import Chunk, ChunkSample, Frame
from spanprof.store import StoreWriter, store_path


def window(stacks: int, depth: int = 30) -> Chunk:
    rng = random.Random(42)
    frames = tuple(
        Frame(
            f"module{i % 50}.Class{i % 7}.function_{i}",
            f"/srv/app/module{i % 50}.py",
            10 + i % 400,
            1 + i % 300,
        )
        for i in range(2000)
    )
    samples = []
    for n in range(stacks):
        thread = n % 64
        span = n % 500
        labels = (
            ("thread.id", 140000000000 + thread),
            ("thread.native_id", 1000 + thread),
            ("thread.name", f"worker-{thread}"),
            ("trace_id", f"{span:032x}"),
            ("span_id", f"{span:016x}"),
            ("span_name", f"span {span}"),
            ("local_root_span_id", f"{span - span % 5:016x}"),
            ("trace_endpoint", f"GET /route/{span % 20}"),
            ("trace_type", "server"),
        )
        stack = tuple(rng.randrange(len(frames)) for _ in range(depth))
        samples.append(ChunkSample(stack, labels, 6, 60_000_000, 60_000_000))
    return Chunk(
        pid=1,
        seq=0,
        start_ns=0,
        end_ns=60_000_000_000,
        period_ns=10_000_000,
        frames=frames,
        samples=tuple(samples),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    chunk = window(opts.stacks)
    encode, compress, store = [], [], []
    for _ in range(opts.rounds):
        t0 = time.perf_counter()
        raw = encode_chunk(chunk)
        t1 = time.perf_counter()
        data = gzip.compress(raw, compresslevel=6, mtime=0)
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            writer = StoreWriter(store_path(tmp))
            t3 = time.perf_counter()
            writer.write_chunk(chunk)
            t4 = time.perf_counter()
            writer.close()
        encode.append(t1 - t0)
        compress.append(t2 - t1)
        store.append(t4 - t3)
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(
        f"python {sys.version.split()[0]}, one window: {opts.stacks} distinct stacks x 30 "
        f"frames, {opts.rounds} rounds (median)"
    )
    print(f"pprof encode:   {ms(encode):7.1f} ms  ({len(raw) / 1e6:.1f} MB raw)")
    print(f"gzip:           {ms(compress):7.1f} ms  ({len(data) / 1e6:.2f} MB on disk)")
    print(f"store write:    {ms(store):7.1f} ms  (one transaction)")
    print(
        f"per 60 s window: {ms(encode) + ms(compress) + ms(store):.0f} ms of the exporter "
        f"thread = {(ms(encode) + ms(compress) + ms(store)) / 600:.2f}% of one core"
    )
    busy_store(opts.rounds)
    return 0


def busy_store(rounds: int, spans: int = 200) -> None:
    rng = random.Random(7)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinners = [threading.Thread(target=spin) for _ in range(2)]
    walls = []
    with tempfile.TemporaryDirectory(prefix="spanprof-bench-") as tmp:
        writer = StoreWriter(store_path(tmp))
        for t in spinners:
            t.start()
        try:
            for _ in range(rounds):
                rows = [
                    {
                        "trace_id": f"{rng.getrandbits(128):032x}",
                        "span_id": f"{rng.getrandbits(64):016x}",
                        "parent_span_id": None,
                        "name": "work",
                        "kind": "internal",
                        "start_ns": 1,
                        "end_ns": 2,
                        "status": "UNSET",
                        "attributes": {"item": 1},
                        "pid": 1,
                    }
                    for _ in range(spans)
                ]
                start = time.perf_counter()
                writer.write_spans(rows)
                walls.append(time.perf_counter() - start)
        finally:
            stop.set()
            for t in spinners:
                t.join()
        writer.close()
    print(
        f"store {spans} spans next to 2 threads spinning in Python: "
        f"{statistics.median(walls) * 1000:.0f} ms wall (median; "
        f"{min(walls) * 1000:.0f}-{max(walls) * 1000:.0f})"
    )


if __name__ == "__main__":
    sys.exit(main())
