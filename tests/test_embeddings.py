"""core.embeddings and the Embeddings page: projections, neighbours, the current clip in the picture, bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from conftest import ROOT
from esc50_factory import make_dataset
from runs_factory import write_run
from streamlit.testing.v1 import AppTest

from core import embeddings as emb
from core.client import LocalBackend
from core.clip_results import clip_table, write_clip_results
from core.clip_store import ClipStore
from core.labels import CLASSES


def clusters(n_per: int = 40, classes: int = 5, dims: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (classes, dims))
    labels = np.repeat(np.arange(classes), n_per)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dims))).astype(np.float32), labels


def purity(xy: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Share of each point's k nearest 2-D neighbours that have its label."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :k]
    return float((labels[near] == labels[:, None]).mean())


@pytest.mark.parametrize("method", emb.methods())
def test_separate_classes_stay_apart_in_every_projection_and_it_is_repeatable(method):
    x, labels = clusters()
    xy = emb.project(x, method)
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32
    assert purity(xy, labels) > 0.9
    np.testing.assert_array_equal(xy, emb.project(x, method))  # seeded


def test_an_unknown_projection_names_the_ones_there_are():
    with pytest.raises(ValueError, match="pca, tsne"):
        emb.project(clusters()[0], "isomap")


def test_neighbours_are_by_cosine_and_a_point_is_its_own_nearest():
    x, _ = clusters()
    order, distance = emb.neighbours(x, x[17], k=10)
    assert order[0] == 17 and distance[0] == pytest.approx(0, abs=1e-9) and (np.diff(distance) >= 0).all()
    assert emb.neighbours(x, 3 * x[17], k=1)[0][0] == 17  # scale does not matter
    with pytest.raises(ValueError, match="different models"):
        emb.neighbours(x, np.zeros(8))


def test_place_is_the_mean_position_of_the_neighbours():
    x, _ = clusters()
    xy = emb.project(x, "pca")
    order, _ = emb.neighbours(x, x[5], k=4)
    np.testing.assert_allclose(emb.place(x, xy, x[5], k=4), xy[order].mean(axis=0), rtol=1e-6)


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays, words", [
    ({"embeddings": np.zeros((3, 4))}, "lacks the arrays"),
    ({"embeddings": np.zeros((3, 4)), "files": np.array(["a", "b"])}, "do not match"),
    ({"embeddings": np.full((2, 4), np.nan), "files": np.array(["a", "b"])}, "NaN"),
    ({"embeddings": np.array([["x"] * 4] * 2), "files": np.array(["a", "b"])}, "float vectors"),
    ({"embeddings": np.array([{"a": 1}] * 2, dtype=object), "files": np.array(["a", "b"])}, "not a readable"),
])
def test_a_bad_embeddings_file_is_refused_with_a_reason(tmp_path, arrays, words):
    with pytest.raises(emb.EmbeddingsError, match=words):
        emb.load_embeddings(_save(tmp_path / "embeddings.npz", **arrays))


def test_more_points_than_a_projection_can_afford_are_refused(tmp_path):
    path = _save(tmp_path / "embeddings.npz", embeddings=np.zeros((emb.MAX_POINTS + 1, 2), np.float32),
                 files=np.array(["a"] * (emb.MAX_POINTS + 1)))
    with pytest.raises(emb.EmbeddingsError, match="at most 5000"):
        emb.load_embeddings(path)


def test_a_file_that_is_not_npz_or_too_large_is_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(emb.EmbeddingsError, match="not a readable"):
        emb.load_embeddings(tmp_path / "junk.npz")
    with open(tmp_path / "huge.npz", "wb") as f:
        f.truncate(emb.MAX_BYTES + 1)
    with pytest.raises(emb.EmbeddingsError, match="larger than"):
        emb.load_embeddings(tmp_path / "huge.npz")


# -- the page ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory, untrained_predictor):
    """A run whose embeddings.npz holds the untrained model's own embeddings of a generated fold."""
    data = make_dataset(tmp_path_factory.mktemp("data") / "ESC-50-master", clips_per_fold=3)
    meta = pd.read_csv(data / "meta" / "esc50.csv")
    fold = meta[meta["fold"] == 5]
    runs = tmp_path_factory.mktemp("runs")
    write_run(runs, "embedded", config={"data": {"root": str(data)}})
    import soundfile as sf

    results = [untrained_predictor.analyze(sf.read(data / "audio" / f, dtype="float32")[0], top_k=50,
                                           feature_maps="none", embedding=True) for f in fold["filename"]]
    order = {c: i for i, c in enumerate(CLASSES)}
    logits = np.log(np.array([[{p.label: p.confidence for p in r.predictions}[c] for c in CLASSES] for r in results]))
    table = clip_table(logits, [order[c] for c in fold["category"]], fold["filename"], fold["fold"], CLASSES, CLASSES)
    write_clip_results(runs / "embedded", table, np.stack([r.embedding for r in results]))
    return runs, data, list(fold["filename"])


@pytest.fixture
def page(embedded_run, untrained_predictor, tmp_path, monkeypatch):
    import pages.ui as ui

    runs, _, _ = embedded_run
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(runs))
    monkeypatch.setenv("AUDIO_CNN_CLIPS_DIR", str(tmp_path / "clips"))
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)
    monkeypatch.delenv("AUDIO_CNN_ENDPOINT", raising=False)
    monkeypatch.setattr(ui, "make_backend", lambda s: LocalBackend(untrained_predictor, s))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120)
    st.cache_data.clear()


def test_the_page_projects_the_fold_with_the_method_in_the_url(page, embedded_run):
    _, _, files = embedded_run
    page.query_params.update(projection="tsne", colour="correct")
    at = page.run().switch_page("pages/embeddings.py").run()
    assert not at.exception
    assert at.radio(key="projection").value == "tsne"
    assert any(f"{len(files)} clips, 512 features each, projected with tsne" in c.value for c in at.caption)


def test_your_clip_lands_on_its_own_point_with_itself_as_nearest_neighbour(page, embedded_run, tmp_path):
    _, data, files = embedded_run
    clip = ClipStore(tmp_path / "clips").put((data / "audio" / files[4]).read_bytes())
    page.query_params.update(clip=clip, projection="pca")
    at = page.run().switch_page("pages/embeddings.py").run()
    assert not at.exception
    neighbours = at.dataframe[0].value
    assert neighbours.iloc[0]["file"] == files[4] and neighbours.iloc[0]["distance"] == pytest.approx(0, abs=1e-5)
    assert len(neighbours) == 10


def test_embeddings_of_other_weights_do_not_place_your_clip(page, embedded_run, tmp_path, monkeypatch):
    runs, data, files = embedded_run
    other = tmp_path / "runs"
    write_run(other, "other")
    arrays = dict(np.load(runs / "embedded" / "embeddings.npz"))
    np.savez(other / "other" / "embeddings.npz", **(arrays | {"checkpoint_id": np.asarray("0123456789ab")}))
    (other / "other" / "predictions.csv").write_bytes((runs / "embedded" / "predictions.csv").read_bytes())
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(other))
    page.query_params.update(clip=ClipStore(tmp_path / "clips").put((data / "audio" / files[0]).read_bytes()))
    at = page.run().switch_page("pages/embeddings.py").run()
    assert not at.exception
    assert any("Your clip is not placed" in c.value and "0123456789ab" in c.value for c in at.caption)


def test_a_damaged_embeddings_file_is_a_message(page, tmp_path, monkeypatch):
    write_run(tmp_path / "runs", "broken")
    (tmp_path / "runs" / "broken" / "embeddings.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "runs" / "broken" / "predictions.csv").write_text("file\n")
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(tmp_path / "runs"))
    at = page.run().switch_page("pages/embeddings.py").run()
    assert not at.exception and any("not a readable embeddings file" in e.value for e in at.error)


def test_the_chart_is_clickable_and_coloured_as_asked(page):
    page.query_params.update(colour="class", projection="pca")
    at = page.run().switch_page("pages/embeddings.py").run()
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    dots = spec["layer"][0]
    assert dots["encoding"]["color"]["field"] == "target"
    assert any(p["name"] == "clip" for p in spec.get("params", []) + dots.get("params", []))
