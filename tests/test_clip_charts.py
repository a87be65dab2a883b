"""core.clip_charts and core.network_charts: figure builders are pure functions of data; their specs say what the pages promise."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from types import SimpleNamespace

import altair as alt
import numpy as np
import pytest
from conftest import ROOT

from core import clip_charts, network_charts
from core.labels import CLASSES
from core.results import waveform_envelope


@pytest.fixture(autouse=True)
def _no_row_limit():
    # Streamlit ships data as Arrow; Altair's own JSON transformer would refuse > 5000 rows.
    with alt.data_transformers.disable_max_rows():
        yield


@pytest.fixture(scope="module")
def layers(untrained_predictor):
    return untrained_predictor.architecture()["layers"]


def _pred(label, confidence):
    return SimpleNamespace(label=label, confidence=confidence)


def _mel_centres(n=128, f_max=22050.0):
    """HTK mel centres, as FeatureConfig.mel_frequencies gives them (without importing torch here)."""
    mel = np.linspace(0, 2595 * np.log10(1 + f_max / 700), n + 2)[1:-1]
    return 700 * (10 ** (mel / 2595) - 1)


def test_charts_import_neither_streamlit_nor_torch():
    code = "import sys, core.clip_charts, core.network_charts; print(sorted(m for m in ('streamlit', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_predictions_chart_keeps_order_colours_by_category_and_flags_an_untrained_model():
    preds = [_pred("dog", 0.6), _pred("rain", 0.3), _pred("siren", 0.1)]
    spec = clip_charts.predictions_chart(preds, trained=False).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert [r["label"] for r in rows] == ["Dog  60.0%", "Rain  30.0%", "Siren  10.0%"]
    assert [r["category"] for r in rows] == ["Animals", "Natural soundscapes & water sounds", "Exterior/urban noises"]
    assert "UNTRAINED" in json.dumps(spec)
    assert "UNTRAINED" not in json.dumps(clip_charts.predictions_chart(preds, trained=True).to_dict())


def test_envelope_frame_pairs_min_and_max_per_bucket_over_the_clip_duration():
    env = np.array([-0.5, 0.5, -0.2, 0.1, -1.0, 0.9, 0.0, 0.0], dtype=np.float32)
    df = clip_charts.envelope_frame(env, duration=2.0)
    assert list(df["lo"]) == pytest.approx([-0.5, -0.2, -1.0, 0.0])
    assert list(df["hi"]) == pytest.approx([0.5, 0.1, 0.9, 0.0])
    assert df["t0"].iloc[0] == 0 and df["t1"].iloc[-1] == pytest.approx(2.0)


def test_envelope_frame_of_a_clip_shorter_than_the_envelope_is_its_samples():
    samples = np.array([0.1, -0.3, 0.2], dtype=np.float32)
    df = clip_charts.envelope_frame(waveform_envelope(samples), duration=3 / 44100)
    assert len(df) == 3
    assert list(df["lo"]) == list(df["hi"]) == pytest.approx([0.1, -0.3, 0.2])


def test_mel_band_edges_tile_the_axis_around_each_centre():
    centres = _mel_centres()
    lo, hi = clip_charts.mel_band_edges(centres)
    assert lo[0] >= 0
    assert np.allclose(hi[:-1], lo[1:])
    assert np.all((lo < centres) & (centres < hi))


def test_pool_columns_averages_groups_and_passes_short_maps_through():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    same, g = clip_charts.pool_columns(x, 10)
    assert g == 1 and np.array_equal(same, x)
    pooled, g = clip_charts.pool_columns(x, 3)
    assert g == 2
    assert pooled.tolist() == [[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]]
    ragged, g = clip_charts.pool_columns(np.ones((1, 7), np.float32), 3)  # groups of 3: last has 1 column
    assert ragged.shape == (1, 3) and np.allclose(ragged, 1)


def test_spectrogram_chart_is_mel_spaced_in_hz_and_bounded_for_long_clips():
    spec = np.random.default_rng(0).normal(-20, 10, size=(128, 2584)).astype(np.float32)  # 30 s
    chart = clip_charts.spectrogram_chart(spec, _mel_centres(), 512 / 44100, duration=30.0, scheme="viridis")
    d = chart.to_dict()
    assert d["encoding"]["y"]["scale"] == {"type": "symlog", "constant": 700, "domain": [0, pytest.approx(22050, rel=0.05)],
                                           "nice": False}
    assert d["encoding"]["color"]["scale"]["scheme"] == "viridis"
    cells = d["datasets"][d["data"]["name"]]
    assert len(cells) <= 128 * 400
    assert {"row", "col", "db"} == set(cells[0])
    assert max(d["encoding"]["y"]["axis"]["values"]) <= 22050


def test_spectrogram_cells_carry_the_db_values():
    spec = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = clip_charts.spectrogram_chart(spec, np.array([100.0, 1000.0]), 0.01, duration=0.03).to_dict()
    cells = d["datasets"][d["data"]["name"]]
    assert [(c["row"], c["col"], c["db"]) for c in cells] == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 3), (1, 1, 4), (1, 2, 5)]


def test_timeline_has_one_bar_per_window_with_its_top_class():
    windows = [SimpleNamespace(start=0.0, end=5.0, predictions=[_pred("dog", 0.7)]),
               SimpleNamespace(start=2.5, end=7.5, predictions=[_pred("cat", 0.4)])]
    d = clip_charts.timeline_chart(windows, duration=7.5).to_dict()
    rows = next(iter(d["datasets"].values()))
    assert [(r["t0"], r["t1"], r["top"]) for r in rows] == [(0.0, 5.0, "Dog"), (2.5, 7.5, "Cat")]


def test_feature_map_grid_keeps_network_order_and_computes_hover_stats_in_the_browser():
    maps = {"layer1": np.ones((4, 8)), "layer2.block-0.conv": np.zeros((4, 8)), "layer2": np.eye(4, 8)}
    d = clip_charts.feature_map_grid(maps, scheme="magma").to_dict()
    assert [c["title"]["text"] for c in d["concat"]] == list(maps)
    assert d["resolve"]["scale"]["color"] == "independent"
    first = d["concat"][0]
    tooltip = {t["field"] for t in first["encoding"]["tooltip"]}
    assert {"min", "max", "mean", "shape", "value"} <= tooltip
    assert any("joinaggregate" in t for t in first["transform"])
    assert any(t.get("as") == "shape" and "4 x 8" in t["calculate"] for t in first["transform"])


def test_feature_map_of_a_long_clip_is_pooled_but_reports_its_true_shape():
    d = clip_charts.feature_map_grid({"layer1": np.ones((32, 646))}).to_dict()
    sub = d["concat"][0]
    data = sub.get("data", d.get("data"))  # Altair hoists a lone subchart's data to the top
    assert len(d["datasets"][data["name"]]) <= 32 * 128
    assert any("32 x 646" in t.get("calculate", "") for t in sub["transform"])


def test_channel_grid_titles_each_channel_strongest_first():
    d = clip_charts.channel_grid("layer3", [7, 2], [1.5, 0.25], np.ones((2, 4, 4))).to_dict()
    assert [c["title"]["text"] for c in d["concat"]] == ["channel 7 (mean 1.50)", "channel 2 (mean 0.25)"]


def test_stage_of_names_the_stem_the_stages_and_the_head():
    assert [network_charts.stage_of(n) for n in ("layer1", "layer2.block-0.conv", "layer5", "pool", "fc")] == \
        ["stem", "layer2", "layer5", "head", "head"]
    assert list(network_charts.group_by_stage(["layer1", "layer2.block-0.relu", "layer2", "layer3"])) == \
        ["stem", "layer2", "layer3"]


def test_architecture_blocks_are_one_per_layer_in_order_without_overlap(layers):
    blocks = network_charts.architecture_blocks(layers)
    names = [b["name"] for b in blocks]
    assert names[0] == "layer1" and names[-3:] == ["pool", "dropout", "fc"]
    assert sum(1 for b in blocks if ".block-" in b["name"]) == 3 + 4 + 6 + 3
    assert all(a["x1"] < b["x0"] for a, b in itertools.pairwise(blocks))
    thick = {b["stage"]: b["x1"] - b["x0"] for b in blocks}
    assert thick["layer2"] < thick["layer3"] < thick["layer4"] < thick["layer5"]  # channels double
    assert len({tuple(b["colour"]) for b in blocks}) == len(network_charts.STAGE_COLOURS)
    first = blocks[0]  # 64 x 32 x 108: height from the 32 frequency rows, width from the 108 frames
    assert first["elevation"] == 16 and first["polygon"][2][1] - first["polygon"][0][1] == 54


def test_architecture_deck_is_an_orbit_view_without_a_map(layers):
    deck = network_charts.architecture_deck(layers)
    d = json.loads(deck.to_json())
    assert d["views"][0]["@@type"] == "OrbitView"
    assert d.get("mapStyle") in (None, "") and d.get("mapProvider") in (None, "")
    assert [layer["@@type"] for layer in d["layers"]] == ["PolygonLayer", "TextLayer"]
    assert d["layers"][0]["pickable"] is True
    tooltip = deck._tooltip  # travels beside the JSON: st.pydeck_chart reads this attribute
    assert "{name}" in tooltip["html"] and "{params}" in tooltip["html"]
    assert [t["text"].split("\n")[0] for t in d["layers"][1]["data"]] == \
        ["stem", "layer2", "layer3", "layer4", "layer5", "head"]


def test_layer_table_filters_by_depth_and_its_top_level_adds_up_to_the_total(untrained_predictor, layers):
    top = network_charts.layer_table(layers, max_depth=0)
    assert list(top["layer"]) == ["layer1", "layer2", "layer3", "layer4", "layer5", "pool", "dropout", "fc"]
    assert top["parameters"].sum() == untrained_predictor.architecture()["total_params"]
    assert len(network_charts.layer_table(layers, max_depth=9)) == len(layers)
    assert top["output shape"].iloc[0] == "64 x 32 x 108"


def test_every_class_has_a_category_colour():
    preds = [_pred(c, 1 / len(CLASSES)) for c in CLASSES]
    rows = next(iter(clip_charts.predictions_chart(preds).to_dict()["datasets"].values()))
    assert "unknown" not in {r["category"] for r in rows}
