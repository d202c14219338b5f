"""The local store: one SQLite file in the output directory, written as the run goes.

Writers (each profiled process: its profile chunks and its finished spans)
append; readers (the views) open it read-only. The file records its schema
version; a newer or corrupt file is refused with one clear line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from spanprof.model import Chunk, Frame, Labels

__all__ = [
    "FILENAME",
    "SCHEMA_VERSION",
    "SpanRow",
    "StoreError",
    "StoreReader",
    "StoreSample",
    "StoreWriter",
    "store_path",
]

FILENAME = "spanprof.db"
SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, seq INTEGER NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, period_ns INTEGER NOT NULL,
    dropped INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY, function TEXT NOT NULL, filename TEXT NOT NULL,
    line INTEGER NOT NULL, start_line INTEGER NOT NULL,
    UNIQUE (function, filename, line, start_line));
CREATE TABLE IF NOT EXISTS stacks (id INTEGER PRIMARY KEY, frames BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS samples (
    chunk_id INTEGER NOT NULL, stack_id INTEGER NOT NULL,
    thread_id INTEGER, thread_native_id INTEGER, thread_name TEXT,
    trace_id TEXT, span_id TEXT, span_name TEXT, local_root_span_id TEXT,
    trace_endpoint TEXT, trace_type TEXT, labels TEXT,
    count INTEGER NOT NULL, cpu_ns INTEGER NOT NULL, wall_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_span ON samples (span_id);
CREATE INDEX IF NOT EXISTS samples_trace ON samples (trace_id);
CREATE INDEX IF NOT EXISTS samples_endpoint ON samples (trace_endpoint);
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT,
    name TEXT NOT NULL, kind TEXT NOT NULL, start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL, status TEXT NOT NULL, attributes TEXT NOT NULL,
    pid INTEGER NOT NULL, PRIMARY KEY (trace_id, span_id));
"""
# (Stores written before 2026-11-26 also have an index spans_parent on (trace_id,
# parent_span_id); no query needs it, and each span written paid for it.)

# Labels with a column of their own; any other label goes to the JSON `labels`.
_COLUMNS = {
    "thread.id": "thread_id",
    "thread.native_id": "thread_native_id",
    "thread.name": "thread_name",
    "trace_id": "trace_id",
    "span_id": "span_id",
    "span_name": "span_name",
    "local_root_span_id": "local_root_span_id",
    "trace_endpoint": "trace_endpoint",
    "trace_type": "trace_type",
}
_SAMPLE_COLUMNS = list(_COLUMNS.values())


# A row of the spans table: trace id, span id, parent span id (or None), name,
# kind, start ns, end ns, status, attributes (JSON), pid.
SpanRow = tuple[str, str, str | None, str, str, int, int, str, str, int]


class StoreError(Exception):
    """The store cannot be used; ``str()`` is one line saying why."""


def store_path(directory: str | os.PathLike[str]) -> str:
    """The store file of an output directory."""
    return os.path.join(os.fspath(directory), FILENAME)


class StoreWriter:
    """Appends one process's chunks and spans. Thread-safe; every write is one transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
                isolation_level=None,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                found = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                if found is None:
                    self._db.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(found[0]) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has store schema version {found[0]}; this spanprof "
                        f"writes version {SCHEMA_VERSION}: use another output directory"
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be used as a spanprof store: {exc}") from None
        self._frames: dict[tuple[str, str, int, int], int] = {}
        self._stacks: dict[tuple[bytes], int] = {}
        self._max_variables = _max_variables(self._db)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def write_chunk(self, chunk: Chunk) -> None:
        """Store one profile chunk: its frames, stacks and samples."""
        with self._lock, self._transaction():
            cur = self._db.execute(
                "INSERT INTO chunks (pid, seq, start_ns, end_ns, period_ns, dropped)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    chunk.pid,
                    chunk.seq,
                    chunk.start_ns,
                    chunk.end_ns,
                    chunk.period_ns,
                    chunk.dropped,
                ),
            )
            chunk_id = cur.lastrowid
            frames = self._frames
            keys = [(f.function, f.filename, f.line, f.start_line) for f in chunk.frames]
            new_frames = [k for k in dict.fromkeys(keys) if k not in frames]
            self._intern(
                frames, "frames", ("function", "filename", "line", "start_line"), new_frames
            )
            frame_ids = [frames[k] for k in keys]
            blobs = [array("I", [frame_ids[i] for i in s.stack]).tobytes() for s in chunk.samples]
            stacks = self._stacks
            self._intern(
                stacks,
                "stacks",
                ("frames",),
                [(b,) for b in dict.fromkeys(blobs) if (b,) not in stacks],
            )
            rows = []
            for sample, blob in zip(chunk.samples, blobs, strict=True):
                columns: dict[str, Any] = {}
                extra = {}
                for key, value in sample.labels:
                    column = _COLUMNS.get(key)
                    if column is not None:
                        columns[column] = value
                    else:
                        extra[key] = value
                rows.append(
                    (
                        chunk_id,
                        stacks[(blob,)],
                        *(columns.get(c) for c in _SAMPLE_COLUMNS),
                        json.dumps(extra) if extra else None,
                        sample.count,
                        sample.cpu_ns,
                        sample.wall_ns,
                    )
                )
            self._insert_many(
                f"INSERT INTO samples (chunk_id, stack_id, {', '.join(_SAMPLE_COLUMNS)},"
                " labels, count, cpu_ns, wall_ns)",
                rows,
            )

    def _insert_many(self, head: str, rows: Sequence[Sequence[Any]]) -> None:
        """``head VALUES (...), (...), ...``: many rows per statement.

        ``executemany`` steps (and so releases and re-takes the GIL) once per
        row; with the application's threads wanting the GIL, each re-take can
        wait a whole switch interval (5 ms), and forces the app to switch.
        """
        if not rows:
            return
        width = len(rows[0])
        per = max(1, self._max_variables // width)
        one = "(" + ", ".join("?" * width) + ")"
        for i in range(0, len(rows), per):
            part = rows[i : i + per]
            self._db.execute(
                f"{head} VALUES {', '.join([one] * len(part))}",
                [value for row in part for value in row],
            )

    def _intern(
        self, ids: dict[Any, int], table: str, columns: tuple[str, ...], new: list[Any]
    ) -> None:
        """Give each of ``new`` (rows of ``columns``, unique) its id in ``table``, into ``ids``.

        Rows another process (or an earlier run) stored already keep their id.
        """
        if not new:
            return
        names = ", ".join(columns)
        self._insert_many(f"INSERT OR IGNORE INTO {table} ({names})", new)
        width = len(columns) + 1
        per = max(1, self._max_variables // width)
        one = "(" + ", ".join("?" * width) + ")"
        match = " AND ".join(f"t.{c} = v.{c}" for c in columns)
        for i in range(0, len(new), per):
            part = new[i : i + per]
            # one row back (group_concat): a row per id would step, and drop the GIL, per id
            (found,) = self._db.execute(
                f"WITH v(k, {names}) AS (VALUES {', '.join([one] * len(part))})"
                f" SELECT group_concat(v.k || ':' || t.id) FROM v JOIN {table} t ON {match}",
                [value for k, row in enumerate(part) for value in (k, *row)],
            ).fetchone()
            pairs = dict(map(int, kv.split(":")) for kv in (found or "").split(",") if kv)
            if len(pairs) != len(part):
                raise sqlite3.DatabaseError(f"{table}: {len(part) - len(pairs)} rows not stored")
            for k, row in enumerate(part):
                ids[row] = pairs[k]

    def write_spans(self, spans: Iterable[dict[str, Any]]) -> None:
        """Store finished spans given as dicts with the columns of the ``spans`` table."""
        self.write_span_rows(
            [
                (
                    s["trace_id"],
                    s["span_id"],
                    s.get("parent_span_id"),
                    s["name"],
                    s["kind"],
                    s["start_ns"],
                    s["end_ns"],
                    s["status"],
                    json.dumps(s.get("attributes") or {}),
                    s["pid"],
                )
                for s in spans
            ]
        )

    def write_span_rows(self, rows: Sequence[SpanRow]) -> None:
        """Store finished spans given as rows of the ``spans`` table, in its column order."""
        with self._lock, self._transaction():
            self._insert_many("INSERT OR REPLACE INTO spans", rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _max_variables(db: sqlite3.Connection) -> int:
    """How many ``?`` one statement may hold (999 before SQLite 3.32)."""
    getlimit = getattr(db, "getlimit", None)  # Python 3.11+
    if getlimit is not None:
        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK): one write lock per write, never longer."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


@dataclass(frozen=True)
class StoreSample:
    """Aggregated samples of one stack, thread and span, as the views need them."""

    frames: tuple[Frame, ...]  # leaf first
    thread_name: str
    thread_id: int
    span_id: str | None
    trace_id: str | None
    trace_endpoint: str | None
    count: int
    cpu_ns: int
    wall_ns: int
    labels: Labels = ()  # every label the samples were stored with


class StoreReader:
    """Read-only access for the views."""

    def __init__(self, directory_or_file: str | os.PathLike[str]) -> None:
        path = os.fspath(directory_or_file)
        if os.path.isdir(path):
            path = store_path(path)
        self.path = path
        if not os.path.exists(path):
            raise StoreError(f"no spanprof store at {path} (record one with `spanprof run`)")
        try:
            self._db = sqlite3.connect(
                f"file:{_uri_path(path)}?mode=ro",
                uri=True,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
            found = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} is not a readable spanprof store ({exc})") from None
        if found is None:
            raise StoreError(f"{path} is not a spanprof store (no schema version)")
        if int(found[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer spanprof (store schema {found[0]}, this one "
                f"reads up to {SCHEMA_VERSION}): upgrade spanprof"
            )
        self._frames: dict[int, Frame] = {}
        self._stacks: dict[int, tuple[Frame, ...]] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} could not be read ({exc})") from None

    # -- traces and spans ---------------------------------------------------

    def endpoints(self) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT trace_endpoint FROM samples WHERE trace_endpoint IS NOT NULL"
            " UNION SELECT name FROM spans WHERE parent_span_id IS NULL ORDER BY 1"
        )
        return [r[0] for r in rows]

    def traces(
        self, endpoint: str | None = None, text: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Traces, slowest first, with the CPU and wall time sampled under them."""
        rows = self._query(
            """
            WITH roots AS (
                SELECT s.trace_id, s.name, s.kind, s.start_ns, s.end_ns FROM spans s
                WHERE s.parent_span_id IS NULL OR NOT EXISTS (
                    SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id
                    AND p.span_id = s.parent_span_id)),
            bounds AS (
                SELECT trace_id, MIN(start_ns) AS start_ns, MAX(end_ns) AS end_ns,
                       COUNT(*) AS span_count FROM spans GROUP BY trace_id),
            root AS (
                SELECT trace_id, name, kind FROM roots r WHERE start_ns = (
                    SELECT MIN(start_ns) FROM roots r2 WHERE r2.trace_id = r.trace_id)
                GROUP BY trace_id),
            sampled AS (
                SELECT trace_id, SUM(cpu_ns) AS cpu_ns, SUM(wall_ns) AS wall_ns FROM samples
                WHERE trace_id IS NOT NULL GROUP BY trace_id)
            SELECT b.trace_id, root.name, root.kind, b.start_ns, b.end_ns - b.start_ns,
                   COALESCE(sampled.cpu_ns, 0), COALESCE(sampled.wall_ns, 0), b.span_count
            FROM bounds b JOIN root USING (trace_id) LEFT JOIN sampled USING (trace_id)
            WHERE (:endpoint IS NULL OR root.name = :endpoint)
              AND (:text IS NULL OR b.trace_id LIKE :like OR EXISTS (
                    SELECT 1 FROM spans s WHERE s.trace_id = b.trace_id
                    AND (s.name LIKE :like OR s.attributes LIKE :like)))
            ORDER BY b.end_ns - b.start_ns DESC LIMIT :limit
            """,
            {"endpoint": endpoint, "text": text or None, "like": f"%{text}%", "limit": limit},
        )
        return [
            {
                "trace_id": r[0],
                "endpoint": r[1],
                "trace_type": r[2],
                "start_ns": r[3],
                "duration_ns": r[4],
                "cpu_ns": r[5],
                "wall_ns": r[6],
                "span_count": r[7],
            }
            for r in rows
        ]

    def trace(self, trace_id: str) -> dict[str, Any]:
        """A trace's spans by start time, each with its sampled CPU and wall time:
        ``self`` (linked to it) and ``total`` (with its descendants), over every thread."""
        spans = self._query(
            "SELECT span_id, parent_span_id, name, kind, start_ns, end_ns, status, attributes"
            " FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
            (trace_id,),
        )
        own = {
            r[0]: r[1:]
            for r in self._query(
                "SELECT span_id, SUM(cpu_ns), SUM(wall_ns), GROUP_CONCAT(DISTINCT thread_name)"
                " FROM samples WHERE trace_id = ? GROUP BY span_id",
                (trace_id,),
            )
        }
        out = []
        for span_id, parent, name, kind, start, end, status, attrs in spans:
            cpu, wall, threads = own.get(span_id, (0, 0, None))
            out.append(
                {
                    "span_id": span_id,
                    "parent_span_id": parent,
                    "name": name,
                    "kind": kind,
                    "start_ns": start,
                    "end_ns": end,
                    "status": status,
                    "attributes": json.loads(attrs),
                    "self_cpu_ns": cpu or 0,
                    "self_wall_ns": wall or 0,
                    "total_cpu_ns": cpu or 0,
                    "total_wall_ns": wall or 0,
                    "threads": sorted(set(threads.split(","))) if threads else [],
                }
            )
        by_id = {s["span_id"]: s for s in out}
        for span in out:  # add each span's own time to all its ancestors
            seen = set()
            parent = by_id.get(span["parent_span_id"])
            while parent is not None and parent["span_id"] not in seen:
                seen.add(parent["span_id"])
                parent["total_cpu_ns"] += span["self_cpu_ns"]
                parent["total_wall_ns"] += span["self_wall_ns"]
                for t in span["threads"]:
                    if t not in parent["threads"]:
                        parent["threads"] = sorted([*parent["threads"], t])
                parent = by_id.get(parent["parent_span_id"])
        return {"trace_id": trace_id, "spans": out}

    def descendants(self, trace_id: str, span_id: str) -> set[str]:
        """``span_id`` and every span below it."""
        children: dict[str | None, list[str]] = {}
        for sid, parent in self._query(
            "SELECT span_id, parent_span_id FROM spans WHERE trace_id = ?", (trace_id,)
        ):
            children.setdefault(parent, []).append(sid)
        out, todo = set(), [span_id]
        while todo:
            sid = todo.pop()
            if sid not in out:
                out.add(sid)
                todo.extend(children.get(sid, ()))
        return out

    def span_trace(self, span_id: str) -> str | None:
        rows = self._query("SELECT trace_id FROM spans WHERE span_id = ? LIMIT 1", (span_id,))
        if rows:
            return str(rows[0][0])
        rows = self._query("SELECT trace_id FROM samples WHERE span_id = ? LIMIT 1", (span_id,))
        return str(rows[0][0]) if rows else None

    # -- samples --------------------------------------------------------------

    def samples(
        self, *, span: str | None = None, trace: str | None = None, endpoint: str | None = None
    ) -> Iterator[StoreSample]:
        """Samples of a span and its descendants, a trace, an endpoint, or (no filter)
        the whole recording; from every thread and process."""
        where, params = "1", []
        if span is not None:
            trace_id = self.span_trace(span)
            ids = self.descendants(trace_id, span) if trace_id else {span}
            where = f"span_id IN ({', '.join('?' * len(ids))})"
            params = sorted(ids)
        elif trace is not None:
            where, params = "trace_id = ?", [trace]
        elif endpoint is not None:
            where, params = "trace_endpoint = ?", [endpoint]
        label_columns = ", ".join(_SAMPLE_COLUMNS)
        rows = self._query(
            f"SELECT stack_id, {label_columns}, labels, SUM(count), SUM(cpu_ns), SUM(wall_ns)"
            f" FROM samples WHERE {where} GROUP BY stack_id, {label_columns}, labels",
            params,
        )
        names = list(_COLUMNS)  # label keys, in column order
        for stack_id, *columns, extra, count, cpu, wall in rows:
            values = dict(zip(names, columns, strict=True))
            labels = tuple((k, v) for k, v in values.items() if v is not None)
            if extra:
                labels += tuple(json.loads(extra).items())
            yield StoreSample(
                self._stack(stack_id),
                values["thread.name"] or "",
                values["thread.id"] or 0,
                values["span_id"],
                values["trace_id"],
                values["trace_endpoint"],
                count,
                cpu,
                wall,
                labels,
            )

    def _stack(self, stack_id: int) -> tuple[Frame, ...]:
        stack = self._stacks.get(stack_id)
        if stack is None:
            (blob,) = self._query("SELECT frames FROM stacks WHERE id = ?", (stack_id,))[0]
            ids = array("I")
            ids.frombytes(blob)
            stack = self._stacks[stack_id] = tuple(self._frame(i) for i in ids)
        return stack

    def _frame(self, frame_id: int) -> Frame:
        frame = self._frames.get(frame_id)
        if frame is None:
            row = self._query(
                "SELECT function, filename, line, start_line FROM frames WHERE id = ?",
                (frame_id,),
            )[0]
            frame = self._frames[frame_id] = Frame(*row)
        return frame

    def chunks(self) -> list[dict[str, int]]:
        rows = self._query(
            "SELECT pid, seq, start_ns, end_ns, period_ns, dropped FROM chunks ORDER BY id"
        )
        keys = ("pid", "seq", "start_ns", "end_ns", "period_ns", "dropped")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))
