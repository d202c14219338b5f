"""speedscope's file format: one "sampled" profile per thread over shared frames.

speedscope (https://www.speedscope.app) opens this without spanprof; its schema is
https://www.speedscope.app/file-format-schema.json. Stacks are listed root first,
as its importer expects, with weights in nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from spanprof.store import StoreSample

__all__ = ["SCHEMA", "speedscope_document"]

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(
    samples: Iterable[StoreSample], *, name: str, value: str = "cpu", exporter: str = "spanprof"
) -> dict[str, Any]:
    """The speedscope file for ``samples`` weighted by ``value`` (cpu or wall) time.

    Samples that weigh nothing are left out (speedscope would draw nothing for them);
    threads are sorted by name so the file is the same for the same store.
    """
    if value not in ("cpu", "wall"):
        raise ValueError(f"value must be cpu or wall, not {value!r}")
    attr = "cpu_ns" if value == "cpu" else "wall_ns"
    frames: list[dict[str, Any]] = []
    frame_index: dict[tuple[str, str, int], int] = {}
    per_thread: dict[str, tuple[list[list[int]], list[int]]] = {}
    for sample in samples:
        weight = getattr(sample, attr)
        if weight <= 0:
            continue
        stack = []
        for frame in reversed(sample.frames):  # store frames are leaf first
            key = (frame.function, frame.filename, frame.line)
            index = frame_index.get(key)
            if index is None:
                index = frame_index[key] = len(frames)
                entry: dict[str, Any] = {"name": frame.function, "file": frame.filename}
                if frame.line > 0:
                    entry["line"] = frame.line
                frames.append(entry)
            stack.append(index)
        stacks, weights = per_thread.setdefault(sample.thread_name, ([], []))
        stacks.append(stack)
        weights.append(weight)
    profiles = []
    for thread, (stacks, weights) in sorted(per_thread.items()):
        profiles.append(
            {
                "type": "sampled",
                "name": f"thread {thread} ({value})",
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": stacks,
                "weights": weights,
            }
        )
    # open on the thread that weighs most: usually where the time went
    heaviest = max(range(len(profiles)), key=lambda i: profiles[i]["endValue"], default=0)
    return {
        "$schema": SCHEMA,
        "name": name,
        "exporter": exporter,
        "activeProfileIndex": heaviest,
        "shared": {"frames": frames},
        "profiles": profiles,
    }
