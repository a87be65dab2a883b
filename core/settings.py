"""Settings: one frozen dataclass, read from environment variables or a mapping.

Every `AUDIO_CNN_*` value anywhere in the project is parsed here and only
here: each field below is one setting, declared with its default, its parser
(which says what form it accepts) and the places it matters (`scopes`). A bad
value raises SettingsError naming the variable and the accepted form, the
same message whichever entry point reads it.

The caller decides where values come from: the server and CLIs pass
`os.environ`; the dashboard passes the environment first and then
`st.secrets` (guarded, because reading `st.secrets` without a secrets.toml
raises). This module never imports Streamlit.

Scopes say where a setting matters: "serve" shapes the inference server, and
a Modal deploy forwards exactly these into its containers
(`Settings.env_for("serve")`; secrets such as the token travel in Modal
Secrets, never as plain container env); "dashboard" the Streamlit app;
"deploy" what `modal deploy` builds (GPU type, scaling, auth).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "AUDIO_CNN_"


class SettingsError(ValueError):
    """A setting has a value that cannot be used (the message names the key and the accepted form)."""


# -- parsers: text -> value, or ValueError whose message is the accepted form ----------------


def _text(text: str) -> str:
    return text


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("a URL starting with http:// or https://")
    return text.rstrip("/")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ice_servers(text: str) -> tuple[dict, ...]:
    """WebRTC ICE servers: a JSON list of {"urls", "username"?, "credential"?}, or comma-separated URLs."""
    form = ('a JSON list like [{"urls": ["turn:turn.example.com:3478"], "username": "u", "credential": "p"}] '
            "or comma-separated stun:/turn: URLs")
    if not text.lstrip().startswith("["):
        urls = _csv(text)
        if not urls or not all(u.startswith(("stun:", "turn:", "turns:")) for u in urls):
            raise ValueError(form)
        return ({"urls": list(urls)},)
    try:
        servers = json.loads(text)
    except ValueError:
        raise ValueError(form) from None
    ok = isinstance(servers, list) and all(
        isinstance(s, dict) and s.get("urls") and set(s) <= {"urls", "username", "credential"} for s in servers)
    if not ok:
        raise ValueError(form)
    return tuple(servers)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("1 or 0 (also true/false, yes/no, on/off)")


def _number(kind: type, lo: float, hi: float) -> Callable[[str], float | int]:
    noun = "a whole number" if kind is int else "a number"
    if hi == float("inf"):
        form = f"{noun} greater than 0" if lo == 1e-9 else f"{noun} of at least {lo:g}"
    else:
        form = f"{noun} from {lo:g} to {hi:g}"

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(form) from None
        if not lo <= value <= hi:
            raise ValueError(form)
        return value

    parse.form = form  # type: ignore[attr-defined]
    return parse


POSITIVE = _number(float, 1e-9, float("inf"))


def setting(default: Any, parse: Callable[[str], Any], *scopes: str, help: str) -> Any:
    """A Settings field: its default, how its text is parsed, where it matters, what it means."""
    return field(default=default, metadata={"parse": parse, "scopes": scopes, "help": help})


@dataclass(frozen=True)
class Settings:
    # where the dashboard gets analyses and runs from
    endpoint: str | None = setting(None, _url, "dashboard", help="URL of a deployed endpoint; unset: in-process model")
    token: str | None = setting(None, _text, "dashboard",
                                help="bearer token, or a Modal proxy token wk-...:ws-...")
    runs_dir: Path = setting(Path("runs"), _path, "dashboard", help="folder of training runs (TensorBoard)")
    checkpoint: Path | None = setting(None, _path, "dashboard",
                                      help="checkpoint file to load (else the run AUDIO_CNN_RUN names, else the best run)")
    checkpoint_id: str | None = setting(None, _text, "dashboard", "serve",
                                        help="the id the loaded checkpoint must have (a deploy pins it); else no start")
    run: str | None = setting(None, _text, "dashboard", "deploy", "serve",
                              help="run folder whose best.pt is loaded (a CV folder: its best fold)")
    volume: str = setting("audio-cnn-runs", _text, "dashboard", "deploy", help="Modal Volume of the runs")
    # the server's limits and behaviour
    cors_origins: tuple[str, ...] = setting(("*",), _csv, "serve", help="origins allowed to call the server from a browser")
    max_audio_seconds: float = setting(30.0, POSITIVE, "serve", "dashboard", help="longer clips are refused (413)")
    max_body_mb: float = setting(20.0, POSITIVE, "serve", "dashboard", help="larger request bodies are refused (413)")
    max_decode_samples: int | None = setting(
        None, _number(int, 1, float("inf")), "serve", "dashboard",
        help="frames x channels one decode may produce, more is refused (413); "
             "unset: max_audio_seconds of 48 kHz stereo (2,880,000 for 30 s)")
    max_decodes: int = setting(4, _number(int, 1, 256), "serve", "dashboard",
                               help="audio decodes running at once in one process; more wait for a slot")
    batch_max: int = setting(16, _number(int, 1, float("inf")), "serve", "deploy",
                             help="server micro-batching: clips per forward; 1 turns it off")
    batch_wait_ms: float = setting(5.0, _number(float, 0, 1000), "serve",
                                   help="how long a batch waits for company after its first clip")
    forward_timeout_s: float = setting(120.0, _number(float, 0.001, 3600), "serve",
                                       help="how long a request waits for its forward pass before a 503 "
                                            "(model_busy) instead of hanging")
    # live streams (/stream, the Live page): analysis windows and what a stream may cost
    stream_window_s: float = setting(5.0, _number(float, 0.5, 30), "serve", "dashboard",
                                     help="seconds of audio per live analysis window")
    stream_hop_s: float = setting(1.0, _number(float, 0.1, 30), "serve", "dashboard",
                                  help="seconds between live windows (a stream's start message may ask for another)")
    stream_max_speed: float = setting(2.0, _number(float, 1, 1000), "serve", "dashboard",
                                      help="how much faster than real time a stream may send, beyond one window")
    stream_idle_s: float = setting(15.0, _number(float, 1, 3600), "serve", "dashboard",
                                   help="a stream that sends nothing for this long is closed")
    stream_max_streams: int = setting(32, _number(int, 1, 10_000), "serve",
                                      help="live streams one server process serves at once")
    ice_servers: tuple[dict, ...] = setting((), _ice_servers, "dashboard",
                                            help="STUN/TURN servers for the Live page's WebRTC (JSON list)")
    # the dashboard's clip store behind ?clip= links
    clips_dir: Path | None = setting(None, _path, "dashboard", help="clip store; unset: ~/.cache/audio-cnn/clips")
    clips_mb: float = setting(256.0, POSITIVE, "dashboard", help="clip store size cap, oldest evicted first")
    # the team dashboard (`modal deploy serve_modal.py` deploys it too): who may log in, where it lives
    allowed_emails: tuple[str, ...] = setting((), _csv, "dashboard", "deploy",
                                              help="with [auth] login on: addresses allowed in (comma-separated)")
    allowed_domains: tuple[str, ...] = setting((), _csv, "dashboard", "deploy",
                                               help="with [auth] login on: email domains allowed in (example.com)")
    dashboard_public: bool = setting(False, _bool, "dashboard", "deploy",
                                     help="1: deploy the dashboard without login, on purpose")
    dashboard_secret: str | None = setting(None, _text, "deploy",
                                           help="Modal Secret holding the dashboard's secrets.toml ([auth] and keys)")
    public_url: str | None = setting(None, _url, "dashboard", "deploy",
                                     help="the dashboard's public URL for Copy link (deployed: its Modal URL)")
    runs_live: bool = setting(False, _bool, "dashboard",
                              help="the runs folder is the mounted Volume itself: read live, no Sync button")
    # what `modal deploy serve_modal.py` builds (read where the deploy runs)
    gpu: str = setting("A10G", _text, "deploy", help="Modal GPU type (T4, L4, A10G, A100, H100, ...); none: CPU only")
    proxy_auth: bool = setting(True, _bool, "deploy", help="Modal proxy auth in front of the endpoint")
    token_secret: str | None = setting(None, _text, "deploy", help="Modal Secret holding AUDIO_CNN_TOKEN")
    scaledown_s: int = setting(300, _number(int, 2, 3600), "deploy", help="idle seconds before a container stops")
    min_containers: int = setting(0, _number(int, 0, 100), "deploy", help="containers kept warm (billed while idle)")
    max_containers: int = setting(4, _number(int, 1, 100), "deploy", help="most containers (GPUs) a burst may start")
    allow_untrained: bool = setting(False, _bool, "deploy",
                                    help="deploy with no trained run on the Volume: the untrained model, on purpose")

    @property
    def gpu_type(self) -> str | None:
        """The GPU Modal should attach, or None for a CPU-only container (AUDIO_CNN_GPU=none)."""
        return None if self.gpu.strip().lower() in ("none", "cpu", "") else self.gpu

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def decode_budget(self) -> int:
        """Samples (frames x channels) one decode may produce: max_decode_samples, else its default."""
        if self.max_decode_samples is not None:
            return self.max_decode_samples
        from core.audio import default_max_samples  # numpy + soundfile: only when asked

        return default_max_samples(self.max_audio_seconds)

    @property
    def limits(self) -> dict[str, float]:
        """What a backend refuses beyond, as /health and LocalBackend.health report it."""
        return {"max_body_bytes": self.max_body_bytes, "max_audio_seconds": self.max_audio_seconds,
                "max_decode_samples": self.decode_budget}

    @classmethod
    def from_sources(cls, *sources: Mapping[str, Any] | None) -> Settings:
        """Build settings from mappings of `AUDIO_CNN_*` keys; earlier sources win.

        Empty values count as unset. SettingsError names the key of a bad value.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = env_key(f.name)
            raw = _first(key, sources)
            if raw is not None:
                values[f.name] = parse_value(f.name, str(raw).strip())
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return cls.from_sources(os.environ if env is None else env)

    def env_for(self, scope: str) -> dict[str, str]:
        """`AUDIO_CNN_*` text of every set field in `scope`: what a container needs to rebuild these settings."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if scope in f.metadata["scopes"] and value is not None:
                out[env_key(f.name)] = _to_text(value)
        return out


def env_key(name: str) -> str:
    """Field name -> its environment variable ("max_body_mb" -> "AUDIO_CNN_MAX_BODY_MB")."""
    return PREFIX + name.upper()


def parse_value(name: str, text: str) -> Any:
    """Parse one setting's text; SettingsError "AUDIO_CNN_X must be <form>, got '...'" if it does not fit."""
    parse = {f.name: f.metadata["parse"] for f in fields(Settings)}[name]
    try:
        return parse(text)
    except ValueError as err:
        raise SettingsError(f"{env_key(name)} must be {err}, got {text!r}") from None


def describe() -> list[dict[str, Any]]:
    """Every setting: key, default, accepted form (when restricted), scopes, help (for docs and tests)."""
    rows = []
    for f in fields(Settings):
        parse = f.metadata["parse"]
        rows.append({"key": env_key(f.name), "default": f.default, "scopes": f.metadata["scopes"],
                     "form": getattr(parse, "form", None), "help": f.metadata["help"]})
    return rows


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple) and value and all(isinstance(v, dict) for v in value):  # () is "", not "[]"
        return json.dumps(list(value))
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


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
