"""Saliency overlay and downloads on the pages (AppTest, the real Home.py router, the local model).

What a page shows and what its download holds must agree: each test reads
the file a download button would serve and compares it with the chart data
on the same screen.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from audio_factory import wav_bytes
from conftest import ROOT
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.client import LocalBackend
from core.clip_store import ClipStore

TIMEOUT = 120


@pytest.fixture
def downloads(monkeypatch):
    """{file name: bytes} of every download button rendered (AppTest's media store forgets them after a run)."""
    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        if filename and isinstance(path_or_data, bytes):
            served[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return served


@pytest.fixture
def app(untrained_predictor, tmp_path, monkeypatch):
    import pages.ui as ui

    monkeypatch.setenv("AUDIO_CNN_CLIPS_DIR", str(tmp_path / "clips"))
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path / "runs"))
    for key in ("AUDIO_CNN_ENDPOINT", "AUDIO_CNN_CHECKPOINT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(ui, "make_backend", lambda s: LocalBackend(untrained_predictor, s))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    st.cache_resource.clear()
    st.cache_data.clear()


def stored_clip(tmp_path) -> str:
    return ClipStore(tmp_path / "clips").put(wav_bytes(2.0, freq=660.0))


def chart_frames(chart) -> list[pd.DataFrame]:
    """Every dataset of a rendered Altair chart (Streamlit sends them beside the spec, as Arrow)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]


def test_saliency_overlay_is_bound_to_the_url_and_the_npz_holds_what_is_drawn(app, tmp_path, downloads):
    clip = stored_clip(tmp_path)
    app.query_params.update(clip=clip, saliency="integrated_gradients", opacity="0.4")
    at = app.run().switch_page("pages/spectrogram.py").run()
    assert not at.exception
    target = at.selectbox(key="target").value
    chart = at.get("vega_lite_chart")[1]
    overlay = json.loads(chart.proto.spec)
    assert len(overlay["layer"]) == 2 and overlay["layer"][1]["encoding"]["opacity"]["scale"]["range"] == [0, 0.4]
    assert "Integrated Gradients of" in overlay["title"]
    drawn = next(f for f in chart_frames(chart) if "saliency" in f.columns)
    arrays = np.load(io.BytesIO(downloads[f"{clip}-spectrogram.npz"]))
    saliency = arrays["saliency"]
    assert saliency.shape == arrays["input_spectrogram"].shape and saliency.shape[1] <= 400  # drawn unpooled
    on_screen = np.full_like(saliency, np.nan)
    on_screen[drawn["row"], drawn["col"]] = drawn["saliency"]
    np.testing.assert_array_equal(on_screen, saliency)  # the same float32s, cell for cell
    from PIL import Image

    from core.exports import blend
    from core.live_charts import spectrogram_image

    def pixels(name: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(downloads[name])).convert("RGB"))

    plain = spectrogram_image(arrays["input_spectrogram"])
    np.testing.assert_array_equal(pixels(f"{clip}-spectrogram.png"), plain)
    np.testing.assert_array_equal(pixels(f"{clip}-saliency-integrated_gradients-{target}.png"),
                                  blend(plain, saliency, 0.4))  # the opacity on screen


def test_a_target_from_the_link_that_is_not_in_the_top_k_falls_back_to_the_top_1(app, tmp_path):
    app.query_params.update(clip=stored_clip(tmp_path), saliency="gradcam", target="not-a-class")
    at = app.run().switch_page("pages/spectrogram.py").run()
    assert not at.exception
    picker = at.selectbox(key="target")
    assert picker.value == picker.options[0]


def test_predictions_downloads_hold_the_numbers_on_the_predict_page(app, tmp_path, downloads):
    clip = stored_clip(tmp_path)
    app.query_params.update(clip=clip, top_k="5")
    at = app.run()
    assert not at.exception
    shown = chart_frames(at.get("vega_lite_chart")[0])[0]["confidence"]
    table = pd.read_csv(io.BytesIO(downloads[f"{clip}-predictions.csv"]))
    assert list(table.columns) == ["rank", "class", "category", "confidence"] and len(table) == 5
    np.testing.assert_allclose(table["confidence"], shown, rtol=1e-12)
    body = json.loads(downloads[f"{clip}-predictions.json"])
    assert [p["class"] for p in body["predictions"]] == list(table["class"])


def test_feature_maps_npz_has_every_layer_on_the_page_by_name(app, tmp_path, downloads):
    clip = stored_clip(tmp_path)
    app.query_params.update(clip=clip)
    at = app.run().switch_page("pages/feature_maps.py").run()
    assert not at.exception
    arrays = np.load(io.BytesIO(downloads[f"{clip}-feature-maps.npz"]))
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    titles = [panel["title"]["text"] for s in specs for panel in s["concat"]]
    assert [k for k in arrays.files if k != "input_spectrogram"] == titles  # network order, same names
    assert arrays["layer5"].ndim == 2
