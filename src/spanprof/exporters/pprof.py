"""pprof output: one gzip'd ``perftools.profiles.Profile`` file per chunk.

pprof is what ``go tool pprof``, Pyroscope and most profile viewers read, so a
chunk written here can be opened anywhere without spanprof installed.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import secrets
from collections.abc import Callable

from spanprof._proto import profile_pb2 as pb
from spanprof.model import Chunk, Frame, Labels, LabelValue

__all__ = ["PprofFileExporter", "encode_chunk"]

_log = logging.getLogger("spanprof")

# Order is part of the contract (DESIGN.md): count first, as pprof convention asks.
SAMPLE_TYPES: tuple[tuple[str, str], ...] = (
    ("samples", "count"),
    ("cpu", "nanoseconds"),
    ("wall", "nanoseconds"),
)
PERIOD_TYPE = ("wall", "nanoseconds")
DEFAULT_SAMPLE_TYPE = "cpu"
# Labels that are numbers even if a producer hands them over as strings.
NUM_LABEL_KEYS = frozenset({"thread.id", "thread.native_id"})

_INT64_MAX = (1 << 63) - 1
_UINT64 = 1 << 64


def _to_int64(value: int) -> int:
    """Fold unsigned 64-bit ids (e.g. pthread_t) into int64 instead of failing the chunk."""
    if value > _INT64_MAX:
        return value - _UINT64 if value < _UINT64 else _INT64_MAX
    return value


def encode_chunk(chunk: Chunk) -> bytes:
    """Serialize ``chunk`` as an uncompressed pprof Profile.

    Strings, functions, locations and label sets are interned in dicts as they
    are met, so the cost is one pass over frames plus one over samples.
    """
    strings: dict[str, int] = {"": 0}  # string_table[0] must be ""

    def s(text: str) -> int:
        idx = strings.get(text)
        if idx is None:
            idx = strings[text] = len(strings)
        return idx

    profile = pb.Profile()
    profile.sample_type.extend(pb.ValueType(type=s(t), unit=s(u)) for t, u in SAMPLE_TYPES)
    profile.period_type.type = s(PERIOD_TYPE[0])
    profile.period_type.unit = s(PERIOD_TYPE[1])
    profile.period = chunk.period_ns
    profile.default_sample_type = s(DEFAULT_SAMPLE_TYPE)
    profile.time_nanos = chunk.start_ns
    profile.duration_nanos = chunk.end_ns - chunk.start_ns
    if chunk.dropped > 0:
        profile.comment.append(s(f"spanprof: {chunk.dropped} samples dropped"))

    # One Function per (name, filename, start_line), one Location per distinct Frame;
    # loc_ids maps an index into chunk.frames to its location id. Messages are
    # built in place with add(): constructing them apart and appending copies.
    function_ids: dict[tuple[str, str, int], int] = {}
    location_ids: dict[Frame, int] = {}
    add_function = profile.function.add
    add_location = profile.location.add
    loc_ids: list[int] = []
    for frame in chunk.frames:
        loc_id = location_ids.get(frame)
        if loc_id is None:
            fkey = (frame.function, frame.filename, frame.start_line)
            func_id = function_ids.get(fkey)
            if func_id is None:
                func_id = function_ids[fkey] = len(function_ids) + 1
                name = s(frame.function)
                add_function(
                    id=func_id,
                    name=name,
                    system_name=name,
                    filename=s(frame.filename),
                    start_line=frame.start_line,
                )
            loc_id = location_ids[frame] = len(location_ids) + 1
            add_location(id=loc_id).line.add(function_id=func_id, line=frame.line)
        loc_ids.append(loc_id)

    # Samples of one thread/span share their label tuple: build a labelled
    # template once per tuple and CopyFrom it (the fastest way found with upb).
    templates: dict[Labels, pb.Sample] = {}
    add_sample = profile.sample.add
    for sample in chunk.samples:
        template = templates.get(sample.labels)
        if template is None:
            template = templates[sample.labels] = pb.Sample(
                label=[
                    _label(s(key), value, key in NUM_LABEL_KEYS, s)
                    for key, value in sample.labels
                    if value != ""  # str index 0 would read back as "no value"
                ]
            )
        out = add_sample()
        out.CopyFrom(template)
        out.location_id.extend([loc_ids[i] for i in sample.stack])
        out.value.extend((sample.count, sample.cpu_ns, sample.wall_ns))

    profile.string_table.extend(strings)  # dicts keep insertion order = index order
    return profile.SerializeToString()


def _label(key: int, value: LabelValue, numeric_key: bool, s: Callable[[str], int]) -> pb.Label:
    """int values become num labels, str values str labels (thread ids always num)."""
    if isinstance(value, int):
        return pb.Label(key=key, num=_to_int64(int(value)))
    if numeric_key:
        try:
            return pb.Label(key=key, num=_to_int64(int(value)))
        except ValueError:
            pass
    return pb.Label(key=key, str=s(str(value)))


class PprofFileExporter:
    """Writes each chunk to ``<directory>/spanprof-<pid>-<seq:05d>.pprof``, gzip'd.

    Files appear atomically (temp file in the same directory, then a hard link
    to the final name) so a reader globbing ``*.pprof`` never sees half a
    profile, and a name already taken (same pid, earlier run) is never
    overwritten. Like every
    exporter it never raises into the profiler: failures are logged on one line
    and counted in ``failed``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.written: list[str] = []
        self.failed = 0
        self._closed = False

    def export(self, chunk: Chunk) -> None:
        """Encode and write one chunk; never raises."""
        if self._closed:
            self.failed += 1
            _log.debug("pprof exporter is shut down; chunk ignored")
            return
        try:
            path = self._write(chunk)
        except Exception as exc:  # an exporter must not take the profiler down
            self.failed += 1
            _log.warning(
                "spanprof: could not write pprof chunk %s of pid %s to %s: %s: %s",
                getattr(chunk, "seq", "?"),
                getattr(chunk, "pid", "?"),
                self.directory,
                type(exc).__name__,
                str(exc).replace("\n", " "),
            )
            return
        self.written.append(path)

    def shutdown(self) -> None:
        """Nothing is buffered, so shutting down only refuses later exports."""
        self._closed = True

    def _write(self, chunk: Chunk) -> str:
        data = gzip.compress(encode_chunk(chunk), compresslevel=6, mtime=0)
        name = f"spanprof-{chunk.pid}-{chunk.seq:05d}.pprof"
        path = os.path.join(self.directory, name)
        os.makedirs(self.directory, exist_ok=True)
        # Dot-prefixed, not ending in .pprof: invisible to readers until renamed.
        # A random part keeps a crashed run's leftover (same pid) from blocking us.
        tmp = os.path.join(self.directory, f".{name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            path = self._publish(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return path

    @staticmethod
    def _publish(tmp: str, path: str) -> str:
        """Link ``tmp`` to ``path``, never over an existing file.

        A restarted process can get the same pid (pid 1 in a container); its
        files must not replace the previous run's, so a taken name gets a suffix.
        """
        stem = path[: -len(".pprof")]
        for attempt in range(1000):
            candidate = path if attempt == 0 else f"{stem}-{attempt}.pprof"
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                continue
            except PermissionError:
                # No hard links on this filesystem (some network/FUSE mounts):
                # a rename onto a name checked free is the next best thing.
                if os.path.exists(candidate):
                    continue
                os.rename(tmp, candidate)
                return candidate
        raise FileExistsError(path)
