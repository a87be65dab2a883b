"""A hostile ?filter= link in real Chromium: the page answers and the Streamlit process keeps serving.

Before: `/training_runs?filter=(.*.*)*!` with a run named like the default
`run-20261202-183000` pegged a core in Python's `re` (holding the GIL);
`/_stcore/health` stopped answering within 4 s and every session froze.
A thread polls /_stcore/health for the whole visit; each poll may take up to
HEALTH_TIMEOUT_S (generous, for a loaded machine; a frozen process never answers).
"""

from __future__ import annotations

import threading
import urllib.request

import pytest
from conftest import stop_process
from runs_factory import write_run

from .conftest import start_dashboard

pytestmark = pytest.mark.e2e

HEALTH_TIMEOUT_S = 30
CATASTROPHIC = "(.*.*)*!"
CHARTS = "[data-testid=stVegaLiteChart] svg, [data-testid=stVegaLiteChart] canvas"


@pytest.fixture(scope="module")
def app(chromium, tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("hostile-filter")
    write_run(tmp / "runs", "run-20261202-183000", epochs=3, seed=0)
    write_run(tmp / "runs", "sweep/lr-1e-3", epochs=3, seed=1)
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips"),
                                 "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": "",
                                 "MODAL_CONFIG_PATH": str(tmp / "no-modal.toml")})
    yield url
    stop_process(proc)


class HealthPoller(threading.Thread):
    """Polls `url` until stopped; records every answer ("ok") or failure (the exception's text)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.stopped = url, [], threading.Event()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run(self):
        while not self.stopped.is_set():
            try:
                with self.opener.open(self.url, timeout=HEALTH_TIMEOUT_S) as r:
                    self.answers.append(r.read().decode())
            except OSError as err:
                self.answers.append(f"failed: {err}")
            self.stopped.wait(0.1)

    def stop(self) -> list[str]:
        self.stopped.set()
        self.join(timeout=HEALTH_TIMEOUT_S + 5)
        return self.answers


def open_with_filter(new_page, app: str, pattern: str):
    from urllib.parse import quote

    page = new_page()
    page.goto(f"{app}/training_runs?filter={quote(pattern, safe='')}")
    return page


def test_the_catastrophic_filter_answers_and_health_keeps_answering(new_page, app):
    from playwright.sync_api import expect

    poller = HealthPoller(f"{app}/_stcore/health")
    poller.start()
    try:
        page = open_with_filter(new_page, app, CATASTROPHIC)
        expect(page.get_by_text("No run matches the filter.")).to_be_visible()
        expect(page.locator(".st-key-filter input")).to_have_value(CATASTROPHIC)  # waits for the render
        other = new_page()  # another session on the same process is served as usual
        other.goto(f"{app}/training_runs")
        expect(other.locator(CHARTS).first).to_be_visible()  # its script ran to the charts
    finally:
        answers = poller.stop()
    assert answers and all(a == "ok" for a in answers), answers


def test_a_refused_filter_says_so_under_the_box_and_shows_every_run(new_page, app):
    from playwright.sync_api import expect

    poller = HealthPoller(f"{app}/_stcore/health")
    poller.start()
    try:
        page = open_with_filter(new_page, app, r"(x+x+)+y\1")
        expect(page.get_by_text("Invalid or too slow filter (backreferences")).to_be_visible()
        expect(page.locator(CHARTS).first).to_be_visible()  # curves drawn: every run shown, not "No run matches"
        expect(page.get_by_text("No run matches the filter.")).to_have_count(0)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    finally:
        answers = poller.stop()
    assert answers and all(a == "ok" for a in answers), answers
