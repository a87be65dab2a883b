"""Login to the team dashboard in real Chromium, against a real OpenID Connect provider on loopback.

Streamlit's own st.login does the OIDC flow with oidc-provider-mock; nothing
of ours is mocked. Alice is on the allowlist, Mallory is not.
"""

from __future__ import annotations

import pytest
from audio_factory import wav_bytes
from conftest import free_port, stop_process

from core.clip_store import ClipStore

from .conftest import TIMEOUT_MS, _require_browser, screenshot
from .team_servers import ALICE, MALLORY, auth_toml, start_provider, start_team_dashboard

pytestmark = pytest.mark.e2e
NEEDS_LOGIN = "This team dashboard needs a login."


def _expect():
    from playwright.sync_api import expect

    return expect


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """(dashboard URL, a stored clip's hash): login against the provider, alice@example.com allowed."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("team-login")
    clip = ClipStore(tmp / "clips").put(wav_bytes(2.0, freq=660.0))
    issuer, provider = start_provider(ALICE, MALLORY)
    port = free_port()
    try:
        url, app = start_team_dashboard(tmp, port, secrets=auth_toml(port, issuer),
                                        AUDIO_CNN_ALLOWED_EMAILS="alice@example.com")
    except BaseException:
        stop_process(provider)
        raise
    yield url, clip
    stop_process(app)
    stop_process(provider)


@pytest.fixture(scope="module")
def browser(team, chromium):
    """The suite's one browser (a second Playwright in this thread would find the first's loop running)."""
    return chromium


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def log_in_as(page, who: str) -> None:
    """From the dashboard's login screen through the provider's login page (its predefined-user button)."""
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name=who, exact=True).click()


def assert_no_data(page) -> None:
    """Nothing of the dashboard but the login: no sidebar content, no page, no chart, no clip."""
    expect = _expect()
    expect(page.get_by_text("Backend", exact=True)).to_have_count(0)
    expect(page.locator("[data-testid=stVegaLiteChart]")).to_have_count(0)
    for title in ("Spectrogram", "Feature Maps", "Predict", "Training Runs"):
        expect(page.get_by_role("heading", name=title)).to_have_count(0)


def test_a_logged_out_deep_link_logs_in_and_returns_to_the_same_page_and_clip(page, team):
    expect = _expect()
    url, clip = team
    page.goto(f"{url}/spectrogram?clip={clip}")
    expect(page.get_by_text(NEEDS_LOGIN)).to_be_visible()
    assert_no_data(page)
    log_in_as(page, "alice")
    expect(page.get_by_role("heading", name="Spectrogram")).to_be_visible()
    expect(page).to_have_url(f"{url}/spectrogram?clip={clip}")
    expect(page.locator("[data-testid=stVegaLiteChart] svg").first).to_be_visible()  # the clip's analysis
    expect(page.get_by_text("Logged in as alice@example.com")).to_be_visible()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    screenshot(page, "team-logged-in")


def test_an_address_outside_the_allowlist_is_refused_and_sees_no_data(page, team):
    expect = _expect()
    url, clip = team
    page.goto(f"{url}/feature_maps?clip={clip}")
    log_in_as(page, "mallory")
    expect(page.get_by_text("mallory@elsewhere.org is not allowed to use this dashboard")).to_be_visible()
    assert_no_data(page)
    screenshot(page, "team-not-allowed")


def test_logout_ends_the_session(page, team):
    expect = _expect()
    url, _ = team
    page.goto(url)
    log_in_as(page, "alice")
    expect(page.get_by_text("Logged in as alice@example.com")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    end_session = page.get_by_role("button", name="End session")  # the provider's RP-initiated logout
    end_session.click()
    expect(page.get_by_text(NEEDS_LOGIN)).to_be_visible()
    assert_no_data(page)
    page.goto(f"{url}/training_runs")  # and the cookie is gone: a deep link needs the login again
    expect(page.get_by_text(NEEDS_LOGIN)).to_be_visible()
