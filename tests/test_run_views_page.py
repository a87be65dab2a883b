"""Training Runs under AppTest: the shared run list (?hide=), groups (?group=, ?band=), the CV column.

Same page and fixtures style as tests/test_training_runs_page.py; the browser
side (real pointer, real clicks) is tests/e2e/test_run_views_e2e.py.
"""

from __future__ import annotations

import json
import os

import pytest
from runs_factory import write_run
from streamlit.testing.v1 import AppTest
from test_training_runs_page import PAGE, chart_specs, runs_drawn, scalar_specs, texts

from core.runs import smooth


@pytest.fixture
def runs_page(monkeypatch):
    """AppTest of the page over a runs folder, with no Modal credentials (as in test_training_runs_page)."""
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "AUDIO_CNN_VOLUME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)

    def make(root, **params) -> AppTest:
        monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(root))
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.query_params.update(params)
        return at

    return make


@pytest.fixture(scope="module")
def cv_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv-runs")
    write_run(root, "baseline", epochs=6, seed=0)
    for k in (1, 2):
        write_run(root, f"cv/fold-{k}", epochs=6, seed=k, config={"val_fold": k})
    (root / "cv" / "cv_summary.json").write_text(json.dumps(
        {"status": "finished", "reported_accuracy": 0.7125, "std": 0.031,
         "fold_accuracy": {"fold-1": 0.70, "fold-2": 0.725}}))
    return root


def test_hidden_runs_leave_every_chart_but_keep_their_colour(runs_page, cv_runs):
    at = runs_page(cv_runs, hide=["cv/fold-1"]).run()
    assert not at.exception
    assert at.checkbox(key="show:cv/fold-1").value is False and at.checkbox(key="show:baseline").value
    for spec in scalar_specs(at).values():
        assert runs_drawn(spec) == ["baseline", "cv/fold-2"]
        scale = spec["layer"][0]["encoding"]["color"]["scale"]
        assert scale["range"] == ["#4c78a8", "#e45756"]  # positions 0 and 2 of the folder: unchanged
    at.checkbox(key="show:baseline").uncheck().run()
    assert at.query_params["hide"] == ["baseline", "cv/fold-1"]
    assert runs_drawn(scalar_specs(at)["val/loss"]) == ["cv/fold-2"]


def test_unknown_hide_values_are_ignored_with_a_message(runs_page, cv_runs):
    at = runs_page(cv_runs, hide=["<b>nope</b>", "baseline"]).run()
    assert not at.exception
    assert any("1 `hide` value(s) in the link name no run shown here" in c for c in texts(at, "caption"))
    assert not any("nope" in c for c in texts(at, "caption"))
    assert runs_drawn(scalar_specs(at)["val/loss"]) == ["cv/fold-1", "cv/fold-2"]


def test_grouping_by_cv_parent_draws_one_mean_per_group(runs_page, cv_runs):
    at = runs_page(cv_runs, group="cv parent", band="std").run()
    assert not at.exception
    titles = [s.get("title") for s in chart_specs(at)]
    assert "val/accuracy (mean ± std band)" in titles
    spec = next(s for s in chart_specs(at) if s.get("title") == "val/loss (mean ± std band)")
    line = next(la for la in spec["layer"] if la["mark"]["type"] == "line")
    assert sorted({row["run"] for row in line["data"]["values"]}) == ["baseline", "cv"]
    assert {row["n"] for row in line["data"]["values"] if row["run"] == "cv"} == {2}


def test_a_bad_group_or_band_in_the_link_falls_back_with_a_message(runs_page, cv_runs):
    at = runs_page(cv_runs, group="max_lr; drop", band="iqr").run()
    assert not at.exception
    warnings = texts(at, "warning")
    assert any("`group` is not a known way to group these runs: showing 'none'" in w for w in warnings)
    assert any("`band` is not a known band: showing 'min-max'" in w for w in warnings)
    assert not any("drop" in w for w in warnings)
    assert at.selectbox(key="group").value == "none"
    assert list(scalar_specs(at)) == ["val/accuracy", "val/loss", "train/loss"]


def test_the_run_table_shows_the_cv_mean_and_std_on_each_fold(runs_page, cv_runs):
    at = runs_page(cv_runs).run()
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["cv/fold-1", "CV mean ± std"] == "0.7125 ± 0.0310 (2 folds)"
    assert table.loc["cv/fold-2", "CV mean ± std"] == "0.7125 ± 0.0310 (2 folds)"
    assert table.loc["baseline", "CV mean ± std"] == "–"  # not "None"
    assert "batch_size" not in table  # the same in every run: hidden


def test_per_class_results_sort_by_accuracy_and_compare_two_runs(runs_page, cv_runs):
    at = runs_page(cv_runs, detail="cv/fold-1", vs="baseline").run()
    assert not at.exception
    specs = {s.get("title"): s for s in chart_specs(at)}
    summary = json.loads((cv_runs / "cv" / "fold-1" / "summary.json").read_text())
    accuracy = summary["per_class_accuracy"]
    domain = specs["Confusion matrix"]["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert [accuracy[c] for c in summary["classes"] if c.replace("_", " ").capitalize() == domain[0]] == [
        min(accuracy.values())]  # worst class first
    diff = specs["Per-class difference: cv/fold-1 vs baseline"]
    other = json.loads((cv_runs / "baseline" / "summary.json").read_text())["per_class_accuracy"]
    rows = diff["data"]["values"]
    assert rows[0]["difference"] == pytest.approx(max(accuracy[c] - other[c] for c in accuracy))
    at.radio(key="order").set_value("class").run()
    domain = next(s for s in chart_specs(at) if s.get("title") == "Confusion matrix")[
        "layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert domain[:2] == ["Dog", "Rooster"]


def test_a_bad_order_or_comparison_in_the_link_gets_a_message(runs_page, cv_runs):
    at = runs_page(cv_runs, order="worst", vs="nope").run()
    assert not at.exception
    warnings = texts(at, "warning")
    assert any("`order` is not a known class order" in w for w in warnings)
    assert any("`vs` is not a known run with per-class results" in w for w in warnings)
    assert not [s for s in chart_specs(at) if str(s.get("title", "")).startswith("Per-class difference")]


def test_a_broken_confusion_matrix_is_an_error_not_a_crash(runs_page, tmp_path):
    write_run(tmp_path, "bad", epochs=2)
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    summary["confusion_matrix"] = [[1, 2], [3]]
    (tmp_path / "bad" / "summary.json").write_text(json.dumps(summary))
    at = runs_page(tmp_path).run()
    assert not at.exception
    assert any("summary.json of `bad` has no usable per-class results" in e.value for e in at.error)


def test_the_sweep_view_plots_a_hyperparameter_against_the_metric(runs_page, cv_runs):
    at = runs_page(cv_runs, sweep_x="val_fold", metric="best val acc").run()
    assert not at.exception
    spec = next(s for s in chart_specs(at) if s.get("title") == "best val acc vs val_fold")
    assert sorted(d["run"] for d in spec["data"]["values"]) == ["cv/fold-1", "cv/fold-2"]  # baseline has none
    at = runs_page(cv_runs, sweep="parallel").run()
    assert any(s.get("title") == "Hyperparameters and reported acc" for s in chart_specs(at))
    at = runs_page(cv_runs, sweep_x="__class__").run()
    assert any("`sweep_x` is not a known hyperparameter of these runs" in w for w in texts(at, "warning"))
    assert any(s.get("title") == "reported acc vs val_fold" for s in chart_specs(at))


def test_the_json_export_holds_raw_and_smoothed_values(runs_page, cv_runs, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    files: dict[str, bytes] = {}
    add = MediaFileManager.add

    def recording_add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        url = add(self, data, mimetype, coordinates, file_name, is_for_static_download)
        files[url] = data if isinstance(data, bytes) else data.encode()
        return url

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    at = runs_page(cv_runs, runs=["baseline"], tags=["val/loss"], smoothing="0.5", export="JSON + smoothed").run()
    (button,) = at.get("download_button")
    data = json.loads(files[button.proto.url])
    series = data["runs"]["baseline"]["val/loss"]
    assert data["smoothing"] == 0.5 and list(data["runs"]) == ["baseline"]
    assert series["smoothed"] == pytest.approx(smooth(series["value"], 0.5).tolist(), rel=1e-12)


def test_an_empty_folder_offers_the_demo_and_sync_explains_what_it_needs(runs_page, tmp_path):
    at = runs_page(tmp_path / "none").run()
    assert not at.exception
    assert f"python -m core.demo --runs-dir {tmp_path / 'none'}" in "\n".join(texts(at, "code"))
    (popover,) = at.get("popover")
    assert popover.proto.popover.label == "Sync from Modal (not set up)"
    assert any("MODAL_TOKEN_ID" in c.value for c in popover.caption)  # inside the button's panel
    assert "pip install modal && modal setup" in "\n".join(texts(at, "code"))
