"""TensorBoard event files: parse one file's scalars, cache parsed files.

core.runs builds runs out of these; nothing here knows what a run is.

Public API
    parse_event_file(path, size) -> ParsedFile     every scalar of one file, hparams, first wall time;
                                                    a bad file comes back with `problem` set, never raises
    EventCache / DEFAULT_CACHE                      parsed files keyed by (path, size, mtime_ns)

TensorBoard's reader stops quietly at a bad or incomplete record; parse_event_file
keeps the points before it (as TensorBoard shows them) and says what it found.

Speed: without TensorFlow installed, TensorBoard checks every record's CRC-32C
in pure Python, a third of the parse time. `use_fast_crc32c` hands that to
google-crc32c (the same checksum, in C). Files are parsed one after another:
worker processes were faster on two cores, but forking a threaded process (a
Streamlit server) can deadlock a worker on a lock another thread held, and
spawned workers re-run the Streamlit page script; the unchanged-file cache is
what makes the dashboard fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

# Keep every scalar (the default keeps a 10,000-point reservoir sample) and no bulky summaries.
_SIZE_GUIDANCE = {"scalars": 0, "tensors": 0, "images": 1, "audio": 1,
                  "histograms": 1, "compressedHistograms": 1}


@dataclass(frozen=True)
class ParsedFile:
    """One event file: tag -> (steps int64, wall_times float64 unix s, values float64)."""

    scalars: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    hparams: dict
    first_wall_time: float | None
    problem: str | None = None


class EventCache:
    """Parsed event files, reused while a file's (size, mtime_ns) stay the same.

    `parses` counts the files actually parsed, so a caller can tell hits from misses.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[int, int], ParsedFile]] = {}
        self._lock = threading.Lock()
        self.parses = 0

    def get(self, path: str, key: tuple[int, int]) -> ParsedFile | None:
        with self._lock:
            hit = self._entries.get(path)
        return hit[1] if hit is not None and hit[0] == key else None

    def put(self, path: str, key: tuple[int, int], parsed: ParsedFile) -> None:
        with self._lock:
            self._entries[path] = (key, parsed)
            self.parses += 1


DEFAULT_CACHE = EventCache()


# ---------------------------------------------------------------- parsing

def parse_event_file(path: str, size: int) -> ParsedFile:
    """Read one event file with TensorBoard's EventAccumulator, keeping every scalar.

    `size` is the file's size when listed. A live writer may have appended since:
    those points are read too, but the integrity check judges only `size` bytes.
    Never raises: a bad file comes back with `problem` set.
    """
    # Imported here: tensorboard takes ~0.4 s to import and most pages never parse.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    use_fast_crc32c()
    try:
        with open(path, "rb") as f:
            head = f.read(size)
        acc = EventAccumulator(path, size_guidance=_SIZE_GUIDANCE)
        acc.Reload()
    except Exception as exc:  # vanished, unreadable, not an event file: report, never crash
        return ParsedFile({}, {}, None, f"{path}: skipped, could not be read ({exc})")
    tags = acc.Tags()
    scalars = {tag: _arrays(acc.Scalars(tag), lambda e: e.value) for tag in tags["scalars"]}
    for tag in tags["tensors"]:  # TF2-style scalars arrive as tensors
        meta = acc.summary_metadata.get(tag)  # public attribute; SummaryMetadata() raises
        if meta is not None and meta.plugin_data.plugin_name == "scalars":
            scalars.setdefault(tag, _arrays(
                acc.Tensors(tag), lambda e: tensor_util.make_ndarray(e.tensor_proto).item()))
    try:
        first = acc.FirstEventTimestamp()
    except ValueError:  # no readable event at all
        first = None
    problem = _integrity_problem(path, head, scalars, first is not None)
    if first is None:
        return ParsedFile({}, {}, None, problem)
    return ParsedFile(scalars, _hparams(acc), first, problem)


def _arrays(events, value_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([e.step for e in events], dtype=np.int64),
            np.array([e.wall_time for e in events], dtype=np.float64),
            np.array([value_of(e) for e in events], dtype=np.float64))


def _integrity_problem(path: str, head: bytes, scalars: dict, any_event: bool) -> str | None:
    """Say what TensorBoard's reader silently stopped at, if anything.

    The reader stops quietly at the first bad or incomplete record. Walking the
    record framing (8-byte length, 4-byte CRC, data, 4-byte CRC) without CRCs is
    cheap; if the last complete record carrying a scalar is missing from what the
    reader returned, it stopped part-way.
    """
    if not any_event:
        return f"{path}: skipped, not a readable TensorBoard event file" if head else None
    spans, pos = [], 0
    while pos + 12 <= len(head):
        length = int.from_bytes(head[pos:pos + 8], "little")
        if pos + 16 + length > len(head):
            break
        spans.append((pos + 12, length))
        pos += 16 + length
    last = _last_scalar(head, spans, scalars)
    if last is not None:
        steps, walls, _ = scalars.get(last[0], (np.array([]), np.array([]), None))
        if not np.any((steps == last[1]) & (walls == last[2])):
            kept = sum(len(arrays[0]) for arrays in scalars.values())
            return (f"{path}: corrupt record part-way through; "
                    f"showing the {kept} points before it")
    if pos < len(head):
        return (f"{path}: ends in an incomplete record ({len(head) - pos} bytes), truncated "
                "or still being written; showing the points before it")
    return None


def _last_scalar(head: bytes, spans: list, scalars: dict) -> tuple[str, int, float] | None:
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    for start, length in reversed(spans[-100:]):
        try:
            event = event_pb2.Event.FromString(head[start:start + length])
        except DecodeError:
            continue
        for value in event.summary.value:
            if value.HasField("simple_value") or (value.HasField("tensor") and value.tag in scalars):
                return value.tag, event.step, event.wall_time
    return None


def _hparams(acc) -> dict:
    """Hyperparameters written by SummaryWriter.add_hparams (session start info)."""
    from google.protobuf import json_format
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        contents = acc.PluginTagToContent("hparams").values()
    except KeyError:  # no add_hparams in this file
        return {}
    found: dict = {}
    for content in contents:
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                found[key] = json_format.MessageToDict(value)
    return found



# ---------------------------------------------------------------- checksums

_fast_crc_lock = threading.Lock()


def use_fast_crc32c() -> bool:
    """Make TensorBoard's TensorFlow-free record reader (and writer) compute CRC-32C in C.

    Their checksum function is `tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c`,
    pure Python; google-crc32c computes the identical value. Returns whether
    the C version is in use (False if either module is missing or changed).
    """
    try:
        import google_crc32c
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    except ImportError:
        return False
    with _fast_crc_lock:
        if getattr(pywrap_tensorflow, "crc32c", None) is google_crc32c.value:
            return True
        if google_crc32c.implementation != "c" or not callable(getattr(pywrap_tensorflow, "crc32c", None)):
            return False
        pywrap_tensorflow.crc32c = google_crc32c.value
        return True
