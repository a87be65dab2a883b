"""The Training Runs table: one row per run, only the columns that tell runs apart.

    run_table(infos, cv_summaries=None, *, max_params=8) -> pd.DataFrame
        run, started, status, epochs, best val acc, best epoch, reported acc,
        CV mean ± std (fold runs of a cross-validation), then hyperparameters:
        the key ones (KEY_PARAMS) and any other scalar one that differs, each
        only if it differs between the rows (one row: the key ones)

"reported acc" is text: the number (4 decimals), "running" for a live run
that has not reported yet, "–" for a run that ended without one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from core.run_groups import cv_cell, cv_parent
from core.runs import RunInfo, hparam_diff

KEY_PARAMS = ("max_lr", "batch_size", "weight_decay", "mixup_prob", "label_smoothing", "val_fold")
CV_COLUMN = "CV mean ± std"


def _reported(info: RunInfo) -> str:
    value = (info.summary.get("evaluation") or {}).get("reported_accuracy")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "running" if info.status == "running" else "–"


def _cell(value) -> str | float | int | None:
    """Scalars stay numbers; lists and dicts become JSON text (one type per table column)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _param_columns(infos: Sequence[RunInfo], max_params: int) -> list[str]:
    if len(infos) < 2:
        return [key for key in KEY_PARAMS if any(key in info.params for info in infos)]
    diff = hparam_diff(infos)
    differing = [key for key in diff.index  # scalars only: a list or dict makes a poor column
                 if all(v is None or isinstance(v, (str, int, float, bool)) for v in diff.loc[key])]
    ordered = [key for key in KEY_PARAMS if key in differing] + [k for k in differing if k not in KEY_PARAMS]
    return ordered[:max_params]


def run_table(infos: Sequence[RunInfo], cv_summaries: dict[str, dict] | None = None, *,
              max_params: int = 8) -> pd.DataFrame:
    """The runs table (module docstring); columns no row fills are dropped."""
    cv_summaries = cv_summaries or {}
    params = _param_columns(infos, max_params)
    rows = []
    for info in infos:
        rows.append({"run": info.name,
                     "started": pd.to_datetime(info.start_time, unit="s", utc=True) if info.start_time else None,
                     "status": info.status, "epochs": info.epochs,
                     "best val acc": info.best_val_accuracy, "best epoch": info.best_epoch,
                     "reported acc": _reported(info),
                     CV_COLUMN: cv_cell(cv_summaries.get(cv_parent(info.name) or ""))}
                    | {key: _cell(info.params.get(key)) for key in params})
    table = pd.DataFrame(rows).infer_objects()  # a key some runs lack: NaN in a number column, not "None"
    table = table.dropna(axis="columns", how="all")  # e.g. no CV column without a cross-validation
    if CV_COLUMN in table:
        table[CV_COLUMN] = table[CV_COLUMN].fillna("–")  # runs that are no fold: a dash, not "None"
    return table
