"""Hostile requests against a real `python -m core.server` on 127.0.0.1: a 4xx, bounded memory, still serving.

Memory is the server process's own peak RSS: before each request the test
resets the kernel's high-water mark (`echo 5 > /proc/PID/clear_refs`), and
after it reads VmHWM, so the figure is the request's peak growth over the
resident size it started from, including C allocations (libsndfile, soxr)
that tracemalloc cannot see. The bound (100 MB) is generous on purpose: the
FLAC bomb cost +746 MB before; a refused header costs a few MB.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
import requests
from audio_factory import encode, tone, wav_bytes
from conftest import free_port, start_process, stop_process
from hostile_audio import flac_bomb, flac_silence, without_length

MB = 1024 * 1024
TOKEN = "s3cret"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rss_kb(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def peak_growth_bytes(pid: int, request) -> tuple[requests.Response, int]:
    """(response, the server's peak RSS growth while it answered `request()`)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = rss_kb(pid)["VmRSS"]
    response = request()
    return response, (rss_kb(pid)["VmHWM"] - before) * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, pid, session with the token) of a server on an untrained model, warmed up once."""
    port = free_port()
    env = {"AUDIO_CNN_RUNS_DIR": str(tmp_path_factory.mktemp("runs")), "AUDIO_CNN_CHECKPOINT": ""}
    proc = start_process([sys.executable, "-m", "core.server", "--port", str(port), "--token", TOKEN],
                         f"http://127.0.0.1:{port}/health", env)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"http://127.0.0.1:{port}"
    warm = session.post(f"{url}/evaluate", json={"audio_data": b64(wav_bytes(5.0))}, timeout=300)
    assert warm.status_code == 200, warm.text  # first-use allocations are not charged to the tests
    yield url, proc.pid, session
    stop_process(proc)


def post(server, body, path="/evaluate", **kwargs):
    url, _, session = server
    if isinstance(body, bytes):
        return session.post(f"{url}{path}", data=body, headers={"Content-Type": "application/json"},
                            timeout=300, **kwargs)
    return session.post(f"{url}{path}", json=body, timeout=300, **kwargs)


def assert_still_serves(server):
    r = post(server, {"audio_data": b64(wav_bytes(1.0)), "options": {"feature_maps": "none"}})
    assert r.status_code == 200, r.text


# -- audio that would cost far more than it weighs --------------------------------------------


def test_the_flac_bomb_is_a_400_and_costs_the_server_under_100_mb(server):
    data = flac_bomb()
    assert len(data) < 200_000  # 170 KB on the wire, 157 M samples declared
    r, growth = peak_growth_bytes(server[1], lambda: post(server, {"audio_data": b64(data)}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_sample_rate", r.text
    assert growth < 100 * MB, f"peak RSS growth {growth / MB:.0f} MB"
    assert_still_serves(server)


def test_many_channels_at_192k_are_a_413_from_the_header(server):
    data = flac_silence(10.0, 192_000, 8)  # 15.4 M samples: 5x the budget
    r, growth = peak_growth_bytes(server[1], lambda: post(server, {"audio_data": b64(data)}))
    assert r.status_code == 413 and r.json()["error"]["code"] == "audio_too_large", r.text
    assert "2,880,000" in r.json()["error"]["message"]
    assert growth < 100 * MB, f"peak RSS growth {growth / MB:.0f} MB"
    assert_still_serves(server)


def test_a_flac_of_unknown_length_is_analysed_at_its_real_length(server):
    # Before: 413 "The clip is 209146758205323.7 s long".
    data = without_length(encode(tone(3.0), 44100, "FLAC", "PCM_16"))
    r = post(server, {"audio_data": b64(data), "options": {"feature_maps": "none"}})
    assert r.status_code == 200, r.text
    assert r.json()["waveform"]["duration"] == pytest.approx(3.0, abs=1e-3)


def test_a_flac_of_unknown_length_over_30_s_is_a_413_that_says_so(server):
    data = without_length(flac_silence(40.0, 44_100, 1))
    r = post(server, {"audio_data": b64(data)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "audio_too_long"
    assert "longer than the limit of 30 s" in r.json()["error"]["message"]


# -- JSON whose shape is the attack -----------------------------------------------------------------


def test_json_nested_100000_levels_is_a_422_naming_the_depth_limit(server):
    # Before: 422 "not valid JSON (not UTF-8 text)", from a RecursionError inside json.loads.
    r = post(server, b'{"audio_data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "json_too_deep"
    assert "100,001 levels deep; the limit is 64" in error["message"]
    assert_still_serves(server)


def test_millions_of_tiny_values_are_a_422_before_anything_is_built(server):
    # 18 MB (under the 20 MB body limit) that json.loads would turn into 6 M dicts (~400 MB).
    body = b'{"audio_data": [' + b"{}," * 6_000_000 + b'{}]}'
    r, growth = peak_growth_bytes(server[1], lambda: post(server, body))
    assert r.status_code == 422 and r.json()["error"]["code"] == "json_too_many_values", r.text
    assert "the limit is 10,000" in r.json()["error"]["message"]
    assert growth < 100 * MB, f"peak RSS growth {growth / MB:.0f} MB"
    assert_still_serves(server)


def test_brackets_inside_the_audio_string_are_not_structure(server):
    # an escaped quote first: a scanner that took it for the string's end would see 100,000 levels
    inside = json.dumps({"audio_data": 'say \\"' + "[" * 100_000, "options": {"feature_maps": "none"}})
    r = post(server, inside.encode())
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_base64", r.text  # parsed, then judged


# -- POST / is /evaluate -------------------------------------------------------------------------------


def test_post_to_the_root_is_the_evaluate_contract(server):
    body = {"audio_data": b64(wav_bytes(1.0)), "options": {"feature_maps": "stages", "top_k": 5}}
    root, evaluate = post(server, body, path="/"), post(server, body)
    assert root.status_code == evaluate.status_code == 200
    assert root.json()["predictions"] == evaluate.json()["predictions"]
    assert set(root.json()) == set(evaluate.json())


def test_post_to_the_root_needs_the_token(server):
    url, _, _ = server
    r = requests.post(f"{url}/", json={"audio_data": b64(wav_bytes(0.5))}, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token"


@pytest.mark.parametrize("body,status,code", [
    ({"audio": "x"}, 422, "invalid_request"),
    ({"audio_data": b64(wav_bytes(31.0, 8000))}, 413, "audio_too_long"),
    ({"audio_data": b64(flac_bomb())}, 400, "bad_sample_rate"),
    (b"[" * 1000 + b"]" * 1000, 422, "json_too_deep"),
])
def test_post_to_the_root_has_the_same_limits(server, body, status, code):
    r = post(server, body, path="/")
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


def test_post_to_the_root_refuses_an_oversized_body(server):
    r = post(server, json.dumps({"audio_data": "A" * (21 * MB)}).encode(), path="/")
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_the_root_alias_is_in_the_openapi_schema(server):
    url, _, _ = server
    paths = requests.get(f"{url}/openapi.json", timeout=60).json()["paths"]
    assert "post" in paths["/"] and "post" in paths["/evaluate"]
    assert paths["/"]["post"]["requestBody"] == paths["/evaluate"]["post"]["requestBody"]
    assert set(paths["/"]["post"]["responses"]) == set(paths["/evaluate"]["post"]["responses"])
