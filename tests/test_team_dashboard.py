"""The team dashboard: its Modal definition, what its container checks and gets, who the allowlist admits.

Modal's cloud is the only thing emulated (as tests/test_serve_modal.py does):
the app module is imported with the decorators recorded, and a deploy runs
with `sys.argv` as the modal CLI has it. The container's own steps
(core.team_dashboard.prepare, VolumeTicker) run for real on local folders.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from conftest import ROOT
from test_serve_modal import RECORDER, modal_deploy, no_credentials_env, write_run

from core.settings import Settings, describe
from core.team_access import Allowlist, auth_problem
from core.team_dashboard import (
    SECRETS_ENV,
    DashboardConfigError,
    VolumeTicker,
    dashboard_command,
    dashboard_env,
    prepare,
    process_env,
)

# The shared recorder, plus the two decorators that shape a web function.
TEAM_RECORDER = RECORDER.replace(
    'module = __import__(sys.argv[1])',
    'seen["concurrent"], seen["web_server"] = [], []\n'
    'spy(modal, "concurrent", "concurrent", 0)\nspy(modal, "web_server", "web_server", 0)\n'
    'module = __import__(sys.argv[1])\n'
    'seen["dashboard_env"] = module.DASHBOARD_ENV')

AUTH = """
AUDIO_CNN_ALLOWED_DOMAINS = "example.com"
[auth]
redirect_uri = "https://team--audio-cnn-serve-dashboard.modal.run/oauth2callback"
cookie_secret = "a-long-random-string-of-at-least-32-chars"
client_id = "audio-cnn"
client_secret = "s3cret"
server_metadata_url = "https://accounts.example.com/.well-known/openid-configuration"
"""


def team_recorded(tmp_path, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", TEAM_RECORDER, "serve_modal"], cwd=ROOT,
                         env=no_credentials_env(tmp_path, **env), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def dashboard_of(seen: dict) -> dict:
    [function] = [f for f in seen["function"] if set(f.get("volumes", {})) == {"/runs", "/clips"}]
    return function


# -- the Modal definition ------------------------------------------------------------------------


def test_the_dashboard_is_one_container_with_concurrency_both_volumes_and_its_secret(tmp_path):
    seen = team_recorded(tmp_path, AUDIO_CNN_DASHBOARD_SECRET="team-login", AUDIO_CNN_TOKEN_SECRET="tok")
    dashboard = dashboard_of(seen)
    assert dashboard["max_containers"] == 1 and "gpu" not in dashboard  # no GPU: it calls the endpoint
    assert dashboard["memory"] >= 512
    assert {"args": [], "max_inputs": 100} in seen["concurrent"]
    assert seen["web_server"] == [{"args": [8000], "startup_timeout": 120}]
    assert dashboard["secrets"] == ["Secret", "Secret"]
    assert {"args": ["team-login"], "required_keys": [SECRETS_ENV]} in seen["secret"]
    assert {"args": ["tok"], "required_keys": ["AUDIO_CNN_TOKEN"]} in seen["secret"]  # the endpoint's token
    assert {"args": ["audio-cnn-clips"], "create_if_missing": True} in seen["volume"]
    assert {"args": ["audio-cnn-runs"]} in seen["volume"]  # the runs Volume is never created here
    env = dashboard["env"]
    assert (env["AUDIO_CNN_RUNS_DIR"], env["AUDIO_CNN_CLIPS_DIR"], env["AUDIO_CNN_RUNS_LIVE"]) == ("/runs", "/clips", "1")


def test_every_dashboard_setting_reaches_its_container_but_the_token_and_local_paths(tmp_path):
    values = {"AUDIO_CNN_ALLOWED_EMAILS": "a@x.org,b@y.org", "AUDIO_CNN_ALLOWED_DOMAINS": "example.com",
              "AUDIO_CNN_PUBLIC_URL": "https://dash.example.com", "AUDIO_CNN_CLIPS_MB": "64",
              "AUDIO_CNN_MAX_AUDIO_SECONDS": "12", "AUDIO_CNN_ENDPOINT": "https://gpu.example.com",
              "AUDIO_CNN_ICE_SERVERS": "stun:stun.example.com:3478", "AUDIO_CNN_DASHBOARD_SECRET": "s"}
    env = team_recorded(tmp_path, AUDIO_CNN_TOKEN="secret!", AUDIO_CNN_CHECKPOINT="/home/me/x.pt",
                        AUDIO_CNN_CLIPS_DIR="/home/me/clips", **values)["dashboard_env"]
    expected = Settings.from_env(values).env_for("dashboard")
    for key in values.keys() - {"AUDIO_CNN_DASHBOARD_SECRET"}:
        assert env[key] == expected[key], key
    assert "AUDIO_CNN_TOKEN" not in env and "AUDIO_CNN_CHECKPOINT" not in env
    assert env["AUDIO_CNN_CLIPS_DIR"] == "/clips"
    forwarded = {row["key"] for row in describe() if "dashboard" in row["scopes"]} - {
        "AUDIO_CNN_TOKEN", "AUDIO_CNN_RUNS_DIR", "AUDIO_CNN_CHECKPOINT", "AUDIO_CNN_CLIPS_DIR", "AUDIO_CNN_RUNS_LIVE"}
    assert forwarded <= set(dashboard_env(Settings(checkpoint_id="c", run="r", endpoint="https://e.x",
                                                    max_decode_samples=5, public_url="https://p.x")))


def test_an_empty_list_setting_travels_as_unset_not_as_brackets():
    env = dashboard_env(Settings())
    assert Settings.from_env(env).allowed_emails == () and Settings.from_env(env).ice_servers == ()


# -- modal deploy refuses a dashboard without login ------------------------------------------------


def test_deploy_refuses_a_dashboard_without_a_login_secret(tmp_path):
    write_run(tmp_path / "runs", "best", 0.8, seed=1)
    out = modal_deploy(tmp_path, tmp_path / "runs", AUDIO_CNN_DASHBOARD_SECRET="")
    assert out.returncode != 0 and "DeployError" in out.stderr
    assert "without a login" in out.stderr and "AUDIO_CNN_DASHBOARD_PUBLIC=1" in out.stderr


def test_deploy_ships_a_public_dashboard_only_when_asked_and_warns(tmp_path):
    write_run(tmp_path / "runs", "best", 0.8, seed=1)
    out = modal_deploy(tmp_path, tmp_path / "runs", AUDIO_CNN_DASHBOARD_SECRET="", AUDIO_CNN_DASHBOARD_PUBLIC="1")
    assert out.returncode == 0, out.stderr
    assert "anyone with the dashboard's URL" in out.stderr


def test_modal_run_of_classify_needs_no_dashboard_login(tmp_path):
    out = subprocess.run([sys.executable, "-m", "modal", "run", "serve_modal.py::classify", "--help"], cwd=ROOT,
                         env=no_credentials_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# -- the container's start ---------------------------------------------------------------------------


def test_the_container_writes_the_secrets_toml_when_login_is_configured(tmp_path):
    path = prepare({SECRETS_ENV: AUTH}, tmp_path / "s" / "secrets.toml")
    assert path.read_text() == AUTH


@pytest.mark.parametrize("secrets, message", [
    ("", "without login: in its secrets.toml there is no [auth] section"),
    (AUTH.replace('client_secret = "s3cret"\n', ""), "lacks client_id, client_secret, server_metadata_url"),
    (AUTH.replace("/oauth2callback", "/"), "redirect_uri must be the dashboard's URL ending in /oauth2callback"),
    (AUTH.replace('cookie_secret = "a-long-random-string-of-at-least-32-chars"\n', ""), "lacks cookie_secret"),
    (AUTH.replace('AUDIO_CNN_ALLOWED_DOMAINS = "example.com"\n', ""), "empty allowlist"),
    ("[auth\nbroken", "is not valid TOML"),
])
def test_the_container_refuses_to_start_without_working_login(tmp_path, secrets, message):
    with pytest.raises(DashboardConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        prepare({SECRETS_ENV: secrets}, tmp_path / "secrets.toml")
    assert not (tmp_path / "secrets.toml").exists()


def test_a_public_dashboard_starts_without_login(tmp_path):
    assert prepare({"AUDIO_CNN_DASHBOARD_PUBLIC": "1"}, tmp_path / "secrets.toml").read_text() == ""


def test_a_named_provider_section_counts_as_configured():
    named = {"auth": {"redirect_uri": "http://h/oauth2callback", "cookie_secret": "x" * 32,
                      "google": {"client_id": "i", "client_secret": "s", "server_metadata_url": "https://m"}}}
    assert auth_problem(named) is None


def test_the_streamlit_process_gets_the_urls_found_at_start_unless_configured_and_not_the_raw_secrets():
    env = process_env({SECRETS_ENV: AUTH, "AUDIO_CNN_RUNS_LIVE": "1"}, "https://gpu.modal.run", "https://dash.modal.run")
    assert env == {"AUDIO_CNN_RUNS_LIVE": "1", "AUDIO_CNN_ENDPOINT": "https://gpu.modal.run",
                   "AUDIO_CNN_PUBLIC_URL": "https://dash.modal.run"}
    configured = {"AUDIO_CNN_ENDPOINT": "https://mine.example", "AUDIO_CNN_PUBLIC_URL": "https://dash.example"}
    assert process_env(configured, "https://gpu.modal.run", "https://dash.modal.run") == configured


def test_the_container_command_keeps_xsrf_protection_and_reads_the_secrets_file(tmp_path):
    command = dashboard_command(secrets_file=tmp_path / "s.toml")
    assert command[1:5] == ["-m", "streamlit", "run", "Home.py"] and "--server.address=0.0.0.0" in command
    assert f"--secrets.files={tmp_path / 's.toml'}" in command
    assert not any("Xsrf" in part or "CORS" in part for part in command)


def test_the_ticker_reloads_runs_every_tick_and_commits_clips_only_when_they_changed(tmp_path):
    calls = []
    ticker = VolumeTicker(lambda: calls.append("reload"), lambda: calls.append("commit"), tmp_path)
    ticker.tick()
    (tmp_path / "0123456789abcdef.audio").write_bytes(b"x")
    ticker.tick()
    ticker.tick()
    assert calls == ["reload", "reload", "commit", "reload"]


def test_a_failing_reload_is_tried_again_on_the_next_tick(tmp_path):
    calls, done = [], threading.Event()

    def reload():
        calls.append("reload")
        if len(calls) == 1:
            raise RuntimeError("there are open files")
        done.set()

    ticker = VolumeTicker(reload, lambda: None, tmp_path, every_s=0.01)
    ticker.start()
    assert done.wait(30)
    ticker.stopped.set()
    assert calls[:2] == ["reload", "reload"]


# -- the allowlist ------------------------------------------------------------------------------------


ALLOW = Allowlist.from_settings(Settings(allowed_emails=("Alice@Example.org",), allowed_domains=("@team.dev",)))


@pytest.mark.parametrize("claims, allowed", [
    ({"email": "alice@example.org"}, True),
    ({"email": "ALICE@example.org", "email_verified": True}, True),
    ({"email": "bob@team.dev"}, True),
    ({"email": "bob@example.org"}, False),
    ({"email": "bob@evil.team.dev"}, False),  # a domain is the whole domain, not a suffix
    ({"email": "bob@team.dev", "email_verified": False}, False),
    ({"email": "a@b@team.dev"}, False),
    ({"email": "[x](javascript:alert(1))@team.dev"}, False),  # markup in a claim never reaches the screen
    ({"email": "x" * 300 + "@team.dev"}, False),
    ({"sub": "no-email"}, False),
])
def test_the_allowlist_admits_listed_addresses_and_domains_only(claims, allowed):
    assert ALLOW.decide(claims).allowed is allowed


def test_an_empty_allowlist_admits_nobody_and_says_how_to_fix_it():
    decision = Allowlist.from_settings(Settings()).decide({"email": "alice@example.org"})
    assert not decision.allowed and "AUDIO_CNN_ALLOWED_EMAILS" in decision.message

