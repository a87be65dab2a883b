"""Settings: one frozen dataclass, read from environment variables or a mapping.

The caller decides where values come from: the server and CLIs pass
`os.environ`; the dashboard passes the environment first and then
`st.secrets` (guarded, because reading `st.secrets` without a secrets.toml
raises). This module never imports Streamlit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "AUDIO_CNN_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used (the message names the key)."""


@dataclass(frozen=True)
class Settings:
    endpoint: str | None = None          # URL of a deployed endpoint; None -> local backend
    token: str | None = None             # bearer token for the endpoint / local server
    runs_dir: Path = Path("runs")        # folder of training runs (TensorBoard)
    checkpoint: Path | None = None       # checkpoint for the local backend
    volume: str = "audio-cnn-runs"       # Modal Volume to sync runs from
    cors_origins: tuple[str, ...] = ("*",)
    max_audio_seconds: float = 30.0      # longer clips are refused (413)
    max_body_mb: float = 20.0            # larger request bodies are refused (413)
    batch_max: int = 16                  # server micro-batching: clips per forward; 1 turns it off
    batch_wait_ms: float = 5.0           # how long a batch waits for company after its first clip

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def from_sources(cls, *sources: Mapping[str, Any] | None) -> "Settings":
        """Build settings from mappings of `AUDIO_CNN_*` keys; earlier sources win."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = PREFIX + field.name.upper()
            raw = _first(key, sources)
            if raw is None or (isinstance(raw, str) and raw.strip() == ""):
                continue
            values[field.name] = _convert(key, field.name, raw)
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return cls.from_sources(os.environ if env is None else env)


def _first(key: str, sources: tuple[Mapping[str, Any] | None, ...]) -> Any:
    for source in sources:
        if source is None:
            continue
        try:
            if key in source:
                return source[key]
        except Exception:  # st.secrets raises when no secrets file exists
            continue
    return None


def _convert(key: str, name: str, raw: Any) -> Any:
    text = str(raw).strip()
    if name in ("runs_dir", "checkpoint"):
        return Path(text).expanduser()
    if name == "cors_origins":
        return tuple(o.strip() for o in text.split(",") if o.strip())
    if name in ("max_audio_seconds", "max_body_mb"):
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{key} must be a number, got {text!r}") from None
        if not value > 0:
            raise SettingsError(f"{key} must be positive, got {text!r}")
        return value
    if name == "batch_max":
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(f"{key} must be a whole number, got {text!r}") from None
        if value < 1:
            raise SettingsError(f"{key} must be at least 1 (1 turns batching off), got {text!r}")
        return value
    if name == "batch_wait_ms":
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{key} must be a number, got {text!r}") from None
        if not 0 <= value <= 1000:
            raise SettingsError(f"{key} must be between 0 and 1000 ms, got {text!r}")
        return value
    if name == "endpoint":
        if not text.startswith(("http://", "https://")):
            raise SettingsError(f"{key} must start with http:// or https://, got {text!r}")
        return text.rstrip("/")
    return text
