"""The dashboard's pages under Streamlit's AppTest: state, query params, errors (no browser).

Every test runs the real Home.py router with the local untrained model. The
backend is wrapped to count analyses, so "posts at most once per clip and
options" is checked, not assumed. Charts are only reachable as specs here;
tests/e2e checks that they draw.
"""

from __future__ import annotations

import json

import pytest
import streamlit as st
from audio_factory import wav_bytes
from conftest import DEFAULT_MODEL_PARAMS, ROOT
from streamlit.testing.v1 import AppTest

from core.client import LocalBackend
from core.clip_store import ClipStore, clip_hash
from core.labels import pretty

TIMEOUT = 120  # the first run builds the model; two shared cores


class CountingBackend(LocalBackend):
    """The local backend, counting every analysis it is asked for."""

    calls: list[tuple[int, dict]] = []

    def analyze(self, data: bytes, **options):
        CountingBackend.calls.append((len(data), options))
        return super().analyze(data, **options)


@pytest.fixture
def app(untrained_predictor, tmp_path, monkeypatch):
    """A fresh AppTest of Home.py; a clip store in tmp_path; caches cleared; analyses counted."""
    import pages.ui as ui

    monkeypatch.setenv("AUDIO_CNN_CLIPS_DIR", str(tmp_path / "clips"))
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path / "runs"))
    for key in ("AUDIO_CNN_ENDPOINT", "AUDIO_CNN_CHECKPOINT", "AUDIO_CNN_MAX_AUDIO_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(ui, "make_backend", lambda s: CountingBackend(untrained_predictor, s))
    CountingBackend.calls = []
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    st.cache_resource.clear()
    st.cache_data.clear()


def _texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def _upload(at: AppTest, data: bytes, name: str = "clip.wav") -> AppTest:
    at.file_uploader(key="upload").set_value((name, data, "audio/wav"))
    return at.run()


def _top_k(at: AppTest) -> list[str]:
    """The numbered top-k list under the predictions chart, one line per class."""
    lines = [m for m in _texts(at, "markdown") if m.startswith("1. **")]
    assert lines, "no top-k list on the page"
    return lines[0].split("  \n")


def _stored_clip(tmp_path, seconds: float = 2.0, freq: float = 440.0) -> str:
    return ClipStore(tmp_path / "clips").put(wav_bytes(seconds, freq=freq))


def test_home_starts_without_secrets_and_says_the_model_is_untrained(app):
    at = app.run()
    assert not at.exception
    assert any("local (cpu): reachable" in s for s in _texts(at, "success"))
    assert any("Untrained model" in w for w in _texts(at, "warning"))
    assert at.file_uploader(key="upload") is not None


def test_a_bad_setting_is_an_error_message_not_a_traceback(app, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_MAX_BODY_MB", "lots")
    at = app.run()
    assert not at.exception
    assert any("AUDIO_CNN_MAX_BODY_MB must be a number" in e for e in _texts(at, "error"))


def test_settings_are_read_from_secrets_too(app):
    app.secrets["AUDIO_CNN_MAX_AUDIO_SECONDS"] = "1"
    at = _upload(app.run(), wav_bytes(2.0))
    assert not at.exception
    assert any("the limit is 1 s" in e for e in _texts(at, "error"))


def test_an_upload_is_analysed_once_and_becomes_the_current_clip(app, tmp_path, untrained_predictor):
    at = _upload(app.run(), wav_bytes(2.0))
    assert not at.exception
    clip = at.query_params["clip"]
    assert at.session_state["clip"] == clip == clip_hash(wav_bytes(2.0))
    assert ClipStore(tmp_path / "clips").get(clip) == wav_bytes(2.0)
    # The lines are this clip's answer from this model (same process, same kernels: exact).
    want = untrained_predictor.analyze_bytes(wav_bytes(2.0), top_k=3).predictions
    assert _top_k(at) == [f"{i}. **{pretty(p.label)}** {p.confidence:.1%} ({p.category})" for i, p in enumerate(want, 1)]
    assert any("Untrained model: these predictions are random" in w for w in _texts(at, "warning"))
    at.run()  # an unrelated rerun: the cached analysis serves it
    assert len(CountingBackend.calls) == 1


def test_a_long_clip_gets_a_timeline(app):
    at = _upload(app.run(), wav_bytes(7.0))
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert any("Top class per 5 s window" in json.dumps(s) for s in specs)


def test_a_bad_upload_shows_the_error_and_keeps_the_previous_result(app):
    at = _upload(app.run(), wav_bytes(2.0))
    before, top = at.query_params["clip"], _top_k(at)
    at = _upload(at, b"this is a text file, not audio" * 20, name="notes.wav")
    assert not at.exception
    assert any("not an audio file" in e for e in _texts(at, "error"))
    assert at.query_params["clip"] == before
    assert _top_k(at) == top
    at.run()  # the bad file is still in the uploader: not sent again, message still shown
    assert sum(1 for n, _ in CountingBackend.calls if n < 1000) == 1
    assert any("not an audio file" in e for e in _texts(at, "error"))


def test_top_k_lives_in_the_url(app):
    app.query_params["top_k"] = "5"
    at = _upload(app.run(), wav_bytes(2.0))
    assert at.slider(key="top_k").value == 5
    assert len(_top_k(at)) == 5


def test_a_shared_clip_link_reopens_the_same_analysis(app, tmp_path):
    clip = _stored_clip(tmp_path)
    first = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    first.query_params["clip"] = clip
    first.run()
    app.query_params["clip"] = clip
    at = app.run()
    assert not at.exception
    assert _top_k(at) == _top_k(first)
    assert len(CountingBackend.calls) == 1  # the second session was served from the cache


def test_a_link_to_an_evicted_clip_says_so(app):
    app.query_params["clip"] = "0123456789abcdef"
    at = app.run()
    assert not at.exception
    assert any("not in this dashboard's clip store" in w for w in _texts(at, "warning"))


def test_a_malformed_clip_link_is_ignored_with_a_warning(app):
    app.query_params["clip"] = "../../etc/passwd"
    at = app.run()
    assert not at.exception
    assert any("not a clip id" in w for w in _texts(at, "warning"))
    assert "clip" not in at.query_params


def test_pages_without_a_clip_point_to_predict(app):
    at = app.run()
    for page in ("pages/spectrogram.py", "pages/feature_maps.py"):
        at.switch_page(page).run()
        assert not at.exception
        assert any("No clip analysed yet" in i for i in _texts(at, "info"))


def test_the_current_clip_follows_the_user_across_pages(app):
    at = _upload(app.run(), wav_bytes(2.0))
    clip = at.query_params["clip"]
    at.switch_page("pages/architecture.py").run()
    at.switch_page("pages/spectrogram.py").run()
    assert at.query_params["clip"] == clip
    assert any(clip in c for c in _texts(at, "caption"))


def test_spectrogram_page_draws_waveform_and_mel_heatmap_with_the_linked_colour_scale(app, tmp_path):
    app.query_params["clip"] = _stored_clip(tmp_path)
    app.query_params["scheme"] = "viridis"
    at = app.run().switch_page("pages/spectrogram.py").run()
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) == 2
    heat = specs[1]
    assert heat["encoding"]["y"]["scale"]["type"] == "symlog"
    assert heat["encoding"]["color"]["scale"]["scheme"] == "viridis"


def test_feature_maps_page_shows_every_stage_and_drills_into_channels_from_the_url(app, tmp_path):
    app.query_params["clip"] = _stored_clip(tmp_path)
    app.query_params["layer"] = "layer3.block-1.relu"
    app.query_params["channels"] = "4"
    at = app.run().switch_page("pages/feature_maps.py").run()
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    grids = [len(s["concat"]) for s in specs]
    assert grids[:5] == [1, 7, 9, 13, 7]  # stem, then each stage's blocks (.conv, .relu) and its output
    assert grids[5] == 4  # the drill-down: the 4 most active channels
    assert [o for _, o in CountingBackend.calls][-1] == {"channels_of": "layer3.block-1.relu", "channels_top": 4}
    assert any("no learned features" in w for w in _texts(at, "warning"))


def test_architecture_page_has_the_3d_view_the_table_and_the_total(app):
    app.query_params["rows"] = "stages"
    at = app.run().switch_page("pages/architecture.py").run()
    assert not at.exception
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    assert deck["views"][0]["@@type"] == "OrbitView"
    assert deck["layers"][0]["@@type"] == "PolygonLayer"
    assert at.metric[0].value == f"{DEFAULT_MODEL_PARAMS:,}"
    table = at.dataframe[0].value
    assert list(table["layer"]) == ["layer1", "layer2", "layer3", "layer4", "layer5", "pool", "dropout", "fc"]


def test_every_page_offers_nothing_broken_to_copy_outside_a_browser(app):
    # AppTest has no browser URL: st.context.url is None and no link box is drawn (no "None?clip=").
    at = _upload(app.run(), wav_bytes(2.0))
    assert not [c for c in at.get("code") if "None" in c.value]


def test_a_bad_clip_store_size_is_an_error_message(app, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_CLIPS_MB", "plenty")
    at = app.run()
    assert not at.exception
    assert any("AUDIO_CNN_CLIPS_MB must be a number greater than 0, got 'plenty'" in e for e in _texts(at, "error"))


def test_pages_render_through_core_and_never_import_torch_themselves():
    for path in [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]:
        source = path.read_text()
        assert "import torch" not in source and "from torch" not in source, path.name


def test_re_adding_an_earlier_upload_makes_it_current_again_without_a_new_analysis(app):
    first = wav_bytes(1.0, freq=300.0)
    at = _upload(app.run(), first)
    clip = at.query_params["clip"]
    at = _upload(at, wav_bytes(1.0, freq=900.0))
    assert at.query_params["clip"] != clip
    at.file_uploader(key="upload").set_value(None)
    at = _upload(at.run(), first)
    assert at.query_params["clip"] == clip
    assert len(CountingBackend.calls) == 2
