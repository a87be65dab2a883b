"""The dashboard as a Modal container runs it: its env, its start checks, its command line (no Modal here).

    dashboard_env(settings)        the container's AUDIO_CNN_* env: the Volumes' mount points, live runs,
                                   the allowlist, limits (never the token: it travels in a Modal Secret)
    prepare(env, secrets_file)     at container start: the Secret's secrets.toml written where Streamlit
                                   reads it, after checking that login is configured (else DashboardConfigError)
    dashboard_command(port, ...)   `streamlit run Home.py ...`, the same line locally and in the container
    VolumeTicker                   a thread that reloads the runs Volume and commits the clip store

serve_modal.py is the Modal shell over this: `@modal.web_server` starts the
command in a subprocess, in one container (`max_containers=1`): a Streamlit
session's websocket, state and uploads live in that one process.

The dashboard's secrets.toml (Streamlit's format: `[auth]` for the OpenID
Connect login, top-level keys such as the endpoint's AUDIO_CNN_TOKEN) comes
from a Modal Secret holding its text under SECRETS_ENV; Streamlit copies
top-level scalar keys into the process environment.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

from core.atomic_write import atomic_write
from core.settings import Settings, env_key
from core.team_access import auth_problem

APP_DIR = "/root/app"  # Home.py, pages/, core/, .streamlit/ in the dashboard image
RUNS_MOUNT, CLIPS_MOUNT = "/runs", "/clips"
PORT = 8000
SECRETS_ENV = "AUDIO_CNN_DASHBOARD_SECRETS_TOML"  # the key of the Modal Secret that holds secrets.toml's text
RELOAD_S = 10.0  # how stale the runs may look: a run committing every epoch shows up within this
# Dashboard settings that name this machine's files or carry a secret: never forwarded to the container.
NOT_FORWARDED = {"token", "runs_dir", "checkpoint", "clips_dir", "runs_live"}
log = logging.getLogger("audio_cnn.team_dashboard")


class DashboardConfigError(RuntimeError):
    """The deployed dashboard would start without the access control it needs (the message says what to set)."""


def dashboard_env(settings: Settings) -> dict[str, str]:
    """The dashboard container's env: every forwardable dashboard setting, the mounts, live runs."""
    from dataclasses import fields

    skip = {env_key(f.name) for f in fields(Settings) if f.name in NOT_FORWARDED}
    forwarded = {k: v for k, v in settings.env_for("dashboard").items() if k not in skip}
    return {**forwarded, "AUDIO_CNN_RUNS_DIR": RUNS_MOUNT, "AUDIO_CNN_CLIPS_DIR": CLIPS_MOUNT,
            "AUDIO_CNN_RUNS_LIVE": "1"}


def prepare(env: Mapping[str, str], secrets_file: Path) -> Path:
    """Container start: check the login configuration and write the Secret's secrets.toml to `secrets_file`.

    A dashboard on the public internet starts only with a usable [auth] and a
    non-empty allowlist, or with AUDIO_CNN_DASHBOARD_PUBLIC=1 (DashboardConfigError otherwise).
    """
    text = env.get(SECRETS_ENV, "")
    try:
        secrets = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DashboardConfigError(f"The dashboard's Secret key {SECRETS_ENV} is not valid TOML ({err}).") from None
    settings = Settings.from_sources(env, secrets)
    if not settings.dashboard_public:
        problem = auth_problem(secrets)
        if problem:
            raise DashboardConfigError(
                f"The deployed dashboard will not start without login: in its secrets.toml {problem}. Put "
                f"Streamlit's [auth] section in the Modal Secret (key {SECRETS_ENV}), or redeploy with "
                "AUDIO_CNN_DASHBOARD_PUBLIC=1 to serve it to anyone with the URL, on purpose.")
        if not settings.allowed_emails and not settings.allowed_domains:
            raise DashboardConfigError(
                "The deployed dashboard has login but an empty allowlist, so nobody could use it: set "
                "AUDIO_CNN_ALLOWED_EMAILS and/or AUDIO_CNN_ALLOWED_DOMAINS where you deploy, or in its secrets.toml.")
    atomic_write(secrets_file, text.encode())
    return secrets_file


def dashboard_command(port: int = PORT, host: str = "0.0.0.0", secrets_file: Path | None = None) -> list[str]:
    """The Streamlit command line (run in APP_DIR in the container, the repository root locally).

    XSRF protection stays on (Streamlit's default): the browser, Modal's proxy and
    Streamlit see one origin, so its cookie and header match.
    """
    command = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless=true",
               f"--server.address={host}", f"--server.port={port}", "--browser.gatherUsageStats=false",
               "--server.fileWatcherType=none"]
    if secrets_file is not None:
        command.append(f"--secrets.files={secrets_file}")
    return command


def process_env(env: Mapping[str, str], endpoint: str | None, public_url: str | None) -> dict[str, str]:
    """The Streamlit process's env: the container's, with the endpoint and public URL found at start."""
    out = dict(env)
    out.pop(SECRETS_ENV, None)  # the file holds it; the pages need not see the raw text
    if endpoint and not out.get("AUDIO_CNN_ENDPOINT"):
        out["AUDIO_CNN_ENDPOINT"] = endpoint
    if public_url and not out.get("AUDIO_CNN_PUBLIC_URL"):
        out["AUDIO_CNN_PUBLIC_URL"] = public_url
    return out


def clips_signature(clips_dir: Path) -> tuple:
    """What changes when the clip store does (names and times): a commit is needed only then."""
    try:
        return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(clips_dir)))
    except OSError:
        return ()


class VolumeTicker(threading.Thread):
    """Every `every_s`: reload the runs Volume (new epochs appear), commit the clip store when it changed.

    `reload_runs` / `commit_clips` are the Volumes' methods in a container. A
    failure (a reload while Streamlit holds an event file open fails) is logged
    and tried again on the next tick.
    """

    def __init__(self, reload_runs: Callable[[], None], commit_clips: Callable[[], None], clips_dir: Path,
                 every_s: float = RELOAD_S):
        super().__init__(daemon=True, name="volume-ticker")
        self.reload_runs, self.commit_clips, self.clips_dir, self.every_s = reload_runs, commit_clips, clips_dir, every_s
        self.stopped = threading.Event()
        self._committed: tuple = clips_signature(clips_dir)

    def tick(self) -> None:
        for what, step in (("reload the runs Volume", self.reload_runs), ("commit the clip store", self._commit)):
            try:
                step()
            except Exception as err:  # the next tick tries again
                log.warning("Could not %s: %s", what, err)

    def _commit(self) -> None:
        now = clips_signature(self.clips_dir)
        if now != self._committed:
            self.commit_clips()
            self._committed = now

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.tick()
