"""Explain and explore in real headless Chromium: the saliency overlay draws, a per-clip row opens
its clip in Spectrogram, the embedding picture draws.

A dashboard of its own over a runs folder with one "scored" run: a
predictions.csv and embeddings.npz of fold 5 of a generated ESC-50-layout
dataset, whose config.json points at that dataset (so its clips can play).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
from conftest import stop_process
from esc50_factory import make_dataset
from runs_factory import write_run

from core.clip_results import clip_table, write_clip_results
from core.labels import CLASSES

from .conftest import screenshot, start_dashboard

pytestmark = pytest.mark.e2e

CHART = "[data-testid=stVegaLiteChart]"
ROW_HEIGHT = 35  # Streamlit's dataframe rows (and its header row) are 35 px tall


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def explain_app(chromium, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("explain-dashboard")
    data = make_dataset(tmp / "ESC-50-master", clips_per_fold=2)
    write_run(tmp / "runs", "scored", config={"data": {"root": str(data)}})
    meta = pd.read_csv(data / "meta" / "esc50.csv")
    fold = meta[meta["fold"] == 5]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(fold), 5)) + 1.5 * np.eye(5)[fold["target"]]
    table = clip_table(logits, fold["target"], fold["filename"], fold["fold"], CLASSES[:5], CLASSES[:5])
    write_clip_results(tmp / "runs" / "scored", table, rng.normal(size=(len(fold), 16)).astype(np.float32))
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips"),
                                 "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": "",
                                 "MODAL_CONFIG_PATH": str(tmp / "no-modal.toml")})
    yield url, table
    stop_process(proc)


def test_a_selected_clip_row_plays_and_opens_in_spectrogram_with_a_saliency_overlay(new_page, explain_app):
    expect = _expect()
    url, table = explain_app
    page = new_page()
    page.goto(f"{url}/training_runs?clips_run=scored&clips_wrong=true&clips_sort=confidence")
    grid = page.locator(".st-key-clips_rows [data-testid=stDataFrame]")
    expect(grid).to_be_visible()
    try:
        grid.scroll_into_view_if_needed()  # mouse coordinates are the viewport's
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + ROW_HEIGHT * 1.5)  # the first row's selection box
        expect(page.get_by_role("link", name="Open in Spectrogram")).to_be_visible()
        expect(page.locator("[data-testid=stAudio]")).to_be_visible()
        wrong = table[table["target"] != table["predicted"]].sort_values("confidence", ascending=False, kind="stable")
        expect(page.locator("[data-testid=stMarkdown]", has_text=wrong.iloc[0]["file"])).to_be_visible()
        page.get_by_role("link", name="Open in Spectrogram").click()
        expect(page.get_by_role("heading", name="Spectrogram")).to_be_visible()
        expect(page.locator(f"{CHART} svg, {CHART} canvas").nth(1)).to_be_visible()
        page.goto(page.url + "&saliency=gradcam")
        expect(page.get_by_text("Grad-CAM (last stage) of", exact=False)).to_be_visible()
        expect(page.get_by_role("button", name="Saliency overlay (PNG)")).to_be_visible()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    except Exception:
        screenshot(page, "explain-clip-row")
        raise


def test_the_embeddings_page_draws_the_fold(new_page, explain_app):
    expect = _expect()
    url, table = explain_app
    page = new_page()
    page.goto(f"{url}/embeddings?projection=pca&colour=correct")
    try:
        expect(page.get_by_text(f"{len(table)} clips, 16 features each, projected with pca")).to_be_visible()
        expect(page.locator(f"{CHART} svg, {CHART} canvas").first).to_be_visible()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    except Exception:
        screenshot(page, "explain-embeddings")
        raise


def _darkest_blue(png: bytes) -> tuple[int, int] | None:
    """(x, y) of the darkest clearly blue pixel of a screenshot: the fullest confusion cell."""
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    blue = (img[..., 2] - img[..., 0] > 60) & (img[..., 2] - img[..., 1] > 20)
    if not blue.any():
        return None
    ys, xs = np.nonzero(blue)
    i = int(np.argmin(img[ys, xs].sum(axis=1)))
    return int(xs[i]), int(ys[i])


def test_a_click_on_a_confusion_cell_filters_the_clip_table_to_it(new_page, explain_app):
    expect = _expect()
    url, table = explain_app
    page = new_page()
    page.goto(f"{url}/training_runs?clips_run=scored")
    chart = page.locator(f".st-key-clips_cm {CHART} canvas, .st-key-clips_cm {CHART} svg").first
    expect(chart).to_be_visible()
    try:
        chart.scroll_into_view_if_needed()
        deadline = time.monotonic() + 60
        while (spot := _darkest_blue(chart.screenshot())) is None and time.monotonic() < deadline:
            pass  # Vega draws after the element appears: wait for the cells themselves
        assert spot is not None, "no confusion cell drawn"
        chart.click(position={"x": spot[0], "y": spot[1]})
        expect(page).to_have_url(re.compile(r"clips_true=.+&.*clips_pred=|clips_pred=.+&.*clips_true="))
    except Exception:
        screenshot(page, "explain-confusion-click")
        raise


def _leftmost_point(png: bytes) -> tuple[int, int] | None:
    """(x, y) inside the leftmost drawn point: saturated pixels, the legend being on the right."""
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    coloured = (img.max(axis=2) - img.min(axis=2)) > 60
    if not coloured.any():
        return None
    ys, xs = np.nonzero(coloured)
    i = int(np.argmin(xs))
    return int(xs[i]) + 3, int(ys[i])


def test_a_click_on_a_point_selects_its_clip(new_page, explain_app):
    expect = _expect()
    url, table = explain_app
    page = new_page()
    page.goto(f"{url}/embeddings?projection=pca&colour=correct")
    chart = page.locator(f".st-key-emb_chart {CHART} canvas, .st-key-emb_chart {CHART} svg").first
    expect(chart).to_be_visible()
    try:
        chart.scroll_into_view_if_needed()
        deadline = time.monotonic() + 60
        while (spot := _leftmost_point(chart.screenshot())) is None and time.monotonic() < deadline:
            pass  # Vega draws after the element appears
        assert spot is not None, "no point drawn"
        chart.click(position={"x": spot[0], "y": spot[1]})
        expect(page.locator("[data-testid=stAudio]")).to_be_visible()
        expect(page.get_by_role("link", name="Open in Spectrogram")).to_be_visible()
        shown = page.locator("[data-testid=stMarkdown]", has_text=".wav").first.inner_text()
        assert any(f in shown for f in table["file"])
    except Exception:
        screenshot(page, "explain-embedding-click")
        raise
