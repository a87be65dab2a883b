"""Training runs on disk: find them, read their TensorBoard scalars, compare them.

A run is a folder under the runs root holding TensorBoard event files
(`*tfevents*`) and/or config.json / summary.json; nested folders are runs too,
named by their path relative to the root ("sweep/lr-3e-4"). torch's
`add_hparams` writes into a child folder named by a timestamp ("1712345678.91");
such a child belongs to its parent run. The seed project's runs
(`tensorboard_logs/run_YYYYmmdd_HHMMSS`, event files only) are runs of kind
"seed"; their tags are renamed onto ours (SEED_TAGS). Values are not rescaled.

Public API
    find_runs(root, now=None) -> list[RunInfo]      folders, files, config/summary, status; parses nothing
    load_runs(root, names=None, cache=None, workers=None, now=None) -> RunsData
                                                    scalars (run, tag, step, wall_time, value), infos, problems
    smooth(values, weight) -> np.ndarray            TensorBoard's debiased EMA, exactly
    with_smoothing(frame, weight) -> DataFrame      adds "smoothed", per (run, tag) series
    with_time_columns(frame, starts=None) -> DataFrame   adds "relative" (s since run start) and "wall" (UTC)
    best_epochs(frame, tag="val/accuracy", mode="max") -> DataFrame   run, step, value (first best)
    hparam_diff(infos) -> DataFrame                 keys x runs, only keys whose values differ
    scalars_csv(frame) -> str                       CSV text, floats written exactly
    EventCache / DEFAULT_CACHE                      parsed event files keyed by (path, size, mtime_ns)

Status rule (RunInfo.status): "finished" if summary.json says {"status": "finished"};
else "running" if any of the run's files changed within `running_window` seconds
(default 10 min; the Volume sync keeps remote mtimes); else "stopped" for runs
with config.json or summary.json (they went quiet without saying "finished"),
and "finished" for seed runs, which never write a completion marker.

Bad files never raise: an unreadable event file is skipped, and one that ends in
an incomplete record or has a corrupt record part-way keeps the points before it
(as TensorBoard shows them); each case adds a message naming the file to
`RunsData.problems`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

# The seed project's train.py logs these tags; the dashboard speaks ours.
SEED_TAGS = {
    "Loss/train": "train/loss",
    "Loss/val": "val/loss",
    "Accuracy/val": "val/accuracy",
    "Learning_rate": "lr",
}
COLUMNS = ["run", "tag", "step", "wall_time", "value"]
RUNNING_WINDOW_S = 600.0
# Below this many bytes to parse, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 1 << 20
# Keep every scalar (the default keeps a 10,000-point reservoir sample) and no bulky summaries.
_SIZE_GUIDANCE = {"scalars": 0, "tensors": 0, "images": 1, "audio": 1,
                  "histograms": 1, "compressedHistograms": 1}
_SEED_NAME = re.compile(r"run_(\d{8}_\d{6})")
_HPARAMS_CHILD = re.compile(r"\d+(\.\d+)?")  # add_hparams' default run_name is str(time.time())
_FILE_TIME = re.compile(r"tfevents\.(\d+)")


@dataclass(frozen=True)
class RunInfo:
    """One run folder: find_runs fills the filesystem fields, load_runs what the events say."""

    name: str                          # path relative to the runs root, "/"-separated
    path: Path
    kind: str                          # "audio-cnn", or "seed" for the seed project's runs
    event_files: tuple[Path, ...]      # in write order
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    last_activity: float = 0.0         # newest mtime of the run's files, unix seconds
    status: str = "stopped"            # running / finished / stopped (module docstring)
    problems: tuple[str, ...] = ()
    hparams: dict = field(default_factory=dict)   # from add_hparams (load_runs)
    start_time: float | None = None                # first event, unix seconds (load_runs)
    epochs: int | None = None                      # summary "epochs_completed", else val/accuracy points
    best_epoch: int | None = None                  # summary, else the first best val/accuracy step
    best_val_accuracy: float | None = None

    @property
    def params(self) -> dict:
        """Flat hyperparameters: config.json ("a.b" for nested keys), then hparams it lacks."""
        flat = _flatten(self.config)
        return flat | {k: v for k, v in self.hparams.items() if k not in flat}


@dataclass(frozen=True)
class ParsedFile:
    """One event file: tag -> (steps int64, wall_times float64 unix s, values float64)."""

    scalars: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    hparams: dict
    first_wall_time: float | None
    problem: str | None = None


@dataclass(frozen=True)
class RunsData:
    """What load_runs returns: one tidy scalars frame (COLUMNS), the runs, and messages."""

    scalars: pd.DataFrame
    runs: list[RunInfo]
    problems: list[str]

    @property
    def tags(self) -> list[str]:
        return sorted(self.scalars["tag"].unique())

    def run(self, name: str) -> RunInfo | None:
        return next((info for info in self.runs if info.name == name), None)


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


# ---------------------------------------------------------------- discovery

def find_runs(root: str | Path, now: float | None = None,
              running_window: float = RUNNING_WINDOW_S) -> list[RunInfo]:
    """Every run folder under `root` (sorted by name); parses no event file."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        events = sorted((Path(dirpath) / f for f in filenames
                         if "tfevents" in f and not f.startswith(".")), key=_write_order)
        if events or {"config.json", "summary.json"} & set(filenames):
            folders[Path(dirpath)] = events
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder != root and _HPARAMS_CHILD.fullmatch(folder.name) and folder.parent in folders:
            folders[folder.parent] = folders[folder.parent] + folders.pop(folder)
    now = time.time() if now is None else now
    return [_describe(root, folder, events, now, running_window)
            for folder, events in sorted(folders.items())]


def _write_order(path: Path) -> tuple[int, str]:
    found = _FILE_TIME.search(path.name)
    return (int(found.group(1)) if found else 0, path.name)


def _describe(root: Path, folder: Path, events: list[Path], now: float, window: float) -> RunInfo:
    name = folder.relative_to(root).as_posix() if folder != root else folder.name
    problems: list[str] = []
    config = _read_json(folder / "config.json", name, problems)
    summary = _read_json(folder / "summary.json", name, problems)
    markers = [p for p in (folder / "config.json", folder / "summary.json") if p.exists()]
    last = max((_mtime(p) for p in [*events, *markers]), default=0.0)
    kind = "seed" if _SEED_NAME.fullmatch(folder.name) and not markers else "audio-cnn"
    if summary.get("status") == "finished":
        status = "finished"
    elif now - last < window:
        status = "running"
    else:
        status = "stopped" if markers else "finished"
    return RunInfo(name=name, path=folder, kind=kind, event_files=tuple(events), config=config,
                   summary=summary, last_activity=last, status=status, problems=tuple(problems))


def _read_json(path: Path, run: str, problems: list[str]) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"run {run!r}: {path.name} could not be read ({exc})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"run {run!r}: {path.name} is not a JSON object")
        return {}
    return data


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
