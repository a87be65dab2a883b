"""TensorBoard event files: parse one file's scalars, cache parsed files, parse many in processes.

core.runs builds runs out of these; nothing here knows what a run is.

Public API
    parse_event_file(path, size) -> ParsedFile     every scalar of one file, hparams, first wall time;
                                                    a bad file comes back with `problem` set, never raises
    parse_files(jobs, workers=None) -> list[ParsedFile]   (path, size) jobs, in worker processes when it pays
    EventCache / DEFAULT_CACHE                      parsed files keyed by (path, size, mtime_ns)

TensorBoard's reader stops quietly at a bad or incomplete record; parse_event_file
keeps the points before it (as TensorBoard shows them) and says what it found.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

# Below this many bytes to parse, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 1 << 20
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



# ---------------------------------------------------------------- many files

_pool: tuple[int, ProcessPoolExecutor] | None = None  # (workers, pool)
_pool_lock = threading.Lock()


def _process_pool(workers: int) -> ProcessPoolExecutor | None:
    """One long-lived pool of forked workers; None where fork is unavailable or unsafe.

    Forked, because spawn and forkserver re-run the main module in every worker,
    and under Streamlit that is the page script. The workers fork once, at the
    first submit, from the thread that just parsed a file itself: every lazy
    module the parser needs is loaded by then, so a child never waits on a lock
    (tensorboard's lazy-load RLock was one) that another thread held at the fork.
    macOS and Windows parse in-process.
    """
    global _pool
    if sys.platform != "linux":
        return None
    with _pool_lock:
        if _pool is None or _pool[0] != workers:
            if _pool is not None:
                _pool[1].shutdown(wait=False, cancel_futures=True)
            _pool = (workers, ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                                                  initializer=_exit_with_parent,
                                                  initargs=(os.getpid(),)))
        return _pool[1]


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: end when the parent is gone (killed), as no queue EOF will say so.

    A forked worker holds copies of the parent's file descriptors (the queue it
    reads from, the dashboard's listening socket): orphaned, it would wait forever
    and keep the port taken.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _discard_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool[1].shutdown(wait=False, cancel_futures=True)
        _pool = None


def parse_files(jobs: list[tuple[str, int]], workers: int | None = None) -> list[ParsedFile]:
    """Parse (path, size) jobs, with worker processes when that pays off.

    The reader's CRC checks are pure Python and hold the GIL, so threads do not
    help (measured no faster than a plain loop); processes do. This process
    parses too: the first job (see _process_pool), then jobs from the back
    that no worker has started, while the workers take them from the front.
    """
    if workers is None:  # this process is a worker too: one fewer than cores
        cores = os.cpu_count() or 1
        big = sum(size for _, size in jobs) >= PARALLEL_MIN_BYTES
        workers = min(cores - 1, len(jobs) - 1) if len(jobs) > 1 and big else 0
    if workers <= 0 or len(jobs) < 2:
        return [parse_event_file(path, size) for path, size in jobs]
    first = parse_event_file(*jobs[0])
    rest = jobs[1:]
    try:
        pool = _process_pool(workers)
        futures = [pool.submit(parse_event_file, *job) for job in rest] if pool else []
    except (BrokenProcessPool, OSError, RuntimeError):  # no processes here (sandbox), or a dead pool
        _discard_pool()
        futures = []
    if not futures:
        return [first] + [parse_event_file(*job) for job in rest]
    results: list[ParsedFile | None] = [None] * len(rest)
    for i in reversed(range(len(rest))):
        if not futures[i].cancel():
            break  # a worker has it, and every job before it
        results[i] = parse_event_file(*rest[i])
    try:
        return [first] + [r if r is not None else f.result() for r, f in zip(results, futures)]
    except BrokenProcessPool:  # a worker died: parse what is missing here
        _discard_pool()
        return [first] + [r if r is not None else parse_event_file(*job)
                          for r, job in zip(results, rest)]

