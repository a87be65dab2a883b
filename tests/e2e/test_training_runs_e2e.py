"""The Training Runs page in real headless Chromium: two runs compared, smoothing changed, link shared.

A dashboard of its own (the session one has an empty runs folder) reads a runs
folder with two runs written by SummaryWriter plus config/summary JSON. Its
first request is the deep link /training_runs, as a teammate's shared link
would be after a restart.
"""

from __future__ import annotations

import re

import pytest
from conftest import stop_process
from runs_factory import write_run

from .conftest import screenshot, start_dashboard

pytestmark = pytest.mark.e2e

CHART = "[data-testid=stVegaLiteChart]"
RUNS = ("baseline", "sweep/lr-1e-3")


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def runs_app(chromium, tmp_path_factory) -> str:
    """Base URL of a dashboard whose runs folder holds "baseline" and "sweep/lr-1e-3"."""
    tmp = tmp_path_factory.mktemp("runs-dashboard")
    write_run(tmp / "runs", "baseline", epochs=30, seed=0)
    write_run(tmp / "runs", "sweep/lr-1e-3", epochs=24, seed=3, config={"max_lr": 1e-3, "mixup_prob": 0.0})
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips"),
                                 "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": "",
                                 "MODAL_CONFIG_PATH": str(tmp / "no-modal.toml")})
    yield url
    stop_process(proc)


def chips(page, key: str) -> list[str]:
    """The selected options of the multiselect with this key."""
    return page.locator(f".st-key-{key} [data-tag] span[title]").all_inner_texts()


def assert_drawn(page, charts: int) -> None:
    """`charts` Vega charts drawn (SVG or canvas), and no exception box."""
    _expect()(page.locator(f"{CHART} svg, {CHART} canvas").nth(charts - 1)).to_be_visible()
    _expect()(page.locator("[data-testid=stException]")).to_have_count(0)


def test_compare_two_runs_change_smoothing_and_share_the_view(new_page, runs_app):
    expect = _expect()
    page = new_page()
    page.goto(f"{runs_app}/training_runs")  # the server's first request: a deep link
    expect(page.get_by_role("heading", name="Training Runs")).to_be_visible()
    expect(page.get_by_text("Backend", exact=True)).to_be_visible()  # Home.py's sidebar: not the pages/ router
    assert_drawn(page, 5)  # three default scalars, confusion matrix, per-class bars

    for run in RUNS:
        page.get_by_role("combobox", name="Compare runs").click()
        page.get_by_role("option", name=run, exact=True).click()
        expect(page).to_have_url(re.compile(r"runs=" + re.escape(run.replace("/", "%2F"))))
    page.keyboard.press("Escape")
    slider = page.locator(".st-key-smoothing input[type=range]")
    slider.focus()
    for _ in range(25):  # 0.60 -> 0.85 in steps of 0.01
        slider.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"smoothing=0\.85"))
    expect(page.locator(".st-key-smoothing [data-testid=stSliderThumbValue]")).to_have_text("0.85")
    assert chips(page, "runs") == list(RUNS)
    assert_drawn(page, 5)

    link_box = page.locator("[data-testid=stSidebar] [data-testid=stCode]")
    expect(link_box).to_contain_text("smoothing=0.85")
    link = link_box.inner_text().strip()
    assert "runs=baseline&runs=sweep%2Flr-1e-3" in link
    page.locator("[data-testid=stMain]").evaluate("el => el.scrollTo(0, 0)")
    path = screenshot(page, "training_runs")
    assert path.exists()

    fresh = new_page()  # a teammate: new browser context, no session
    fresh.goto(link)
    assert_drawn(fresh, 5)
    expect(fresh.locator(".st-key-smoothing [data-testid=stSliderThumbValue]")).to_have_text("0.85")
    assert chips(fresh, "runs") == list(RUNS)
    assert chips(fresh, "tags") == ["val/accuracy", "val/loss", "train/loss"]
