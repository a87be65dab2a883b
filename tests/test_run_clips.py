"""The per-clip table on Training Runs (pages/run_clips.py) and its pieces in core.clip_results."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from esc50_factory import make_dataset
from runs_factory import write_run
from streamlit import dataframe_util
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.clip_results import clip_audio_path, clip_table, filter_clips, write_clip_results
from core.labels import CLASSES

PAGE = str(ROOT / "pages" / "training_runs.py")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ESC-50-master", clips_per_fold=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset) -> Path:
    """"scored" (a predictions.csv of fold 5: made-up logits, some clips wrong) and "bare" (none)."""
    root = tmp_path_factory.mktemp("runs")
    write_run(root, "scored", config={"data": {"root": str(dataset)}})
    write_run(root, "bare", seed=1)
    meta = pd.read_csv(dataset / "meta" / "esc50.csv")
    fold = meta[meta["fold"] == 5]
    logits = np.random.default_rng(0).normal(size=(len(fold), 5)) + 1.5 * np.eye(5)[fold["target"]]
    table = clip_table(logits, fold["target"], fold["filename"], fold["fold"], CLASSES[:5], CLASSES[:5])
    write_clip_results(root / "scored", table, np.zeros((len(fold), 4), np.float32))
    return root


@pytest.fixture
def page(monkeypatch, runs):
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(runs))

    def make(**params) -> AppTest:
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.query_params.update(params)
        return at.run()

    return make


@pytest.fixture
def downloads(monkeypatch):
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        if filename and isinstance(path_or_data, bytes):
            served[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return served


def clip_rows(at: AppTest) -> pd.DataFrame:
    frame = at.dataframe[-1]  # the per-clip table is the page's last table
    return frame.value if isinstance(frame.value, pd.DataFrame) else dataframe_util.convert_anything_to_pandas_df(frame.value)


def predictions(runs: Path) -> pd.DataFrame:
    return pd.read_csv(runs / "scored" / "predictions.csv")


def test_the_table_lists_every_clip_of_the_fold_highest_loss_first(page, runs):
    at = page(clips_run="scored")
    assert not at.exception
    rows = clip_rows(at)
    assert len(rows) == len(predictions(runs)) and list(rows["loss"]) == sorted(rows["loss"], reverse=True)


def test_the_classes_in_the_url_filter_the_table(page, runs):
    table = predictions(runs)
    wrong = table[table["target"] != table["predicted"]].iloc[0]
    at = page(clips_run="scored", clips_true=wrong["target"], clips_pred=wrong["predicted"])
    rows = clip_rows(at)
    assert len(rows) >= 1 and set(rows["target"]) == {wrong["target"]} and set(rows["predicted"]) == {wrong["predicted"]}


def test_most_confident_mistakes_is_one_click_and_lands_in_the_url(page, runs):
    at = page(clips_run="scored")
    at.button(key="clips_mcm").click().run()
    rows = clip_rows(at)
    table = predictions(runs)
    expected = table[table["target"] != table["predicted"]].sort_values("confidence", ascending=False, kind="stable")
    assert list(rows["file"]) == list(expected["file"]) and len(rows) > 0
    assert at.query_params["clips_wrong"] == "true" and at.query_params["clips_sort"] == "confidence"


def test_the_download_holds_the_rows_on_screen(page, downloads):
    at = page(clips_run="scored", clips_wrong="true")
    served = pd.read_csv(io.BytesIO(downloads["scored-clips.csv"]))
    shown = clip_rows(at)
    assert list(served["file"]) == list(shown["file"])
    np.testing.assert_array_equal(served["confidence"], shown["confidence"])


def test_a_run_without_predictions_says_how_to_make_them(page):
    at = page(runs="bare")
    assert not at.exception
    assert any("python -m core.clip_results" in c for c in (e.value for e in at.caption))


def test_a_damaged_predictions_csv_is_a_message_not_a_traceback(page, runs, tmp_path, monkeypatch):
    write_run(tmp_path, "broken")
    (tmp_path / "broken" / "predictions.csv").write_text("file,fold\nx.wav,1\n")
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("lacks the columns" in e.value for e in at.error)


# -- pieces ------------------------------------------------------------------------------------


def test_filter_clips_combines_classes_mistakes_and_sort():
    table = pd.DataFrame({"file": list("abcd"), "target": ["dog", "dog", "cat", "dog"],
                          "predicted": ["dog", "cat", "cat", "cat"], "confidence": [0.9, 0.8, 0.7, 0.95],
                          "loss": [0.1, 2.0, 0.3, 3.0]})
    assert list(filter_clips(table)["file"]) == ["d", "b", "c", "a"]
    assert list(filter_clips(table, target="dog", predicted="cat", sort="confidence")["file"]) == ["d", "b"]
    assert list(filter_clips(table, wrong_only=True, sort="confidence")["file"]) == ["d", "b"]
    with pytest.raises(ValueError, match="loss, confidence"):
        filter_clips(table, sort="file")


def test_clip_audio_path_stays_inside_the_dataset_audio_folder(dataset, tmp_path):
    name = sorted((dataset / "audio").iterdir())[0].name
    assert clip_audio_path(dataset, name, 10**7) == (dataset / "audio" / name).resolve()
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"RIFF")
    (dataset / "audio" / "link.wav").symlink_to(outside)
    for hostile in ("../meta/esc50.csv", str(outside), "link.wav", "", "missing.wav", "."):
        assert clip_audio_path(dataset, hostile, 10**7) is None, hostile
    assert clip_audio_path(dataset, name, 10) is None  # over the size limit
    assert clip_audio_path(None, name, 10**7) is None
