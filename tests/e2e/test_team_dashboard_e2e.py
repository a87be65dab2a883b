"""The dashboard as its Modal container runs it, in real Chromium: live runs, lasting links, the first visit.

Each test starts its own server with core.team_dashboard's command line; the
Volumes' mount points (/runs, /clips) are local folders. The local untrained
model (seeded, so the same in every process) stands in for the GPU endpoint.
"""

from __future__ import annotations

import pytest
from audio_factory import wav_bytes
from conftest import stop_process
from runs_factory import write_run

from .conftest import TIMEOUT_MS, screenshot
from .team_servers import start_team_dashboard

pytestmark = pytest.mark.e2e
PUBLIC = {"AUDIO_CNN_DASHBOARD_PUBLIC": "1"}  # no [auth]: these tests are about what a logged-in user sees


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def browser(chromium):
    """The suite's one browser (a second Playwright in this thread would find the first's loop running)."""
    return chromium


@pytest.fixture
def new_page(browser):
    """Pages in fresh browser contexts: another browser, as a teammate's would be."""
    contexts = []

    def make():
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
        contexts[-1].set_default_timeout(TIMEOUT_MS)
        return contexts[-1].new_page()

    yield make
    for context in contexts:
        context.close()


def top_k(page) -> list[str]:
    items = page.locator("[data-testid=stMain] [data-testid=stMarkdownContainer] ol li")
    _expect()(items.first).to_be_visible()
    return items.all_inner_texts()


def test_a_run_written_to_the_volume_appears_without_sync_and_links_show_the_public_url(new_page, tmp_path):
    expect = _expect()
    (tmp_path / "runs").mkdir()
    url, proc = start_team_dashboard(tmp_path, AUDIO_CNN_PUBLIC_URL="https://team--dash.modal.run", **PUBLIC)
    try:
        page = new_page()
        page.goto(f"{url}/training_runs")
        expect(page.get_by_text("No training runs")).to_be_visible()
        expect(page.get_by_text("Runs are read live from the Modal Volume")).to_be_visible()
        write_run(tmp_path / "runs", "on-modal", epochs=3, status="running")  # training commits an epoch
        page.reload()
        expect(page.get_by_text("on-modal").first).to_be_visible()
        expect(page.get_by_role("button", name="Sync from Modal")).to_have_count(0)
        link = page.locator("[data-testid=stSidebar] [data-testid=stCode]")  # Copy link: the public address
        expect(link).to_contain_text("https://team--dash.modal.run/training_runs")
        expect(link).not_to_contain_text("127.0.0.1")
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    finally:
        stop_process(proc)


def test_a_clip_link_opens_in_another_browser_after_a_restart(new_page, tmp_path):
    expect = _expect()
    wav = tmp_path / "dog-ish.wav"
    wav.write_bytes(wav_bytes(3.0, freq=440.0, seed=3))
    url, proc = start_team_dashboard(tmp_path, **PUBLIC)
    try:
        first = new_page()
        first.goto(url)
        first.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(wav))
        expect(first.get_by_text("analysed by AudioCNN")).to_be_visible()
        link, shown = first.url, top_k(first)
    finally:
        stop_process(proc)  # the container scales to zero; the clip Volume keeps the clip
    assert "clip=" in link
    url, proc = start_team_dashboard(tmp_path, port=int(url.rsplit(":", 1)[1]), **PUBLIC)
    try:
        teammate = new_page()
        teammate.goto(link)
        expect(teammate.get_by_text("analysed by AudioCNN")).to_be_visible()
        assert top_k(teammate) == shown
        expect(teammate.get_by_text("is not in this dashboard's clip store")).to_have_count(0)
    finally:
        stop_process(proc)


# Streamlit's pages/-folder router names pages by file (lower case) and lists Home.py and ui.py:
# these entries exist only in it (Home.py's navigation says "Feature Maps", "Training Runs").
FOLDER_ROUTER = ("Home", "ui", "feature maps", "training runs", "spectrogram", "architecture")


def test_the_first_visit_after_a_start_never_shows_the_folder_router(new_page, tmp_path):
    expect = _expect()
    (tmp_path / "runs").mkdir()
    url, proc = start_team_dashboard(tmp_path, **PUBLIC)
    try:
        page = new_page()
        page.goto(f"{url}/training_runs")  # the server's first request: a shared deep link
        seen = []
        for _ in range(32):  # every 250 ms for 8 s
            seen.append(page.evaluate(
                "() => [...document.querySelectorAll('[data-testid=stSidebarNav] a')].map(a => a.innerText)"))
            page.wait_for_timeout(250)
        router = [links for links in seen if any(t.strip() in FOLDER_ROUTER for t in links)]
        assert not router, f"the folder router was shown: {router[0]}"
        expect(page.get_by_role("heading", name="Training Runs")).to_be_visible()
        expect(page.get_by_text("Backend", exact=True)).to_be_visible()  # Home.py's sidebar
        page.locator("[data-testid=stSidebar] a", has_text="Architecture").click()
        expect(page.get_by_role("heading", name="Architecture")).to_be_visible()
        expect(page.get_by_text("Backend", exact=True)).to_be_visible()
        screenshot(page, "team-first-visit")
    finally:
        stop_process(proc)
