"""Choosing and comparing models: the sidebar's ?model=, Predict's side-by-side, the Architecture page's variants."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import streamlit as st
from audio_factory import wav_bytes
from conftest import ROOT
from custom_data_factory import write_checkpoint_run
from streamlit.testing.v1 import AppTest

from core.model import ModelConfig
from core.model_compare import compare_predictions
from core.model_variants import PRESETS, best_accuracy, compare, gflops, parameters

TIMEOUT = 120
TINY = PRESETS["tiny"]


write_run = write_checkpoint_run


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    ids = {"tools": write_run(runs, "tools", ["drill", "hammer", "saw"], 0.9, 1),
           "birds": write_run(runs, "birds", ["blackbird", "robin", "wren"], 0.7, 2)}
    return runs, ids


@pytest.fixture
def app(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_CLIPS_DIR", str(tmp_path / "clips"))
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(runs[0]))
    for key in ("AUDIO_CNN_ENDPOINT", "AUDIO_CNN_CHECKPOINT", "AUDIO_CNN_RUN", "AUDIO_CNN_CHECKPOINT_ID"):
        monkeypatch.delenv(key, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    st.cache_resource.clear()
    st.cache_data.clear()


def model_line(at: AppTest) -> str:
    lines = [m.value for m in at.sidebar.markdown if m.value.startswith("**Model**")]
    assert lines, (at.exception, at.main, at.sidebar)
    return lines[0]


def test_the_default_is_the_best_run(app, runs):
    at = app.run()
    assert not at.exception and runs[1]["tools"] in model_line(at)
    assert at.sidebar.selectbox(key="model").options[1:] == ["tools", "birds"]  # best first


def test_the_url_picks_another_run(app, runs):
    app.query_params["model"] = "birds"
    at = app.run()
    assert runs[1]["birds"] in model_line(at) and "AudioCNN (birds)" in model_line(at)


def test_a_model_param_naming_no_run_is_ignored(app, runs):
    app.query_params["model"] = "../../etc/passwd"
    at = app.run()
    assert not at.exception and runs[1]["tools"] in model_line(at)


def test_predict_compares_two_models_on_the_same_clip(app):
    at = app.run()
    at.file_uploader(key="upload").set_value(("clip.wav", wav_bytes(2.0), "audio/wav"))
    at = at.run()
    at.selectbox(key="compare").set_value("birds")
    at = at.run()
    assert not at.exception
    # entirely different classes: the two top-1s differ, and the table lists every class of both
    assert any("They disagree" in w.value for w in at.warning)
    names = {m.value for m in at.markdown}
    assert any("AudioCNN (tools)" in n for n in names) and any("AudioCNN (birds)" in n for n in names)
    assert len(at.get("vega_lite_chart")) >= 3


def test_comparing_top_k_lists_puts_disagreements_first():
    p = lambda label, c: SimpleNamespace(label=label, confidence=c)  # noqa: E731
    diff = compare_predictions([p("dog", 0.6), p("cat", 0.3), p("cow", 0.1)],
                               [p("dog", 0.5), p("hen", 0.3), p("cat", 0.2)])
    assert diff["same_top1"] and diff["only_a"] == ["cow"] and diff["only_b"] == ["hen"]
    assert [r["class"] for r in diff["rows"]] == ["cat", "hen", "cow", "dog"]
    assert diff["rows"][-1] == {"class": "dog", "rank_a": 1, "confidence_a": 0.6, "rank_b": 1,
                                "confidence_b": 0.5, "agree": True}


def test_the_seed_preset_has_the_seeds_size():
    assert PRESETS["seed-resnet34"] == ModelConfig()
    assert parameters(PRESETS["seed-resnet34"]) == 21_304_050          # DESIGN.md: 21.3 M
    assert gflops(PRESETS["seed-resnet34"]) == pytest.approx(7.95, abs=0.01)
    assert gflops(TINY) < gflops(PRESETS["small-cpu"]) < gflops(PRESETS["seed-resnet34"])


def test_variants_show_the_best_accuracy_of_runs_with_their_shape(runs):
    best = best_accuracy(runs[0])
    assert best == {(16, (16, 32, 64, 128), (1, 1, 1, 1)): (0.9, "tools")}
    rows = {r["preset"]: r for r in compare(runs[0], measure=False)}
    assert rows["tiny"]["best_val_accuracy"] == 0.9 and rows["tiny"]["best_run"] == "tools"
    assert rows["seed-resnet34"]["best_val_accuracy"] is None
    assert rows["small-cpu"]["flags"] == "--stem-channels 32 --widths 32,64,128,256 --depths 2,2,2,2"
