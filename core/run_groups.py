"""Runs grouped, W&B-style: by cross-validation parent or by a hyperparameter, as mean and band.

    CV = "cv parent"                          the group-by choice for cross-validation folds
    cv_parent(name) -> str | None             "cv/fold-3" -> "cv"; None for a run that is no fold
    read_cv_summaries(root, names) -> (dict[parent, dict], problems)
                                              each parent's cv_summary.json (bounded, shape-checked)
    cv_cell(summary) -> str | None            "0.7125 ± 0.0310 (5 folds)", "running (3/5 folds)", ...
    group_choices(infos) -> list[str]         CV (when any run is a fold) and every scalar
                                              hyperparameter whose value differs between runs
    group_of(infos, by) -> dict[run, label]   label per run: CV parent (a run that is no fold is its
                                              own group) or "param=value"
    aggregate(frame, groups, smoothing) -> DataFrame
                                              per (group, tag, step): mean, std, min, max, n runs
                                              of the runs' smoothed values (runs: rows of COLUMNS)

A fold folder is `<parent>/fold-<k>` (core.training's cross_validate); its
parent's `cv_summary.json` holds `fold_accuracy`, `reported_accuracy` (the
mean) and `std` once every fold finished. That file comes from a Volume: it is
hostile like every other file, so it is read only up to MAX_SUMMARY_BYTES and
only if its JSON shape is small (core.json_limits).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.json_limits import json_shape_problem
from core.runs import NOT_HYPERPARAMETERS, RunInfo, hparam_diff, with_smoothing

CV = "cv parent"
MAX_SUMMARY_BYTES = 1 << 20
_FOLD = re.compile(r"(?P<parent>.+)/fold-(?P<k>\d{1,3})")


def cv_parent(name: str) -> str | None:
    """The cross-validation parent of a fold run ("sweep/cv/fold-2" -> "sweep/cv"), else None."""
    found = _FOLD.fullmatch(name)
    return found.group("parent") if found else None


def read_cv_summaries(root: str | Path, names: Iterable[str]) -> tuple[dict[str, dict], list[str]]:
    """cv_summary.json of every CV parent among `names`; unreadable ones are left out and named."""
    summaries: dict[str, dict] = {}
    problems: list[str] = []
    for parent in sorted({p for p in map(cv_parent, names) if p}):
        path = Path(root) / parent / "cv_summary.json"
        try:
            if not path.is_file():
                continue
            if path.stat().st_size > MAX_SUMMARY_BYTES:
                raise ValueError(f"larger than {MAX_SUMMARY_BYTES // 1024} KiB")
            body = path.read_bytes()
            shape = json_shape_problem(body)
            if shape:
                raise ValueError(shape.message)
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            problems.append(f"{parent}/cv_summary.json could not be read ({err})")
            continue
        summaries[parent] = data
    return summaries, problems


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def cv_cell(summary: dict | None) -> str | None:
    """The run table's CV column: mean ± std over the folds, or how far a CV run got."""
    if not summary:
        return None
    folds = summary.get("fold_accuracy") if isinstance(summary.get("fold_accuracy"), dict) else {}
    done = [v for v in map(_number, folds.values()) if v is not None]
    mean, std = _number(summary.get("reported_accuracy")), _number(summary.get("std"))
    if mean is not None:
        spread = f" ± {std:.4f}" if std is not None else ""
        return f"{mean:.4f}{spread} ({len(done) or len(folds)} folds)"
    status = summary.get("status")
    word = "running" if status in (None, "running") else str(status)[:20]
    return f"{word} ({len(done)}/{len(folds) or 5} folds)"


def group_choices(infos: Sequence[RunInfo]) -> list[str]:
    """What runs can be grouped by: CV parents (if any run is a fold), then differing hyperparameters."""
    choices = [CV] if any(cv_parent(info.name) for info in infos) else []
    diff = hparam_diff(infos, ignore=(*NOT_HYPERPARAMETERS, "val_fold", "train_folds", "test_fold"))
    scalar = [key for key in diff.index
              if all(v is None or isinstance(v, (str, int, float, bool)) for v in diff.loc[key])]
    return choices + scalar


def group_of(infos: Sequence[RunInfo], by: str) -> dict[str, str]:
    """run -> group label. CV: the fold's parent (a run that is no fold keeps its own name);
    a hyperparameter: "key=value" ("key=(not set)" for runs without it)."""
    if by == CV:
        return {info.name: cv_parent(info.name) or info.name for info in infos}
    labels = {}
    for info in infos:
        value = info.params.get(by)
        text = "(not set)" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        labels[info.name] = f"{by}={text}"
    return labels


def aggregate(frame: pd.DataFrame, groups: dict[str, str], smoothing: float = 0.0) -> pd.DataFrame:
    """Per (group, tag, step): mean, std (population), min, max and n of the member runs' values.

    Each run is smoothed on its own first (TensorBoard's EMA, `smoothing`), then
    runs are aggregated at equal steps; a step only some runs reached counts only
    those (n says how many). Runs missing from `groups` are left out.
    Out columns: group, tag, step, mean, std, min, max, n.
    """
    data = frame[frame["run"].isin(list(groups))]
    data = with_smoothing(data, smoothing).assign(group=lambda d: d["run"].map(groups))
    data = data[np.isfinite(data["smoothed"])]
    stats = data.groupby(["group", "tag", "step"], sort=True)["smoothed"].agg(
        mean="mean", std=lambda v: float(np.std(v.to_numpy())), min="min", max="max", n="count")
    return stats.reset_index()
