"""Servers for the team-dashboard browser tests: a real OpenID Connect provider, the dashboard as deployed.

The provider is `oidc-provider-mock` (a real OIDC provider: discovery, the
authorization-code flow, signed ID tokens, end-session) on a loopback port.
The dashboard runs `core.team_dashboard.dashboard_command`, the line the Modal
container runs, on 127.0.0.1 with the Volumes' mount points as local folders.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from conftest import free_port, start_process

from core.settings import Settings
from core.team_dashboard import dashboard_command, dashboard_env

ALICE = {"sub": "alice", "email": "alice@example.com", "email_verified": True}
MALLORY = {"sub": "mallory", "email": "mallory@elsewhere.org", "email_verified": True}


def start_provider(*users: dict):
    """oidc-provider-mock on a free port with these predefined users; returns (issuer URL, process)."""
    port = free_port()
    command = [shutil.which("oidc-provider-mock") or sys.exit("oidc-provider-mock is not installed"),
               "--port", str(port)]
    for user in users:
        command += ["--user-claims", json.dumps(user)]
    issuer = f"http://127.0.0.1:{port}"
    return issuer, start_process(command, f"{issuer}/.well-known/openid-configuration")


def auth_toml(app_port: int, issuer: str) -> str:
    """[auth] in Streamlit's format for a dashboard on 127.0.0.1:app_port against `issuer`."""
    return (f'[auth]\nredirect_uri = "http://127.0.0.1:{app_port}/oauth2callback"\n'
            'cookie_secret = "a-test-cookie-secret-that-is-long-enough-0123456789"\n'
            'client_id = "audio-cnn-dashboard"\nclient_secret = "not-checked-by-the-mock"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n')


def start_team_dashboard(tmp: Path, port: int | None = None, secrets: str = "", **env: str):
    """The dashboard as its container runs it: /runs and /clips are tmp/runs and tmp/clips.

    Returns (base URL, process). `secrets` is the secrets.toml text the Modal Secret would hold.
    """
    port = port or free_port()
    container = dashboard_env(Settings.from_env(env))
    container.update(AUDIO_CNN_RUNS_DIR=str(tmp / "runs"), AUDIO_CNN_CLIPS_DIR=str(tmp / "clips"))
    secrets_file = tmp / "secrets" / "secrets.toml"
    secrets_file.parent.mkdir(parents=True, exist_ok=True)
    secrets_file.write_text(secrets)
    process_env = {"AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_ENDPOINT": "", "MODAL_TOKEN_ID": "",
                   "MODAL_TOKEN_SECRET": "", "MODAL_CONFIG_PATH": str(tmp / "none.toml"), **container, **env}
    command = dashboard_command(port, host="127.0.0.1", secrets_file=secrets_file)
    proc = start_process(command, f"http://127.0.0.1:{port}/_stcore/health", process_env)
    return f"http://127.0.0.1:{port}", proc
