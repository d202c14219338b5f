"""A small shop service to profile: the bundled spanprof demo.

It serves HTTP on 127.0.0.1 (a free port), then drives itself with a short burst
of requests and exits, so ``spanprof run examples/demo_service.py`` records a
realistic mix in a few seconds:

- ``GET /checkout`` fans the pricing of a cart out to a thread pool;
- ``GET /search`` runs asyncio tasks on a loop, one of which hands work to
  ``asyncio.to_thread``;
- ``GET /report`` is the slow endpoint: CPU-heavy aggregation, sections rendered
  on the thread pool, and an export on a plain thread, after a slow query.

Every request is an OpenTelemetry span named ``METHOD route``, as HTTP
instrumentations name them; spanprof links the samples to those spans.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import trace

tracer = trace.get_tracer("demo-shop")
pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pricing")


# --- business code (what the flame graphs should show) ---------------------


def price_item(sku: int) -> float:
    """CPU work on a pool thread: a few thousand rounds of hashing per item."""
    digest = str(sku).encode()
    for _ in range(6000):
        digest = hashlib.sha256(digest).digest()
    return (digest[0] + 100) / 10


def checkout(cart: list[int]) -> dict[str, float]:
    with tracer.start_as_current_span("price cart"):
        prices = list(pool.map(price_item, cart))
    with tracer.start_as_current_span("apply discounts"):
        total = apply_discounts(prices)
    return {"total": round(total, 2)}


def apply_discounts(prices: list[float]) -> float:
    total = 0.0
    for i, price in enumerate(sorted(prices)):
        total += price * (0.9 if i % 3 == 0 else 1.0)
    return total


def rank_results(query: str, n: int) -> list[str]:
    """Pure-Python scoring, run in asyncio tasks."""
    scored = []
    for i in range(n):
        word = f"{query}-{i}"
        scored.append((sum(ord(c) * (j + 1) for j, c in enumerate(word)) % 997, word))
    scored.sort()
    return [w for _, w in scored[:5]]


def load_thumbnails(words: list[str]) -> int:
    """Blocking work handed to a thread with asyncio.to_thread."""
    size = 0
    for w in words:
        data = w.encode() * 2000
        size += len(hashlib.md5(data).hexdigest())
    return size


async def search(query: str) -> dict[str, object]:
    async def shard(i: int) -> list[str]:
        with tracer.start_as_current_span(f"search shard {i}"):
            out = []
            for _ in range(4):
                out += rank_results(f"{query}{i}", 3000)
                await asyncio.sleep(0)  # let the other shards interleave
            return out

    results = await asyncio.gather(*(shard(i) for i in range(3)))
    words = [w for part in results for w in part]
    with tracer.start_as_current_span("thumbnails"):
        size = await asyncio.to_thread(load_thumbnails, words)
    return {"hits": len(words), "thumbnail_bytes": size}


def render_section(section: int) -> int:
    """CPU work on a pool thread: formats one section of the report."""
    lines = []
    for row in range(4000):
        lines.append(f"{section:02d}-{row:05d} {row * section % 977:>6} {hash((row, section))}")
    return len("\n".join(sorted(lines)))


def build_report() -> dict[str, int]:
    """The slow endpoint: a slow query, heavy aggregation, pool rendering, an export."""
    with tracer.start_as_current_span("query warehouse"):
        time.sleep(0.6)  # stands in for a slow database query (wall time, no CPU)
    with tracer.start_as_current_span("aggregate"):
        buckets: dict[int, int] = {}
        for i in range(1_200_000):
            key = (i * 7919) % 1024
            buckets[key] = buckets.get(key, 0) + i % 13
    with tracer.start_as_current_span("render sections"):
        rendered = sum(pool.map(render_section, range(12)))
    exported: list[int] = []
    with tracer.start_as_current_span("export report"):
        t = threading.Thread(target=lambda: exported.append(write_report(buckets)))
        t.start()
        t.join()
    return {"buckets": len(buckets), "bytes": exported[0] + rendered}


def write_report(buckets: dict[int, int]) -> int:
    text = ""
    for _ in range(40):
        text = json.dumps(buckets, sort_keys=True)
    return len(text)


# --- HTTP plumbing -----------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        route = self.path.split("?")[0]
        with tracer.start_as_current_span(
            f"GET {route}", kind=trace.SpanKind.SERVER, attributes={"http.route": route}
        ):
            if route == "/checkout":
                body = checkout(list(range(12)))
            elif route == "/search":
                body = asyncio.run(search("shoes"))
            elif route == "/report":
                body = build_report()
            else:
                self.send_error(404)
                return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass  # keep the demo's output short


def drive(port: int, rounds: int) -> None:
    """A tiny load generator: a few concurrent clients, a mix of routes."""

    def client(routes: list[str]) -> None:
        for route in routes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=60) as r:
                r.read()

    mix = ["/checkout", "/search", "/checkout", "/report", "/search", "/checkout"]
    clients = [
        threading.Thread(target=client, args=(mix[i:] + mix[:i],), name=f"client-{i}")
        for i in range(3)
    ]
    for _ in range(rounds):
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        clients = [threading.Thread(target=client, args=(mix,), name=c.name) for c in clients]


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    serving = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    serving.start()
    started = time.perf_counter()
    try:
        drive(port, rounds)
    finally:
        server.shutdown()
        server.server_close()
        pool.shutdown()
    print(f"demo: served {rounds * 18} requests in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
