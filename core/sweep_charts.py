"""Hyperparameter sweeps: which setting gave which score, over the runs on screen. Pure Altair, no Streamlit.

    METRICS                                      metric choice -> how a run's number is found
    sweep_choices(infos) -> list[str]            hyperparameters with a number in 2+ runs and 2+ values
    sweep_points(infos, metric) -> DataFrame     run, metric value (NaN while unknown), every param
    sweep_scatter(points, param, metric, colors) -> alt.Chart
        one dot per run: the hyperparameter (log x when positive and spanning 10x) against the metric
    parallel_chart(points, params, metric, colors) -> alt.Chart
        parallel coordinates: one line per run across the hyperparameters and the metric, each axis
        scaled to its own min..max (the tooltip gives the raw values; a missing value is a gap)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.run_charts import inline_data, run_color
from core.runs import RunInfo

METRICS = ("reported acc", "best val acc")


def _number(value) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    return float(value) if ok else np.nan


def metric_of(info: RunInfo, metric: str) -> float:
    if metric == "reported acc":
        return _number((info.summary.get("evaluation") or {}).get("reported_accuracy"))
    return _number(info.best_val_accuracy)


def sweep_choices(infos: Sequence[RunInfo]) -> list[str]:
    """Numeric hyperparameters set in at least two runs with at least two distinct values."""
    keys = sorted(set().union(*(info.params for info in infos))) if infos else []
    out = []
    for key in keys:
        values = [_number(info.params.get(key)) for info in infos]
        finite = [v for v in values if np.isfinite(v)]
        if len(finite) >= 2 and len(set(finite)) >= 2:
            out.append(key)
    return out


def sweep_points(infos: Sequence[RunInfo], metric: str) -> pd.DataFrame:
    """One row per run: run, status, `metric`, then each numeric hyperparameter of sweep_choices."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    params = sweep_choices(infos)
    return pd.DataFrame([{"run": info.name, "status": info.status, metric: metric_of(info, metric)}
                         | {key: _number(info.params.get(key)) for key in params} for info in infos])


def sweep_scatter(points: pd.DataFrame, param: str, metric: str,
                  colors: Mapping[str, str] | None = None) -> alt.Chart:
    """The metric against one hyperparameter; runs without either value are left out."""
    data = points[["run", "status", param, metric]].dropna()
    positive = data[param] > 0
    log = bool(len(data)) and bool(positive.all()) and data[param].max() >= 10 * data[param].min()
    return alt.Chart(inline_data(data.rename(columns={param: "param", metric: "metric"}))).mark_point(
        filled=True, size=90, opacity=0.9).encode(
        x=alt.X("param:Q", title=param, scale=alt.Scale(type="log") if log else alt.Scale(zero=False)),
        y=alt.Y("metric:Q", title=metric, scale=alt.Scale(zero=False)),
        color=run_color(list(data["run"]), colors),
        tooltip=["run:N", "status:N", alt.Tooltip("param:Q", title=param, format=".4~g"),
                 alt.Tooltip("metric:Q", title=metric, format=".4f")],
    ).properties(title=f"{metric} vs {param}", height=300)


def parallel_chart(points: pd.DataFrame, params: Sequence[str], metric: str,
                   colors: Mapping[str, str] | None = None) -> alt.Chart:
    """Parallel coordinates over `params` then `metric`, each axis min..max scaled to 0..1."""
    axes = [*params, metric]
    rows = []
    for _, point in points.iterrows():
        for order, axis in enumerate(axes):
            value = point.get(axis, np.nan)
            low, high = points[axis].min(), points[axis].max()
            # a run without this value leaves a gap in its line; one value on an axis sits mid-height
            share = None if not np.isfinite(value) else 0.5 if high == low else (value - low) / (high - low)
            rows.append({"run": point["run"], "axis": axis, "order": order, "share": share,
                         "value": value if np.isfinite(value) else None})
    data = pd.DataFrame(rows, columns=["run", "axis", "order", "share", "value"])
    return alt.Chart(inline_data(data)).mark_line(point=True, strokeWidth=2).encode(
        x=alt.X("axis:N", sort=list(axes), title=None, axis=alt.Axis(labelAngle=0, labelLimit=200)),
        y=alt.Y("share:Q", title="min .. max of each axis", axis=alt.Axis(format=".0%")),
        color=run_color(list(dict.fromkeys(data["run"])), colors), detail="run:N", order="order:Q",
        tooltip=["run:N", "axis:N", alt.Tooltip("value:Q", format=".4~g")],
    ).properties(title=f"Hyperparameters and {metric}", height=300)
