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
    clips_dir: Path | None = None        # dashboard clip store; None -> ~/.cache/audio-cnn/clips
    clips_mb: float = 256.0              # clip store size cap, oldest evicted first

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def limits(self) -> dict[str, float]:
        """What a backend refuses beyond, as /health and LocalBackend.health report it."""
        return {"max_body_bytes": self.max_body_bytes, "max_audio_seconds": self.max_audio_seconds}

    @classmethod
    def from_sources(cls, *sources: Mapping[str, Any] | None) -> "Settings":
        """Build settings from mappings of `AUDIO_CNN_*` keys; earlier sources win.

        Empty values count as unset. SettingsError names the key of a bad value.
        """
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = PREFIX + field.name.upper()
            raw = _first(key, sources)
            if raw is None:
                continue
            values[field.name] = _convert(key, field.name, str(raw).strip())
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return cls.from_sources(os.environ if env is None else env)


def _first(key: str, sources: tuple[Mapping[str, Any] | None, ...]) -> Any:
    for source in sources:
        if source is None:
            continue
        try:
            value = source[key] if key in source else None
        except Exception:  # st.secrets raises when no secrets file exists
            continue
        if value is not None and str(value).strip() != "":  # empty means unset: look further
            return value
    return None


# name -> (type, lowest allowed, highest allowed, what the bound means)
_NUMBERS: dict[str, tuple[type, float, float, str]] = {
    "max_audio_seconds": (float, 1e-9, float("inf"), "positive"),
    "max_body_mb": (float, 1e-9, float("inf"), "positive"),
    "clips_mb": (float, 1e-9, float("inf"), "positive"),
    "batch_max": (int, 1, float("inf"), "at least 1 (1 turns batching off)"),
    "batch_wait_ms": (float, 0, 1000, "between 0 and 1000 ms"),
}


def _convert(key: str, name: str, text: str) -> Any:
    if name in ("runs_dir", "checkpoint", "clips_dir"):
        return Path(text).expanduser()
    if name == "cors_origins":
        return tuple(o.strip() for o in text.split(",") if o.strip())
    if name in _NUMBERS:
        kind, lo, hi, meaning = _NUMBERS[name]
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise SettingsError(f"{key} must be {noun}, got {text!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{key} must be {meaning}, got {text!r}")
        return value
    if name == "endpoint":
        if not text.startswith(("http://", "https://")):
            raise SettingsError(f"{key} must start with http:// or https://, got {text!r}")
        return text.rstrip("/")
    return text
