"""core.settings: every key from the environment or a secrets mapping, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


def test_defaults_without_any_source():
    s = Settings.from_sources({})
    assert s.endpoint is None and s.token is None and s.runs_dir == Path("runs")
    assert s.cors_origins == ("*",) and s.max_body_bytes == 20 * 1024 * 1024
    assert s.clips_dir is None and s.clips_mb == 256.0


def test_every_key_is_read_and_converted():
    s = Settings.from_sources({
        "AUDIO_CNN_ENDPOINT": "https://me--audio-cnn.modal.run/", "AUDIO_CNN_TOKEN": "t",
        "AUDIO_CNN_RUNS_DIR": "/tmp/runs", "AUDIO_CNN_CHECKPOINT": "/tmp/x.pt",
        "AUDIO_CNN_VOLUME": "vol", "AUDIO_CNN_CORS_ORIGINS": "http://a, http://b",
        "AUDIO_CNN_MAX_AUDIO_SECONDS": "12.5", "AUDIO_CNN_MAX_BODY_MB": "5",
        "AUDIO_CNN_BATCH_MAX": "8", "AUDIO_CNN_BATCH_WAIT_MS": "0",
        "AUDIO_CNN_CLIPS_DIR": "/tmp/clips", "AUDIO_CNN_CLIPS_MB": "64",
    })
    assert s.endpoint == "https://me--audio-cnn.modal.run"  # trailing slash dropped
    assert s.runs_dir == Path("/tmp/runs") and s.checkpoint == Path("/tmp/x.pt")
    assert s.cors_origins == ("http://a", "http://b")
    assert (s.max_audio_seconds, s.max_body_bytes, s.batch_max, s.batch_wait_ms) == (12.5, 5 * 1024 * 1024, 8, 0.0)
    assert s.clips_dir == Path("/tmp/clips") and s.clips_mb == 64.0


def test_the_environment_wins_over_secrets_and_empty_means_unset():
    env = {"AUDIO_CNN_TOKEN": "from-env", "AUDIO_CNN_VOLUME": ""}
    secrets = {"AUDIO_CNN_TOKEN": "from-secrets", "AUDIO_CNN_VOLUME": "from-secrets"}
    s = Settings.from_sources(env, secrets)
    assert s.token == "from-env" and s.volume == "from-secrets"


def test_a_source_that_raises_is_skipped():
    class NoSecretsFile(dict):
        def __contains__(self, key):
            raise FileNotFoundError("no secrets.toml")  # what st.secrets does

    assert Settings.from_sources({}, NoSecretsFile()).token is None


@pytest.mark.parametrize("key,value,message", [
    ("AUDIO_CNN_ENDPOINT", "me.modal.run", "must be a URL starting with http:// or https://"),
    ("AUDIO_CNN_MAX_BODY_MB", "lots", "must be a number greater than 0"),
    ("AUDIO_CNN_MAX_AUDIO_SECONDS", "-3", "must be a number greater than 0"),
    ("AUDIO_CNN_BATCH_MAX", "2.5", "must be a whole number of at least 1"),
    ("AUDIO_CNN_BATCH_MAX", "0", "must be a whole number of at least 1"),
    ("AUDIO_CNN_BATCH_WAIT_MS", "5000", "must be a number from 0 to 1000"),
    ("AUDIO_CNN_CLIPS_MB", "0", "must be a number greater than 0"),
    ("AUDIO_CNN_PROXY_AUTH", "maybe", "must be 1 or 0"),
    ("AUDIO_CNN_SCALEDOWN_S", "1", "must be a whole number from 2 to 3600"),
])
def test_bad_values_name_their_key_and_the_accepted_form(key, value, message):
    with pytest.raises(SettingsError, match=f"^{key} {message}.*, got '{value}'$"):
        Settings.from_sources({key: value})


def test_booleans_accept_the_usual_spellings():
    for text, want in (("1", True), ("off", False), ("Yes", True), ("FALSE", False)):
        assert Settings.from_sources({"AUDIO_CNN_PROXY_AUTH": text}).proxy_auth is want


def test_env_for_a_scope_round_trips_through_from_env():
    s = Settings.from_sources({"AUDIO_CNN_CORS_ORIGINS": "http://a,http://b", "AUDIO_CNN_BATCH_MAX": "4",
                               "AUDIO_CNN_MAX_AUDIO_SECONDS": "12.5", "AUDIO_CNN_RUN": "best-run"})
    env = s.env_for("serve")
    assert env["AUDIO_CNN_CORS_ORIGINS"] == "http://a,http://b" and env["AUDIO_CNN_RUN"] == "best-run"
    assert "AUDIO_CNN_CLIPS_MB" not in env and "AUDIO_CNN_GPU" not in env  # not server settings
    rebuilt = Settings.from_env(env)
    for name in ("cors_origins", "batch_max", "max_audio_seconds", "max_body_mb", "run", "batch_wait_ms"):
        assert getattr(rebuilt, name) == getattr(s, name), name


def test_every_setting_is_documented_with_a_scope():
    from core.settings import describe

    rows = describe()
    assert len({r["key"] for r in rows}) == len(rows)
    assert all(r["help"] and r["scopes"] for r in rows)


def test_ice_servers_take_json_or_stun_and_turn_urls():
    turn = '[{"urls": ["turn:turn.example.com:3478"], "username": "u", "credential": "p"}]'
    assert Settings.from_sources({"AUDIO_CNN_ICE_SERVERS": turn}).ice_servers == (
        {"urls": ["turn:turn.example.com:3478"], "username": "u", "credential": "p"},)
    assert Settings.from_sources({"AUDIO_CNN_ICE_SERVERS": "stun:a:3478, stun:b:3478"}).ice_servers == (
        {"urls": ["stun:a:3478", "stun:b:3478"]},)
    assert Settings().ice_servers == ()   # localhost needs none
    for bad in ("http://a", '[{"url": "stun:a"}]', "[not json"):
        with pytest.raises(SettingsError, match="^AUDIO_CNN_ICE_SERVERS must be a JSON list like"):
            Settings.from_sources({"AUDIO_CNN_ICE_SERVERS": bad})


def test_stream_settings_reach_a_modal_container():
    env = Settings.from_sources({"AUDIO_CNN_STREAM_HOP_S": "0.5", "AUDIO_CNN_STREAM_MAX_SPEED": "3"}).env_for("serve")
    rebuilt = Settings.from_env(env)
    assert (rebuilt.stream_hop_s, rebuilt.stream_max_speed, rebuilt.stream_window_s) == (0.5, 3.0, 5.0)
