"""Fixtures for the browser tests: one Streamlit server and one headless Chromium per session.

The server runs `streamlit run Home.py` on a free loopback port with the
local untrained backend (an empty runs folder) and its own clip store. The
browser is Debian's /usr/bin/chromium driven by Python Playwright (never
`playwright install`); flags per ../shared/BROWSER.md, plus a fake
microphone that plays a generated WAV.

Missing browser: the tests skip with the reason, unless
AUDIO_CNN_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest
from audio_factory import wav_bytes
from conftest import ROOT, free_port, start_process, stop_process

CHROMIUM = os.environ.get("AUDIO_CNN_CHROMIUM", "/usr/bin/chromium")  # Debian's; never `playwright install`
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",  # WebGL via SwiftShader
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
TIMEOUT_MS = 120_000  # generous: two cores shared with other test runs; we wait for content, not time


def _require_browser() -> None:
    required = os.environ.get("AUDIO_CNN_REQUIRE_BROWSER") == "1"
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium; .ci/run does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is not installed (pip install -r requirements-dev.txt)"
    if reason:
        if required:
            pytest.fail(f"AUDIO_CNN_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def start_dashboard(env: dict[str, str]):
    """`streamlit run Home.py` on a free loopback port with `env` over a local-backend default.

    Returns (base URL without a trailing slash, process); stop it with stop_process.
    """
    port = free_port()
    env = {"AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_ENDPOINT": "", **env}
    proc = start_process(
        [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless=true",
         "--server.address=127.0.0.1", f"--server.port={port}", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        f"http://127.0.0.1:{port}/_stcore/health", env,
    )
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="session")
def app_url(tmp_path_factory) -> str:
    """Base URL of a running dashboard on the local untrained backend (no trailing slash)."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("dashboard")
    (tmp / "runs").mkdir()
    url, proc = start_dashboard({"AUDIO_CNN_RUNS_DIR": str(tmp / "runs"), "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips")})
    yield url
    stop_process(proc)


@pytest.fixture(scope="session")
def mic_wav(tmp_path_factory) -> Path:
    """What the fake microphone plays: a 3 s 44.1 kHz tone at 880 Hz (different from the uploads)."""
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    path.write_bytes(wav_bytes(3.0, freq=880.0, seed=7))
    return path


# Console errors a page may log without anything being wrong, each with its reason. Every other
# console error or uncaught page error fails the test that caused it.
ALLOWED_BROWSER_ERRORS: dict[str, str] = {
    r"net::ERR_NAME_NOT_RESOLVED \(https://fonts\.gstatic\.com/":
        "Streamlit fetches Material Symbols icons (st.navigation's page icons) from Google; this machine "
        "has no internet, so the icon stays blank. Deployed, it loads.",
    r"404 \(Not Found\) \(http://127\.0\.0\.1:\d+/[a-z_]+/_stcore/(health|host-config)\)":
        "Opened on a page's own URL (/training_runs), Streamlit's frontend first tries that path as the "
        "app's base URL, gets 404, then connects to the root one.",
}


def unexpected_errors(errors: list[str]) -> list[str]:
    return [e for e in errors if not any(re.search(pattern, e) for pattern in ALLOWED_BROWSER_ERRORS)]


# Package scope: Playwright's sync API keeps an asyncio loop running in this thread while it is
# open, and tests after the browser tests (asyncio.run in test_modal_commands) must not run inside it.
@pytest.fixture(scope="package")
def chromium(app_url, mic_wav):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={mic_wav}"])
        yield b
        b.close()


@pytest.fixture
def new_page(chromium):
    """A factory of pages, each in a fresh browser context (no shared cookies or session).

    Every page records uncaught page errors and console errors; the test fails at teardown on
    any that ALLOWED_BROWSER_ERRORS does not name (a failed WebGL context, for one, would
    otherwise leave a blank canvas quietly).
    """
    contexts, errors = [], []

    def make():
        context = chromium.new_context(viewport={"width": 1400, "height": 1000}, permissions=["microphone"])
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text} ({msg.location.get('url')})")
                if msg.type == "error" else None)
        return page

    yield make
    for c in contexts:
        c.close()
    bad = unexpected_errors(errors)
    assert not bad, f"the browser reported errors: {bad}"


def screenshot(page, name: str) -> Path:
    """Save the whole page (Streamlit scrolls inside stMain, so grow the viewport to it first)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(height) + 20)})
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def find_colour(png: bytes, rgb: tuple[int, int, int], tolerance: int = 60) -> tuple[int, int] | None:
    """(x, y) of the median pixel within `tolerance` of `rgb` in a screenshot, or None."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.abs(img - np.array(rgb)).sum(axis=2) < tolerance)
    if len(xs) == 0:
        return None
    i = np.argsort(xs)[len(xs) // 2]
    return int(xs[i]), int(ys[i])


def non_background_share(png: bytes) -> float:
    """Share of pixels in a screenshot that differ from its most common colour (the background)."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(img, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(img.astype(int) - background).sum(axis=1) > 24).mean())
