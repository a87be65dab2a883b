"""The Live page in real headless Chromium: the fake microphone streamed over WebRTC, labelled every hop.

Chromium's fake capture device plays tests/e2e/conftest.py's mic WAV in a
loop; streamlit-webrtc carries it to the dashboard's aiortc peer on
loopback (no STUN server), and the local untrained model classifies it.
"""

from __future__ import annotations

import re

import pytest

from .conftest import screenshot

pytestmark = pytest.mark.e2e

WINDOW = re.compile(r"window (\d+\.\d)-(\d+\.\d) s")


def _expect():
    from playwright.sync_api import expect

    return expect


def shown_window(page) -> tuple[float, float]:
    """(start, end) s of the window the page labels now."""
    text = page.locator("[data-testid=stMetricLabel]").inner_text()
    start, end = WINDOW.search(text).groups()
    return float(start), float(end)


def test_the_live_page_labels_the_microphone_every_hop(app_url, new_page):
    expect = _expect()
    page = new_page()
    page.goto(f"{app_url}/live")
    expect(page.get_by_text("Press Start to stream your microphone")).to_be_visible()
    # Watch one class with threshold 0: every window is over it, so one event spans the run.
    page.get_by_text("Events: per-class thresholds").click()
    page.get_by_label("Classes to watch").click()
    page.keyboard.type("Dog")
    page.get_by_role("option", name="Dog", exact=True).click()
    page.keyboard.press("Escape")   # close the options list
    threshold = page.get_by_label("Dog threshold")
    try:
        expect(threshold).to_be_visible()
    except AssertionError:
        screenshot(page, "live-threshold-failure")
        raise
    threshold.fill("0")
    threshold.press("Enter")
    expect(threshold).to_have_value("0.00")
    webrtc = page.frame_locator("iframe[title*='streamlit_webrtc']")
    webrtc.get_by_role("button", name="Start").click()

    label = page.locator("[data-testid=stMetricLabel]")
    expect(label).to_contain_text("Now hearing (window")
    seen = [shown_window(page)]
    while len(seen) < 4:   # three updates after the first label
        expect(label).not_to_have_text(re.compile(re.escape(f"window {seen[-1][0]:.1f}-{seen[-1][1]:.1f} s")))
        seen.append(shown_window(page))
    # Every update is a later window, one or more 1 s hops on, and all four labels came
    # within the first 15 s of microphone audio.
    ends = [end for _, end in seen]
    assert ends == sorted(set(ends)) and all(end - start == 5.0 for start, end in seen), seen
    assert ends[-1] <= 15.0, seen

    expect(page.get_by_text("Untrained model: these predictions are random")).to_be_visible()
    expect(page.get_by_text("Top classes per window (untrained model: meaningless)")).to_be_visible()
    expect(page.get_by_text("Log-mel spectrogram of the last")).to_be_visible()
    expect(page.locator("[data-testid=stImage] img")).to_be_visible()
    events = page.locator("[data-testid=stTable]")
    expect(events).to_contain_text("Dog")
    expect(events).to_contain_text("ongoing")

    webrtc.get_by_role("button", name="Stop").click()
    expect(webrtc.get_by_role("button", name="Start")).to_be_visible()
    expect(label).to_contain_text("Now hearing (window")   # the last run stays on screen
    expect(events).to_contain_text("ended")                 # stopping closed the event
    download = page.get_by_role("button", name="Download events (CSV)")
    expect(download).to_be_enabled()
    with page.expect_download() as done:
        download.click()
    header, row = open(done.value.path()).read().strip().splitlines()[:2]
    assert header == "time,class,category,peak,threshold,from_s,to_s,windows" and ",dog,Animals," in row
    expect(page.locator("[data-testid=stVegaLiteChart] svg")).to_be_visible()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    screenshot(page, "live")
