"""What every view computes from store samples: the selection, flame tree and summaries.

The web viewer, the static flame graph, the terminal summary and the exports must
agree on what "this span" or "this endpoint" covers and on the numbers shown for
it, so the selection and the aggregations live here, once, as plain data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from spanprof.model import Frame
from spanprof.store import StoreError, StoreReader, StoreSample

__all__ = [
    "VALUES",
    "Selection",
    "SelectionError",
    "dumps",
    "endpoint_costs",
    "flame_tree",
    "frame_label",
    "function_summary",
    "open_store",
    "parse_span_id",
    "parse_trace_id",
    "select_samples",
    "span_costs",
    "span_names",
]

VALUES = ("cpu", "wall")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class SelectionError(LookupError):
    """The span, trace or endpoint asked for is not in the store; ``str()`` says which."""


def parse_span_id(text: str) -> str:
    """A span id as the store keeps it (16 lowercase hex digits), or ValueError."""
    value = text.strip().lower()
    if not _SPAN_ID.fullmatch(value):
        raise ValueError(f"{text!r} is not a span id (16 hex digits)")
    return value


def parse_trace_id(text: str) -> str:
    """A trace id as the store keeps it (32 lowercase hex digits), or ValueError."""
    value = text.strip().lower()
    if not _TRACE_ID.fullmatch(value):
        raise ValueError(f"{text!r} is not a trace id (32 hex digits)")
    return value


@dataclass(frozen=True)
class Selection:
    """At most one of: a span (with its descendants), a trace, an endpoint; none = all."""

    span: str | None = None
    trace: str | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("span", "trace", "endpoint") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"choose one of span, trace and endpoint, not {' and '.join(given)}")

    def describe(self) -> str:
        if self.span is not None:
            return f"span {self.span}"
        if self.trace is not None:
            return f"trace {self.trace}"
        if self.endpoint is not None:
            return f"endpoint {self.endpoint}"
        return "whole recording"


def open_store(directory: str | os.PathLike[str]) -> StoreReader:
    """The store of an output directory (or a store file); StoreError says what is wrong."""
    path = os.fspath(directory)
    if not os.path.exists(path):
        raise StoreError(f"no such directory: {path}")
    return StoreReader(path)


def select_samples(reader: StoreReader, selection: Selection) -> list[StoreSample]:
    """The store samples under ``selection``; SelectionError if what it names is unknown.

    A known span, trace or endpoint with no samples gives an empty list: that is an
    answer (it cost nothing measurable), not an error.
    """
    if selection.span is not None:
        if reader.span_trace(selection.span) is None:
            raise SelectionError(f"unknown span {selection.span}: not in {reader.path}")
        return list(reader.samples(span=selection.span))
    if selection.trace is not None:
        samples = list(reader.samples(trace=selection.trace))
        if not samples and not reader.trace(selection.trace)["spans"]:
            raise SelectionError(f"unknown trace {selection.trace}: not in {reader.path}")
        return samples
    if selection.endpoint is not None:
        known = reader.endpoints()
        if selection.endpoint not in known:
            listed = ", ".join(repr(e) for e in known[:10]) or "none"
            more = ", ..." if len(known) > 10 else ""
            raise SelectionError(f"unknown endpoint {selection.endpoint!r} (known: {listed}{more})")
        return list(reader.samples(endpoint=selection.endpoint))
    return list(reader.samples())


def _value_of(value: str) -> str:
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, not {value!r}")
    return "cpu_ns" if value == "cpu" else "wall_ns"


def frame_label(frame: Frame) -> str:
    """How a frame is named everywhere: ``qualified.function (file.py:LINE)``."""
    return f"{frame.function} ({os.path.basename(frame.filename)}:{frame.line})"


class _Node:
    __slots__ = ("children", "frame", "value")

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame
        self.value = 0
        self.children: dict[tuple[str, str, int], _Node] = {}


def flame_tree(samples: Iterable[StoreSample], value: str = "cpu") -> dict[str, Any]:
    """The d3-flame-graph tree: ``all`` > one node per thread > stacks root first.

    Values are inclusive sums of nanoseconds (what d3-flame-graph expects), frames
    with the same function, file and line at the same position are merged, and
    samples that add nothing (no CPU in a cpu tree) are left out, so no node is 0.
    """
    attr = _value_of(value)
    threads: dict[str, _Node] = {}
    total = 0
    for sample in samples:
        amount = getattr(sample, attr)
        if amount <= 0:
            continue
        total += amount
        node = threads.get(sample.thread_name)
        if node is None:
            node = threads[sample.thread_name] = _Node(None)
        node.value += amount
        for frame in reversed(sample.frames):
            key = (frame.function, frame.filename, frame.line)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(frame)
            child.value += amount
            node = child
    children = []
    for name, thread in sorted(threads.items()):
        out = {"name": f"thread {name}", "thread": name, "value": thread.value, "children": []}
        children.append(out)
        # Without recursion: stacks can be up to 4096 frames deep (max_depth).
        todo = [(thread, out["children"])]
        while todo:
            parent, siblings = todo.pop()
            for key in sorted(parent.children):
                child = parent.children[key]
                frame = child.frame
                assert frame is not None
                entry = {
                    "name": frame_label(frame),
                    "value": child.value,
                    "children": [],
                    "thread": name,
                    "file": frame.filename,
                    "line": frame.line,
                }
                siblings.append(entry)
                todo.append((child, entry["children"]))
    return {"name": "all", "value": total, "children": children}


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(value: Any) -> str:
    """Compact JSON of plain values, however deep: a flame tree of 4096-frame stacks is
    deeper than ``json.dumps`` may recurse, so that case is encoded with a stack."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except RecursionError:
        return _dumps_with_a_stack(value)


def _dumps_with_a_stack(value: Any) -> str:
    out: list[str] = []
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, _Raw):
            out.append(item.text)
        elif isinstance(item, dict):
            parts: list[Any] = []
            for i, (key, child) in enumerate(item.items()):
                parts += [_Raw(("," if i else "") + json.dumps(str(key)) + ":"), child]
            todo += [_Raw("}"), *reversed(parts)]
            out.append("{")
        elif isinstance(item, list | tuple):
            parts = []
            for i, child in enumerate(item):
                parts += [_Raw(","), child] if i else [child]
            todo += [_Raw("]"), *reversed(parts)]
            out.append("[")
        else:
            out.append(json.dumps(item))
    return "".join(out)


def function_summary(samples: Iterable[StoreSample]) -> dict[str, Any]:
    """CPU per function (by qualified name and file), by self CPU, highest first.

    ``self`` is CPU with the function as the leaf; ``total`` is CPU of samples whose
    stack contains it anywhere, counted once per sample even when it recurses.
    """
    self_cpu: dict[tuple[str, str], int] = {}
    total_cpu: dict[tuple[str, str], int] = {}
    grand = 0
    for sample in samples:
        cpu = sample.cpu_ns
        if cpu <= 0:
            continue
        grand += cpu
        if not sample.frames:
            continue
        leaf = sample.frames[0]
        key = (leaf.function, leaf.filename)
        self_cpu[key] = self_cpu.get(key, 0) + cpu
        for key in {(f.function, f.filename) for f in sample.frames}:
            total_cpu[key] = total_cpu.get(key, 0) + cpu
    functions = [
        {
            "function": function,
            "file": filename,
            "self_cpu_ns": self_cpu.get((function, filename), 0),
            "total_cpu_ns": total,
        }
        for (function, filename), total in total_cpu.items()
    ]
    functions.sort(key=lambda f: (-f["self_cpu_ns"], -f["total_cpu_ns"], f["function"], f["file"]))
    return {"functions": functions, "total_cpu_ns": grand}


def endpoint_costs(samples: Iterable[StoreSample]) -> list[dict[str, Any]]:
    """CPU and wall time per endpoint (``None``: samples outside any trace), CPU first."""
    rows: dict[str | None, dict[str, Any]] = {}
    traces: dict[str | None, set[str]] = {}
    for sample in samples:
        row = rows.get(sample.trace_endpoint)
        if row is None:
            row = rows[sample.trace_endpoint] = {
                "endpoint": sample.trace_endpoint,
                "cpu_ns": 0,
                "wall_ns": 0,
            }
            traces[sample.trace_endpoint] = set()
        row["cpu_ns"] += sample.cpu_ns
        row["wall_ns"] += sample.wall_ns
        if sample.trace_id is not None:
            traces[sample.trace_endpoint].add(sample.trace_id)
    for key, row in rows.items():
        row["traces"] = len(traces[key])
    return sorted(
        rows.values(), key=lambda r: (-r["cpu_ns"], r["endpoint"] is None, r["endpoint"] or "")
    )


def span_names(reader: StoreReader, trace_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored spans of these traces by span id (name, parent, trace id)."""
    spans: dict[str, dict[str, Any]] = {}
    for trace_id in sorted(set(trace_ids)):
        for span in reader.trace(trace_id)["spans"]:
            spans[span["span_id"]] = {
                "name": span["name"],
                "parent_span_id": span["parent_span_id"],
                "trace_id": trace_id,
            }
    return spans


def span_costs(
    reader: StoreReader, samples: list[StoreSample], selection: Selection
) -> list[dict[str, Any]]:
    """Spans under ``selection`` with sampled CPU, by total CPU, highest first.

    ``self`` is CPU linked to the span itself (on any thread); ``total`` adds its
    descendants'. A span whose samples were stored but whose span was not (the
    process died with it open) is listed with the name ``None``.
    """
    own: dict[str, list[int]] = {}
    trace_of: dict[str, str | None] = {}
    for sample in samples:
        if sample.span_id is None:
            continue
        row = own.setdefault(sample.span_id, [0, 0])
        row[0] += sample.cpu_ns
        row[1] += sample.wall_ns
        trace_of[sample.span_id] = sample.trace_id
    info = span_names(reader, (t for t in trace_of.values() if t is not None))
    scope: set[str] | None = None
    if selection.span is not None:
        trace_id = reader.span_trace(selection.span)
        scope = reader.descendants(trace_id, selection.span) if trace_id else {selection.span}

    rows: dict[str, dict[str, Any]] = {}

    def row(span_id: str) -> dict[str, Any]:
        found = rows.get(span_id)
        if found is None:
            meta = info.get(span_id, {})
            found = rows[span_id] = {
                "span_id": span_id,
                "trace_id": meta.get("trace_id", trace_of.get(span_id)),
                "name": meta.get("name"),
                "self_cpu_ns": 0,
                "total_cpu_ns": 0,
                "self_wall_ns": 0,
                "total_wall_ns": 0,
            }
        return found

    for span_id, (cpu, wall) in own.items():
        mine = row(span_id)
        mine["self_cpu_ns"] += cpu
        mine["self_wall_ns"] += wall
        seen: set[str] = set()
        current: str | None = span_id
        while current is not None and current not in seen:  # self, then each ancestor
            seen.add(current)
            if scope is not None and current not in scope:
                break
            target = row(current)
            target["total_cpu_ns"] += cpu
            target["total_wall_ns"] += wall
            current = info.get(current, {}).get("parent_span_id")
    out = [r for r in rows.values() if r["total_cpu_ns"] > 0]
    out.sort(key=lambda r: (-r["total_cpu_ns"], -r["self_cpu_ns"], r["name"] or "", r["span_id"]))
    return out
