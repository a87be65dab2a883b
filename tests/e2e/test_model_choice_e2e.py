"""The sidebar's model choice in real headless Chromium: a ?model= link opens that run, choosing writes the URL."""

from __future__ import annotations

import re

import pytest
from conftest import stop_process
from custom_data_factory import write_checkpoint_run

from .conftest import screenshot, start_dashboard

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models_app(chromium, tmp_path_factory) -> tuple[str, dict]:
    """A dashboard whose runs folder holds two real checkpoints: "tools" (best) and "birds"."""
    tmp = tmp_path_factory.mktemp("models-dashboard")
    ids = {"tools": write_checkpoint_run(tmp / "runs", "tools", ["drill", "hammer", "saw"], 0.9, 1),
           "birds": write_checkpoint_run(tmp / "runs", "birds", ["blackbird", "robin", "wren"], 0.7, 2)}
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips")})
    yield url, ids
    stop_process(proc)


def test_a_link_names_the_model_and_choosing_one_updates_the_link(new_page, models_app):
    from playwright.sync_api import expect

    url, ids = models_app
    page = new_page()
    page.goto(f"{url}/?model=birds")
    sidebar = page.locator("[data-testid=stSidebar]")
    try:
        expect(sidebar.get_by_text(ids["birds"]).first).to_be_visible()  # the backend line and the model card
    except AssertionError:
        screenshot(page, "model-choice-failure")
        raise
    expect(sidebar.get_by_text("AudioCNN (birds)")).to_be_visible()
    page.get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name="tools", exact=True).click()
    expect(page).to_have_url(re.compile(r"model=tools"))
    expect(sidebar.get_by_text(ids["tools"]).first).to_be_visible()
