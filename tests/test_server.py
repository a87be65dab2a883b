"""core.server over real HTTP: `python -m core.server` on 127.0.0.1, driven with requests.

Every bad input gets its documented status and a JSON message, and the
server answers the next good request; the seed-compatible layout is exact.
"""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import requests
from audio_factory import encode, tone, wav_bytes
from conftest import DEFAULT_MODEL_PARAMS, send_chunked_until_answered

from core.schema import decode_array


@pytest.fixture(scope="module")
def server(authed):
    return authed


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def evaluate(server, body, **kwargs):
    url, session = server
    return session.post(f"{url}/evaluate", json=body, timeout=60, **kwargs)


def assert_still_serves(server):
    r = evaluate(server, {"audio_data": b64(wav_bytes(1.0)), "options": {"feature_maps": "none"}})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3


# -- the seed-compatible response --------------------------------------------------------


@pytest.fixture(scope="module")
def seed_response(server, clip_5s):
    r = evaluate(server, {"audio_data": b64(clip_5s)})
    assert r.status_code == 200, r.text
    return r


def test_default_response_has_the_seed_layout(seed_response):
    body = seed_response.json()
    assert list(body)[:4] == ["predictions", "visualization", "input_spectogram", "waveform"]
    assert len(body["predictions"]) == 3
    first = body["predictions"][0]
    assert set(first) >= {"class", "confidence"} and isinstance(first["confidence"], float)
    spec = body["input_spectogram"]
    assert spec["shape"] == [128, 431]
    assert len(spec["values"]) == 128 and len(spec["values"][0]) == 431
    viz = body["visualization"]
    assert list(viz)[:3] == ["layer1", "layer2.block-0.conv", "layer2.block-0.relu"]
    assert {"layer1", "layer2", "layer3", "layer4", "layer5", "layer5.block-2.relu"} <= set(viz)
    assert viz["layer1"]["shape"] == [32, 108] and len(viz["layer1"]["values"]) == 32
    wave = body["waveform"]
    assert set(wave) == {"values", "sample_rate", "duration"}
    assert wave["sample_rate"] == 44100 and wave["duration"] == pytest.approx(5.0)
    assert len(wave["values"]) == 8000
    assert body["model"]["trained"] is False
    assert {"decode", "features", "forward", "total"} <= set(body["timing_ms"])


def test_duration_is_true_at_22k(server):
    body = evaluate(server, {"audio_data": b64(wav_bytes(5.0, 22050)), "options": {"feature_maps": "none"}}).json()
    assert body["waveform"]["duration"] == pytest.approx(5.0)  # the seed reports 10 s


def test_responses_are_gzipped_when_accepted(seed_response):
    assert seed_response.headers["Content-Encoding"] == "gzip"
    assert int(seed_response.headers["Content-Length"]) < len(seed_response.content) / 2


def test_f16_decodes_to_the_same_numbers_within_float16_precision(server, clip_5s, seed_response):
    plain = seed_response.json()
    packed = evaluate(server, {"audio_data": b64(clip_5s), "options": {"encoding": "f16"}}).json()
    assert packed["predictions"] == plain["predictions"]
    assert "values" not in packed["input_spectogram"]
    for name in ("layer1", "layer3.block-2.conv", "layer5"):
        a = decode_array(packed["visualization"][name])
        b = np.asarray(plain["visualization"][name]["values"], np.float32)
        # float16 keeps 11 significant bits: relative error <= 2**-11
        np.testing.assert_allclose(a, b, rtol=2 ** -11, atol=1e-6)
    spec16 = decode_array(packed["input_spectogram"])
    np.testing.assert_allclose(spec16, np.asarray(plain["input_spectogram"]["values"]), rtol=2 ** -11, atol=1e-3)
    wave16 = decode_array(packed["waveform"])
    np.testing.assert_allclose(wave16, plain["waveform"]["values"], rtol=2 ** -11, atol=1e-4)


def test_f16_is_several_times_smaller_on_the_wire(server, clip_5s, seed_response):
    packed = evaluate(server, {"audio_data": b64(clip_5s), "options": {"encoding": "f16"}})
    json_wire = int(seed_response.headers["Content-Length"])
    assert int(packed.headers["Content-Length"]) * 2 < json_wire


def test_options_top_k_stages_and_channels(server):
    body = evaluate(server, {"audio_data": b64(wav_bytes(2.0)), "options": {
        "top_k": 7, "feature_maps": "stages", "channels_of": "layer4.block-0.relu", "channels_top": 4}}).json()
    assert len(body["predictions"]) == 7
    assert list(body["visualization"]) == ["layer1", "layer2", "layer3", "layer4", "layer5"]
    detail = body["channel_maps"]
    assert detail["layer"] == "layer4.block-0.relu" and len(detail["channels"]) == 4
    assert detail["shape"][0] == 4 and len(detail["values"]) == 4


def test_a_12s_clip_has_windows(server):
    body = evaluate(server, {"audio_data": b64(wav_bytes(12.0, 16000)), "options": {"feature_maps": "none"}}).json()
    assert [w["start"] for w in body["windows"]] == [0.0, 2.5, 5.0, 7.0]
    assert all(len(w["predictions"]) == 3 for w in body["windows"])


def test_a_data_url_is_accepted(server):
    r = evaluate(server, {"audio_data": "data:audio/wav;base64," + b64(wav_bytes(1.0)),
                          "options": {"feature_maps": "none"}})
    assert r.status_code == 200


# -- odd but valid input ----------------------------------------------------------------


@pytest.mark.parametrize("name,data", [
    ("one-sample click", encode(np.array([0.8], np.float32), 44100, "WAV", "FLOAT")),
    ("all silent", encode(np.zeros(44100, np.float32), 44100, "WAV", "PCM_16")),
    ("8 kHz stereo", wav_bytes(2.0, 8000, channels=2)),
    ("96 kHz 24-bit", wav_bytes(1.0, 96000, subtype="PCM_24")),
    ("mp3", encode(tone(2.0), 44100, "MP3", "MPEG_LAYER_III")),
    ("ogg", encode(tone(2.0), 44100, "OGG", "VORBIS")),
])
def test_odd_but_valid_input_is_analysed(server, name, data):
    r = evaluate(server, {"audio_data": b64(data)})
    assert r.status_code == 200, f"{name}: {r.text[:300]}"
    body = r.json()
    assert len(body["predictions"]) == 3
    assert all(np.isfinite(body["input_spectogram"]["values"]).all() for _ in [0])


# -- bad input: documented status, a JSON message, and the server keeps serving ---------------


def _wav_with_nan():
    x = tone(1.0)
    x[10] = np.nan
    return encode(x, 44100, "WAV", "FLOAT")


BAD_JSON_BODIES = [
    ("random bytes", {"audio_data": b64(np.random.default_rng(0).bytes(3000))}, 400, "not_audio"),
    ("text file", {"audio_data": b64(b"hello, this is text\n" * 20)}, 400, "not_audio"),
    ("empty audio_data", {"audio_data": ""}, 400, "empty_audio"),
    ("invalid base64", {"audio_data": "***not base64***"}, 400, "bad_base64"),
    ("truncated WAV header", {"audio_data": b64(wav_bytes(1.0)[:20])}, 400, "truncated_audio"),
    ("WAV cut in half", {"audio_data": b64(wav_bytes(1.0)[:44100])}, 400, "truncated_audio"),
    ("0-sample WAV", {"audio_data": b64(encode(np.zeros(0, np.float32)))}, 400, "empty_audio"),
    ("NaN samples", {"audio_data": b64(_wav_with_nan())}, 400, "non_finite_audio"),
    ("too long (31 s)", {"audio_data": b64(wav_bytes(31.0, 8000))}, 413, "audio_too_long"),
    ("wrong field", {"audio": b64(wav_bytes(1.0))}, 422, "invalid_request"),
    ("audio_data not a string", {"audio_data": 12345}, 422, "invalid_request"),
    ("unknown option", {"audio_data": b64(wav_bytes(1.0)), "options": {"colour": "red"}}, 422, "invalid_request"),
    ("top_k out of range", {"audio_data": b64(wav_bytes(1.0)), "options": {"top_k": 500}}, 422, "invalid_request"),
    ("bad encoding", {"audio_data": b64(wav_bytes(1.0)), "options": {"encoding": "xml"}}, 422, "invalid_request"),
    ("unknown layer", {"audio_data": b64(wav_bytes(1.0)), "options": {"channels_of": "layer9"}}, 422, "bad_option"),
]


@pytest.mark.parametrize("name,body,status,code", BAD_JSON_BODIES, ids=[b[0] for b in BAD_JSON_BODIES])
def test_bad_input_gets_its_status_and_a_message(server, name, body, status, code):
    r = evaluate(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and len(error["message"]) > 15
    assert_still_serves(server)


def test_a_body_that_is_not_json_is_a_422(server):
    url, session = server
    r = session.post(f"{url}/evaluate", data=b"{this is not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    assert_still_serves(server)


def test_an_empty_body_is_a_422(server):
    url, session = server
    r = session.post(f"{url}/evaluate", data=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    url, session = server
    huge = json.dumps({"audio_data": "A" * (21 * 1024 * 1024)}).encode()
    r = session.post(f"{url}/evaluate", data=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert "20 MB" in r.json()["error"]["message"]
    assert_still_serves(server)


def test_a_chunked_body_over_the_limit_is_refused(server):
    url, session = server

    def chunks():
        yield b'{"audio_data": "'
        for _ in range(22):
            yield b"A" * (1024 * 1024)
        yield b'"}'

    status, answer, _ = send_chunked_until_answered(url, "/evaluate", chunks(), {
        "Content-Type": "application/json", "Authorization": session.headers["Authorization"]})
    assert status == 413 and b"body_too_large" in answer  # read from the socket, not inferred from a reset
    assert_still_serves(server)


def test_unknown_route_and_method_are_json_errors(server):
    url, session = server
    assert session.get(f"{url}/nope").json()["error"]["code"] == "http_404"
    r = session.get(f"{url}/evaluate")
    assert r.status_code == 405 and r.json()["error"]["code"] == "http_405"
    assert r.headers["Allow"] == "POST"  # RFC 9110: a 405 names the methods that work


# -- auth, other routes, CORS ---------------------------------------------------------------


def test_missing_token_is_a_401(server):
    url, _ = server
    r = requests.post(f"{url}/evaluate", json={"audio_data": b64(wav_bytes(1.0))})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token"
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_wrong_token_is_a_401(server):
    url, _ = server
    r = requests.get(f"{url}/model", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad_token"
    r = requests.get(f"{url}/classes", headers={"Authorization": "Basic czNjcmV0"})
    assert r.status_code == 401


def test_health_needs_no_token_and_reports_model_and_limits(server):
    url, _ = server
    body = requests.get(f"{url}/health").json()
    assert body["status"] == "ok" and body["auth"] is True and body["model"]["trained"] is False
    assert body["limits"] == {"max_body_bytes": 20 * 1024 * 1024, "max_audio_seconds": 30.0,
                              "max_decode_samples": 30 * 48_000 * 2}


def test_model_lists_every_layer(server):
    url, session = server
    body = session.get(f"{url}/model").json()
    assert body["total_params"] == DEFAULT_MODEL_PARAMS
    names = [layer["name"] for layer in body["layers"]]
    assert "layer4.block-5.conv2" in names and names[-1] == "fc"
    assert all({"output_shape", "params", "type", "depth"} <= set(layer) for layer in body["layers"])


def test_classes_are_the_50_esc50_classes(server):
    url, session = server
    classes = session.get(f"{url}/classes").json()["classes"]
    assert len(classes) == 50 and classes[0] == {"index": 0, "name": "dog", "category": "Animals"}


def test_cors_preflight_from_another_origin_is_answered(server):
    url, _ = server
    r = requests.options(f"{url}/evaluate", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()


def test_openapi_schema_documents_the_contract(server):
    url, _ = server
    schema = requests.get(f"{url}/openapi.json").json()
    assert {"/evaluate", "/health", "/model", "/classes"} <= set(schema["paths"])
    assert "input_spectogram" in json.dumps(schema["components"]["schemas"]["EvaluateResponse"])


def test_gzip_body_is_real_gzip(server, clip_5s):
    url, session = server
    r = session.post(f"{url}/evaluate", json={"audio_data": b64(clip_5s), "options": {"encoding": "f16"}},
                     stream=True)
    raw = r.raw.read(decode_content=False)
    assert json.loads(gzip.decompress(raw))["predictions"]
