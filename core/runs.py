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
    load_runs(root, names=None, cache=None, now=None) -> RunsData
                                                    scalars (run, tag, step, wall_time, value), infos, problems
    smooth(values, weight) -> np.ndarray            TensorBoard's debiased EMA, exactly
    with_smoothing(frame, weight) -> DataFrame      adds "smoothed", per (run, tag) series
    with_time_columns(frame, starts=None) -> DataFrame   adds "relative" (s since run start) and "wall" (UTC)
    best_epochs(frame, tag="val/accuracy", mode="max") -> DataFrame   run, step, value (first best)
    hparam_diff(infos, ignore=NOT_HYPERPARAMETERS) -> DataFrame   keys x runs, only keys that differ
    scalars_csv(frame) -> str                       CSV text, floats written exactly
    EventCache / DEFAULT_CACHE, parse_event_file    re-exported from core.event_files (parsing, cache)

Status rule (RunInfo.status): summary.json's "status" when it is "finished" or
"stopped" (core.training writes both); else "running" if any of the run's files
changed within `running_window` seconds (default 10 min; the Volume sync keeps
remote mtimes); else "stopped" for runs with config.json or summary.json (quiet
while saying "running": killed), and "finished" for seed runs, which never write
a completion marker.

Bad files never raise: an unreadable event file is skipped, and one that ends in
an incomplete record or has a corrupt record part-way keeps the points before it
(as TensorBoard shows them); each case adds a message naming the file to
`RunsData.problems`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

# Event-file parsing lives in core.event_files; these names stay importable from here.
from core.event_files import DEFAULT_CACHE, EventCache, ParsedFile, parse_event_file

# The seed project's train.py logs these tags; the dashboard speaks ours.
SEED_TAGS = {
    "Loss/train": "train/loss",
    "Loss/val": "val/loss",
    "Accuracy/val": "val/accuracy",
    "Learning_rate": "lr",
}
COLUMNS = ["run", "tag", "step", "wall_time", "value"]
# Bookkeeping in core.training's config.json: differs between any two runs, tunes nothing.
NOT_HYPERPARAMETERS = ("run_name", "created_at", "resumes", "runs_dir", "data_dir", "cache_dir",
                       "data.root", "progress")
RUNNING_WINDOW_S = 600.0
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
        flat = flatten(self.config)
        return flat | {k: v for k, v in self.hparams.items() if k not in flat}


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
    if summary.get("status") in ("finished", "stopped"):
        status = summary["status"]
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


def flatten(mapping: dict, prefix: str = "") -> dict:
    """{"model": {"widths": [...]}} -> {"model.widths": [...]}: how hyperparameter keys are named
    (training writes its TensorBoard hparams with this too)."""
    flat: dict = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- loading

def load_runs(root: str | Path, names: Iterable[str] | None = None, *,
              cache: EventCache | None = None,
              now: float | None = None, running_window: float = RUNNING_WINDOW_S) -> RunsData:
    """Load the runs under `root` (all, or those in `names`) into one tidy frame.

    Only event files whose (size, mtime) changed since the last call are parsed.
    """
    cache = DEFAULT_CACHE if cache is None else cache
    infos = find_runs(root, now=now, running_window=running_window)
    missing: list[str] = []
    if names is not None:
        wanted, by_name = list(dict.fromkeys(names)), {info.name: info for info in infos}
        missing = [f"run {name!r} not found under {root}" for name in wanted if name not in by_name]
        infos = [by_name[name] for name in wanted if name in by_name]
    problems = [p for info in infos for p in info.problems] + missing
    keys: dict[str, tuple[int, int]] = {}
    for path in (str(p) for info in infos for p in info.event_files):
        try:
            stat = os.stat(path)
        except OSError as exc:
            problems.append(f"{path}: skipped, {exc.strerror}")
            continue
        keys[path] = (stat.st_size, stat.st_mtime_ns)
    parsed = {path: cache.get(path, key) for path, key in keys.items()}
    for path in [path for path, hit in parsed.items() if hit is None]:
        parsed[path] = parse_event_file(path, keys[path][0])
        cache.put(path, keys[path], parsed[path])
    parts: list[tuple] = []
    runs = []
    for info in infos:
        files = [parsed[str(p)] for p in info.event_files if str(p) in parsed]
        problems += [f.problem for f in files if f.problem]
        series = _merge_files(files)
        parts += [(info.name, tag, *arrays) for tag, arrays in series.items()]
        runs.append(_enrich(info, files, series))
    return RunsData(_frame(parts), runs, problems)


def _merge_files(files: list[ParsedFile]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per tag, the run's points in file order, seed tags renamed.

    A resumed run starts a new event file and repeats the steps after its last
    checkpoint: from the first step a newer file logs, the newer file wins.
    """
    series: dict[str, tuple[np.ndarray, ...]] = {}
    for parsed in files:
        for raw_tag, arrays in parsed.scalars.items():
            tag = SEED_TAGS.get(raw_tag, raw_tag)
            if tag in series and len(arrays[0]):
                keep = series[tag][0] < arrays[0].min()
                arrays = tuple(np.concatenate([old[keep], new]) for old, new in zip(series[tag], arrays, strict=True))
            series[tag] = arrays
    return series


def _enrich(info: RunInfo, files: list[ParsedFile], series: dict) -> RunInfo:
    hparams: dict = {}
    for parsed in files:
        hparams |= parsed.hparams
    firsts = [f.first_wall_time for f in files if f.first_wall_time is not None]
    start = min(firsts) if firsts else _seed_start(info)
    steps, _, values = series.get("val/accuracy", (np.array([]), None, np.array([])))
    epochs = info.summary.get("epochs_completed", len(np.unique(steps)) or None)
    best_epoch, best_acc = info.summary.get("best_epoch"), info.summary.get("best_val_accuracy")
    finite = np.isfinite(values)
    if best_epoch is None and finite.any():
        at = int(np.argmax(np.where(finite, values, -np.inf)))  # first best, as argmax
        best_epoch, best_acc = int(steps[at]), float(values[at])
    return dataclasses.replace(info, hparams=hparams, start_time=start, epochs=epochs,
                               best_epoch=best_epoch, best_val_accuracy=best_acc)


def _seed_start(info: RunInfo) -> float | None:
    found = _SEED_NAME.fullmatch(info.path.name)
    if not found:
        return None
    return datetime.strptime(found.group(1), "%Y%m%d_%H%M%S").timestamp()  # local time, as written


def _frame(parts: list[tuple]) -> pd.DataFrame:
    lengths = [len(part[2]) for part in parts]
    if not parts:
        return pd.DataFrame({"run": pd.Series(dtype=str), "tag": pd.Series(dtype=str),
                             "step": pd.Series(dtype=np.int64),
                             "wall_time": pd.Series(dtype=np.float64),
                             "value": pd.Series(dtype=np.float64)})
    return pd.DataFrame({
        "run": np.repeat(np.array([p[0] for p in parts], dtype=object), lengths),
        "tag": np.repeat(np.array([p[1] for p in parts], dtype=object), lengths),
        "step": np.concatenate([p[2] for p in parts]),
        "wall_time": np.concatenate([p[3] for p in parts]),
        "value": np.concatenate([p[4] for p in parts]),
    })


# ---------------------------------------------------------------- comparing

def smooth(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's scalar smoothing of one series, exactly (its `classicSmoothing`).

    Over the finite values y: last = last*w + (1-w)*y, shown = last / (1 - w**n),
    n = finite values so far (no debiasing when w == 1). Non-finite values pass
    through untouched; a constant series comes back as is; w is clamped to [0, 1]
    and a non-finite w counts as 0. In: (n,) values. Out: (n,) float64.
    """
    y = np.array(values, dtype=np.float64)
    w = min(max(float(weight), 0.0), 1.0) if math.isfinite(weight) else 0.0
    if y.size == 0 or np.all(y == y[0]):
        return y
    last, n = 0.0, 0
    for i, value in enumerate(y.tolist()):
        if not math.isfinite(value):
            continue
        last = last * w + (1 - w) * value
        n += 1
        y[i] = last if w == 1 else last / (1 - w ** n)
    return y


def with_smoothing(frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """A copy of `frame` with "smoothed": `smooth` over each (run, tag) series in frame order."""
    out = frame.copy()
    out["smoothed"] = frame.groupby(["run", "tag"], sort=False)["value"].transform(
        lambda v: smooth(v.to_numpy(), weight))
    return out


def with_time_columns(frame: pd.DataFrame, starts: dict[str, float | None] | None = None) -> pd.DataFrame:
    """A copy with "relative" (seconds since the run started) and "wall" (UTC datetime).

    `starts`: run -> start (RunInfo.start_time); a run without one starts at its first point.
    """
    out = frame.copy()
    first = frame.groupby("run")["wall_time"].transform("min")
    if starts:
        given = frame["run"].map(lambda run: starts.get(run)).astype(np.float64)
        first = given.where(given.notna(), first)
    out["relative"] = frame["wall_time"] - first
    out["wall"] = pd.to_datetime(frame["wall_time"], unit="s", utc=True)
    return out


def best_epochs(frame: pd.DataFrame, tag: str = "val/accuracy", mode: str = "max") -> pd.DataFrame:
    """Per run, the first step where `tag` is best ("max" or "min"): columns run, step, value."""
    sub = frame[(frame["tag"] == tag) & np.isfinite(frame["value"])]
    values = sub.groupby("run", sort=False)["value"]
    at = values.idxmax() if mode == "max" else values.idxmin()
    return sub.loc[at.to_numpy(), ["run", "step", "value"]].reset_index(drop=True)


def hparam_diff(infos: Sequence[RunInfo], ignore: Iterable[str] = NOT_HYPERPARAMETERS) -> pd.DataFrame:
    """Hyperparameters that differ between runs: index "param" (sorted), one column per run.

    A key some runs lack differs; their cell is None. Keys matching an `ignore`
    pattern (fnmatch) are left out. Fewer than two runs: no rows.
    """
    params = {info.name: info.params for info in infos}
    keys = sorted(k for k in set().union(*params.values())
                  if not any(fnmatch.fnmatchcase(k, pattern) for pattern in ignore))
    missing = object()

    def canonical(value):  # lists and dicts compare by content, 1 and 1.0 are not the same setting
        return "<missing>" if value is missing else json.dumps(value, sort_keys=True, default=str)

    differ = [k for k in keys if len({canonical(p.get(k, missing)) for p in params.values()}) > 1]
    return pd.DataFrame({name: [p.get(k) for k in differ] for name, p in params.items()},
                        index=pd.Index(differ, name="param"), dtype=object)


def scalars_csv(frame: pd.DataFrame) -> str:
    """CSV text of a scalars frame: COLUMNS first, then any extra columns; floats round-trip."""
    columns = [c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]
    return frame.to_csv(index=False, columns=columns, lineterminator="\n")
