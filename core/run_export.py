"""The Training Runs page's downloads, as TensorBoard offers them: raw or smoothed, CSV or JSON.

    FORMATS                                       choice -> (file name, MIME type)
    export_scalars(frame, choice, smoothing) -> str
        "CSV": core.runs.scalars_csv of the raw points (run, tag, step, wall_time, value)
        "CSV + smoothed": the same plus a "smoothed" column (TensorBoard's EMA at `smoothing`)
        "JSON + smoothed": {"smoothing": w, "runs": {run: {tag: {"step", "wall_time", "value",
                            "smoothed"}}}}, non-finite values as null
"""

from __future__ import annotations

import json
import math

import pandas as pd

from core.runs import COLUMNS, scalars_csv, with_smoothing

FORMATS = {"CSV": ("scalars.csv", "text/csv"),
           "CSV + smoothed": ("scalars-smoothed.csv", "text/csv"),
           "JSON + smoothed": ("scalars.json", "application/json")}


def _finite(values) -> list:
    return [v if math.isfinite(v) else None for v in map(float, values)]


def export_scalars(frame: pd.DataFrame, choice: str, smoothing: float) -> str:
    """The download's text for `choice` (a FORMATS key) over a scalars frame (COLUMNS)."""
    if choice not in FORMATS:
        raise ValueError(f"export must be one of {list(FORMATS)}, got {choice!r}")
    if choice == "CSV":
        return scalars_csv(frame[COLUMNS])
    smoothed = with_smoothing(frame[COLUMNS], smoothing)
    if choice == "CSV + smoothed":
        return scalars_csv(smoothed)
    runs: dict[str, dict] = {}
    for (run, tag), rows in smoothed.groupby(["run", "tag"], sort=False):
        runs.setdefault(run, {})[tag] = {"step": [int(s) for s in rows["step"]],
                                         "wall_time": _finite(rows["wall_time"]),
                                         "value": _finite(rows["value"]), "smoothed": _finite(rows["smoothed"])}
    return json.dumps({"smoothing": smoothing, "runs": runs}, allow_nan=False)
