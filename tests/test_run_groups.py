"""core.run_groups, core.run_table and core.run_colors: grouping, CV summaries, the runs table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core import run_groups as G
from core.group_charts import group_chart
from core.run_colors import TABLEAU10, run_colors, swatch_uri
from core.run_table import CV_COLUMN, run_table
from core.runs import RunInfo, smooth


def info(name: str, status: str = "finished", summary: dict | None = None, **config) -> RunInfo:
    return RunInfo(name=name, path=Path(name), kind="audio-cnn", event_files=(), config=config,
                   summary=summary or {}, status=status)


def scalars(values: dict[str, list[float]], tag: str = "val/accuracy") -> pd.DataFrame:
    rows = [(run, tag, step, 1000.0 + step, v) for run, vs in values.items() for step, v in enumerate(vs, 1)]
    return pd.DataFrame(rows, columns=["run", "tag", "step", "wall_time", "value"])


def test_a_fold_run_names_its_cv_parent():
    assert G.cv_parent("cv/fold-3") == "cv"
    assert G.cv_parent("sweep/cv-a/fold-12") == "sweep/cv-a"
    assert G.cv_parent("fold-1") is None and G.cv_parent("cv/fold-x") is None and G.cv_parent("cv/fold-1/x") is None


def test_cv_summaries_are_read_per_parent_and_bad_ones_named(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "cv_summary.json").write_text(json.dumps({"reported_accuracy": 0.7, "std": 0.02}))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "cv_summary.json").write_text("[1, 2]")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "cv_summary.json").write_text("[" * 1000 + "]" * 1000)
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "cv_summary.json").write_bytes(b" " * (G.MAX_SUMMARY_BYTES + 1))
    names = ["good/fold-1", "good/fold-2", "list/fold-1", "deep/fold-1", "huge/fold-1", "none/fold-1", "plain"]
    summaries, problems = G.read_cv_summaries(tmp_path, names)
    assert summaries == {"good": {"reported_accuracy": 0.7, "std": 0.02}}
    assert [p.split("/")[0] for p in problems] == ["deep", "huge", "list"]
    assert "not a JSON object" in problems[2] and "larger than 1024 KiB" in problems[1]


def test_the_cv_cell_says_mean_and_std_or_how_far_it_got():
    folds = {f"fold-{k}": 0.7 for k in range(1, 6)}
    assert G.cv_cell({"reported_accuracy": 0.71254, "std": 0.031, "fold_accuracy": folds}) == "0.7125 ± 0.0310 (5 folds)"
    assert G.cv_cell({"status": "running", "reported_accuracy": None,
                      "fold_accuracy": {"fold-1": 0.7, "fold-2": None}}) == "running (1/2 folds)"
    assert G.cv_cell({"reported_accuracy": "0.9", "std": float("nan")}) == "running (0/5 folds)"  # hostile types
    assert G.cv_cell(None) is None


def test_group_choices_are_cv_and_the_hyperparameters_that_differ():
    infos = [info("cv/fold-1", max_lr=1e-3, val_fold=1, model={"widths": [1]}),
             info("cv/fold-2", max_lr=1e-3, val_fold=2, model={"widths": [2]}),
             info("b", max_lr=2e-3, batch_size=32, model={"widths": [1]})]
    assert G.group_choices(infos) == [G.CV, "batch_size", "max_lr"]  # lists and folds are no groups
    assert G.group_choices(infos[2:]) == []
    assert G.group_of(infos, G.CV) == {"cv/fold-1": "cv", "cv/fold-2": "cv", "b": "b"}
    assert G.group_of(infos, "batch_size") == {"cv/fold-1": "batch_size=(not set)",
                                               "cv/fold-2": "batch_size=(not set)", "b": "batch_size=32"}


def test_aggregate_takes_mean_std_min_max_of_smoothed_runs_per_step():
    frame = scalars({"f1": [0.2, 0.4, 0.6], "f2": [0.4, 0.6], "solo": [0.1, 0.1, 0.1]})
    stats = G.aggregate(frame, {"f1": "cv", "f2": "cv", "solo": "solo"}, smoothing=0.5)
    cv = stats[stats["group"] == "cv"].set_index("step")
    s1, s2 = smooth([0.2, 0.4, 0.6], 0.5), smooth([0.4, 0.6], 0.5)
    assert cv.loc[2, "mean"] == pytest.approx((s1[1] + s2[1]) / 2, rel=1e-12)
    assert cv.loc[2, "std"] == pytest.approx(abs(s1[1] - s2[1]) / 2, rel=1e-12)
    assert (cv.loc[1, "min"], cv.loc[1, "max"]) == (pytest.approx(s1[0]), pytest.approx(s2[0]))
    assert cv["n"].tolist() == [2, 2, 1]  # f2 stopped at step 2
    assert cv.loc[3, "mean"] == pytest.approx(s1[2]) and cv.loc[3, "std"] == 0
    assert set(stats["group"]) == {"cv", "solo"}


def test_group_chart_draws_a_band_under_each_mean_with_the_hover_tooltip():
    stats = G.aggregate(scalars({"f1": [0.2, 0.4], "f2": [0.4, 0.8]}), {"f1": "cv", "f2": "cv"})
    spec = group_chart(stats, "val/accuracy", band="std", colors={"cv": "#123456"}).to_dict()
    area = next(la for la in spec["layer"] if la["mark"]["type"] == "area")
    band = spec["datasets"][area["data"]["name"]]
    assert [(b["low"], b["high"]) for b in band] == [(pytest.approx(0.2), pytest.approx(0.4)),
                                                    (pytest.approx(0.4), pytest.approx(0.8))]
    rule = next(la for la in spec["layer"] if la["mark"]["type"] == "rule")
    assert spec["params"][0]["views"] == [rule["name"]]
    assert [t["title"] for t in rule["encoding"]["tooltip"]] == ["step", "cv (mean)"]
    assert spec["title"] == "val/accuracy (mean ± std band)"
    with pytest.raises(ValueError, match="band must be one of"):
        group_chart(stats, "val/accuracy", band="iqr")


def test_run_colours_are_fixed_by_position_and_distinct():
    names = [f"r{i}" for i in range(10)]
    assert run_colors(names) == dict(zip(names, TABLEAU10, strict=True))
    many = run_colors(f"r{i}" for i in range(20))
    assert len(set(many.values())) == 20
    assert swatch_uri("#4c78a8").startswith("data:image/svg+xml,") and "%234c78a8" in swatch_uri("#4c78a8")


def test_the_run_table_hides_identical_params_and_says_running():
    infos = [info("cv/fold-1", status="running", max_lr=1e-3, batch_size=32, weight_decay=0.01),
             info("cv/fold-2", summary={"evaluation": {"reported_accuracy": 0.75}}, max_lr=2e-3,
                  batch_size=32, weight_decay=0.01, seed=4),
             info("other", status="stopped", max_lr=2e-3, batch_size=32, weight_decay=0.01, seed=5)]
    table = run_table(infos, {"cv": {"reported_accuracy": 0.7, "std": 0.01, "fold_accuracy": {"a": 1, "b": 1}}})
    assert list(table["reported acc"]) == ["running", "0.7500", "–"]
    assert "batch_size" not in table and "weight_decay" not in table  # the same in every row
    assert list(table["max_lr"]) == [1e-3, 2e-3, 2e-3] and list(table["seed"][1:]) == [4, 5]
    assert list(table[CV_COLUMN]) == ["0.7000 ± 0.0100 (2 folds)"] * 2 + ["–"]
    one = run_table(infos[:1])
    assert list(one.columns[-3:]) == ["max_lr", "batch_size", "weight_decay"] and CV_COLUMN not in one
