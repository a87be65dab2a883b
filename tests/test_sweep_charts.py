"""core.sweep_charts and core.run_export: hyperparameter views and the scalar downloads."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import sweep_charts as S
from core.run_export import FORMATS, export_scalars
from core.runs import RunInfo, smooth


def info(name, reported=None, best=None, status="finished", **config) -> RunInfo:
    summary = {"evaluation": {"reported_accuracy": reported}} if reported is not None else {}
    return RunInfo(name=name, path=Path(name), kind="audio-cnn", event_files=(), config=config,
                   summary=summary, status=status, best_val_accuracy=best)


SWEEP = [info("a", 0.6, 0.65, max_lr=1e-4, batch_size=32, mixup_prob=0.5),
         info("b", 0.7, 0.72, max_lr=1e-3, batch_size=32, mixup_prob=0.0),
         info("c", None, 0.5, status="running", max_lr=1e-2, batch_size=32, optimizer="adamw")]


def test_sweep_choices_are_numeric_params_that_vary():
    assert S.sweep_choices(SWEEP) == ["max_lr", "mixup_prob"]  # batch_size is constant, optimizer text
    assert S.sweep_choices(SWEEP[:1]) == []


def test_sweep_points_leave_the_metric_unknown_while_running():
    points = S.sweep_points(SWEEP, "reported acc").set_index("run")
    assert points.loc["a", "reported acc"] == 0.6 and np.isnan(points.loc["c", "reported acc"])
    assert np.isnan(points.loc["c", "mixup_prob"])
    assert S.sweep_points(SWEEP, "best val acc").set_index("run").loc["c", "best val acc"] == 0.5
    with pytest.raises(ValueError, match="metric must be one of"):
        S.sweep_points(SWEEP, "loss")


def test_the_scatter_puts_a_wide_positive_range_on_a_log_axis_and_skips_unknowns():
    spec = S.sweep_scatter(S.sweep_points(SWEEP, "reported acc"), "max_lr", "reported acc",
                           {"a": "#111111", "b": "#222222"}).to_dict()
    dots = spec["datasets"][spec["data"]["name"]]
    assert [(d["run"], d["param"], d["metric"]) for d in dots] == [("a", 1e-4, 0.6), ("b", 1e-3, 0.7)]
    assert spec["encoding"]["x"]["scale"] == {"type": "log"}
    assert spec["encoding"]["color"]["scale"]["range"] == ["#111111", "#222222"]
    spec = S.sweep_scatter(S.sweep_points(SWEEP, "best val acc"), "mixup_prob", "best val acc").to_dict()
    assert spec["encoding"]["x"]["scale"] == {"zero": False}  # 0 and 0.5: linear


def test_parallel_coordinates_scale_each_axis_and_leave_gaps():
    spec = S.parallel_chart(S.sweep_points(SWEEP, "best val acc"), ["max_lr", "mixup_prob"],
                            "best val acc").to_dict()
    rows = {(r["run"], r["axis"]): r for r in spec["datasets"][spec["data"]["name"]]}
    assert rows[("a", "max_lr")]["share"] == 0 and rows[("c", "max_lr")]["share"] == 1
    assert rows[("b", "max_lr")]["share"] == pytest.approx((1e-3 - 1e-4) / (1e-2 - 1e-4))
    assert rows[("c", "mixup_prob")]["share"] is None and rows[("c", "mixup_prob")]["value"] is None
    assert rows[("b", "best val acc")]["share"] == 1 and rows[("c", "best val acc")]["share"] == 0
    assert spec["encoding"]["x"]["sort"] == ["max_lr", "mixup_prob", "best val acc"]


def frame() -> pd.DataFrame:
    values = [1.0, 0.5, float("nan"), 0.25]
    return pd.DataFrame({"run": "r", "tag": "val/loss", "step": range(1, 5),
                         "wall_time": [10.0, 11.0, 12.0, 13.0], "value": values})


def test_exports_raw_csv_smoothed_csv_and_json():
    raw = list(csv.DictReader(io.StringIO(export_scalars(frame(), "CSV", 0.6))))
    assert list(raw[0]) == ["run", "tag", "step", "wall_time", "value"]
    smoothed = list(csv.DictReader(io.StringIO(export_scalars(frame(), "CSV + smoothed", 0.6))))
    expected = smooth([1.0, 0.5, float("nan"), 0.25], 0.6)
    assert [float(r["smoothed"]) for r in smoothed if r["smoothed"] != "nan" and r["smoothed"]] == pytest.approx(
        [v for v in expected if np.isfinite(v)], rel=1e-15)
    data = json.loads(export_scalars(frame(), "JSON + smoothed", 0.6))
    series = data["runs"]["r"]["val/loss"]
    assert data["smoothing"] == 0.6 and series["step"] == [1, 2, 3, 4]
    assert series["value"][2] is None and series["smoothed"][2] is None
    assert series["smoothed"][3] == pytest.approx(expected[3], rel=1e-15)
    assert set(FORMATS) == {"CSV", "CSV + smoothed", "JSON + smoothed"}
    with pytest.raises(ValueError, match="export must be one of"):
        export_scalars(frame(), "xlsx", 0.6)
