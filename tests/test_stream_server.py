"""WS /stream over a real uvicorn server (`python -m core.server` on 127.0.0.1), driven with websockets.

A streamed WAV gets /evaluate's windows with /evaluate's predictions; every
bad stream gets its close code and a message, and the server keeps serving;
several streams share forward passes; memory stays flat over a long stream.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import soundfile as sf
from audio_factory import encode, wav_bytes
from conftest import free_port, start_process, stop_process
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.audio import SAMPLE_RATE, decode_audio
from core.schema import decode_array
from core.stream_client import StreamClient

TOKEN = "stream-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_STREAMS = 4


def serve(tmp_path_factory, **settings: str):
    port = free_port()
    env = {"AUDIO_CNN_RUNS_DIR": str(tmp_path_factory.mktemp("no-runs")), "AUDIO_CNN_CHECKPOINT": "",
           **{f"AUDIO_CNN_{k.upper()}": v for k, v in settings.items()}}
    proc = start_process([sys.executable, "-m", "core.server", "--port", str(port), "--token", TOKEN],
                         f"http://127.0.0.1:{port}/health", env)
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A short idle timeout keeps the idle test short; a long batch wait lets concurrent
    # streams' windows meet in one forward pass even on a loaded machine.
    url, proc = serve(tmp_path_factory, stream_idle_s="3", stream_max_speed="4",
                      stream_max_streams=str(MAX_STREAMS), batch_wait_ms="300")
    yield url
    stop_process(proc)


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/stream"


def open_ws(url: str, headers=AUTH):
    return connect(ws_url(url), additional_headers=headers, proxy=None, compression=None, open_timeout=60,
                   legacy=True)


def start(ws, **fields) -> dict:
    ws.send(json.dumps({"type": "start", "format": "s16le", "sample_rate": 48000, "channels": 2, **fields}))
    return json.loads(ws.recv(timeout=60))


def refusal(ws) -> tuple[dict, int]:
    """(the error message, the close code) the server answers a bad stream with."""
    message = json.loads(ws.recv(timeout=120))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=120)
    return message, closed.value.rcvd.code


def read_until_closed(ws) -> list[dict]:
    """Every message until the server closes the socket."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=120)))
    except ConnectionClosed:
        return messages


def drain(ws) -> int:
    """Read whatever has arrived without waiting; how many messages."""
    n = 0
    try:
        while True:
            ws.recv(timeout=0)
            n += 1
    except TimeoutError:
        return n


def pcm_of(wav: bytes) -> tuple[bytes, int, int]:
    """(16-bit interleaved samples, rate, channels) inside a WAV file."""
    data, rate = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    return data.astype("<i2").tobytes(), rate, data.shape[1]


def stream_file(url: str, wav: bytes, speed: float, **fields) -> list:
    """Stream a WAV's PCM in 0.1 s messages at `speed` x real time with StreamClient; all windows."""
    pcm, rate, channels = pcm_of(wav)
    client = StreamClient.connect(url, {"format": "s16le", "sample_rate": rate, "channels": channels, **fields},
                                  token=TOKEN)
    step = rate // 10 * 2 * channels
    windows, t0 = [], time.monotonic()
    for i, pos in enumerate(range(0, len(pcm), step)):
        while time.monotonic() < t0 + i * 0.1 / speed:
            windows += client.receive(timeout=t0 + i * 0.1 / speed - time.monotonic())
        client.send(pcm[pos : pos + step])
    return windows + client.receive() + client.finish()


def evaluate(url: str, wav: bytes, **options) -> dict:
    r = requests.post(f"{url}/evaluate", headers=AUTH, timeout=120,
                      json={"audio_data": base64.b64encode(wav).decode(), "options": options})
    assert r.status_code == 200, r.text
    return r.json()


def assert_still_serves(url: str) -> None:
    assert evaluate(url, wav_bytes(1.0), feature_maps="none")["predictions"]


# -- the same windows as /evaluate ----------------------------------------------------------------------

# Confidences travel as full floats; they may differ from /evaluate's only by float32 summation
# order: /evaluate runs its windows as one batch, the stream one window per pass (or batched with
# other streams), and the kernels for another batch size may add in another order. Each conv output
# sums at most 3*3*512 = 4608 products, a relative error of about sqrt(4608) * 2**-24 = 4e-6 per
# layer; over the network's 17 layers and the softmax that stays below 1e-4 relative (as
# tests/test_load.py asserts for batched against unbatched requests).
REL, ABS = 1e-4, 1e-6


@pytest.fixture(scope="module")
def clip_12s():
    """12 s of 48 kHz stereo 16-bit: the stream is downmixed and resampled like /evaluate's upload."""
    return wav_bytes(12.0, 48000, channels=2, freq=700.0, seed=11)


@pytest.fixture(scope="module")
def streamed(server, clip_12s):
    return stream_file(server, clip_12s, speed=3.0, hop=2.5, top_k=5, spectrogram="window")


def test_a_streamed_wav_gets_the_windows_and_predictions_of_evaluate(server, clip_12s, streamed):
    want = evaluate(server, clip_12s, top_k=5, window_hop=2.5, feature_maps="none")["windows"]
    assert [(w.start, w.end) for w in streamed] == [(w["start"], w["end"]) for w in want]
    assert [w["start"] for w in want] == [0.0, 2.5, 5.0, 7.0]  # the last window ends at the clip's end
    for got, exp in zip(streamed, want, strict=True):
        assert [p.label for p in got.predictions] == [p["class"] for p in exp["predictions"]]
        assert [p.confidence for p in got.predictions] == pytest.approx(
            [p["confidence"] for p in exp["predictions"]], rel=REL, abs=ABS)


def test_each_window_carries_its_log_mel_block_within_float16_rounding(server, clip_12s, streamed):
    samples = decode_audio(clip_12s).samples  # what the server analyses: mono at 44.1 kHz
    for w in streamed[:2]:
        s = round(w.start * SAMPLE_RATE)
        cut = encode(samples[s : s + 5 * SAMPLE_RATE], SAMPLE_RATE, "WAV", "FLOAT")  # float WAV: exact samples
        want = decode_array(evaluate(server, cut, feature_maps="none", encoding="f16")["input_spectogram"])
        assert w.spectrogram.shape == want.shape == (128, 431)
        # Both sides are float16 of the same float32 spectrogram; where the float32 values differ in
        # the last bits they can round to neighbouring float16s: one ulp, 2**-10 relative to |x|.
        assert np.all(np.abs(w.spectrogram - want) <= np.abs(want) * 2.0**-10 + 1e-3)


def test_the_ready_message_states_the_window_and_the_limits(server):
    with open_ws(server) as ws:
        ready = start(ws, hop=0.5)
    assert ready["type"] == "ready" and (ready["window"], ready["hop"]) == (5.0, 0.5)
    assert ready["limits"]["max_speed"] == 4 and ready["limits"]["idle_seconds"] == 3
    assert ready["model"]["trained"] is False


def test_a_stream_shorter_than_a_window_gets_one_window_of_everything(server):
    windows = stream_file(server, wav_bytes(2.0, 44100, seed=12), speed=4.0)
    assert [(w.start, w.end) for w in windows] == [(0.0, 2.0)]


# -- refusals: each gets its close code, a message, and the server goes on ---------------------------------


def test_a_stream_without_the_token_is_closed_4401(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with open_ws(server, headers) as ws:
            message, code = refusal(ws)
        assert code == 4401 and message["code"] in ("missing_token", "bad_token")


@pytest.mark.parametrize("first,code_name", [
    (b"\x00\x01", "bad_start"),                                               # binary before start
    ("hello", "bad_start"),                                                   # not JSON
    ('{"type": "start", "format": "s16le", "sample_rate": 500}', "bad_start"),  # rate out of range
    ('{"type": "start", "format": "mp3", "sample_rate": 48000}', "bad_start"),
])
def test_a_wrong_start_message_is_closed_4422_with_what_is_wrong(server, first, code_name):
    with open_ws(server) as ws:
        ws.send(first)
        message, code = refusal(ws)
    assert code == 4422 and message["code"] == code_name and "start" in message["message"]
    assert_still_serves(server)


@pytest.mark.parametrize("frame,expected", [
    (b"\x00" * 7, (4400, "bad_frame")),                    # 7 bytes: not whole 4-byte stereo frames
    ("please classify", (4400, "bad_frame")),              # text that is not "stop"
    (b"\x00" * 4 * 48001, (4413, "chunk_too_large")),      # over 1 s in one message
])
def test_bad_frames_are_closed_with_their_code(server, frame, expected):
    with open_ws(server) as ws:
        start(ws)
        ws.send(b"\x00" * 4 * 4800)   # a good 0.1 s first
        ws.send(frame)
        message, code = refusal(ws)
    assert (code, message["code"]) == expected
    assert_still_serves(server)


def test_nan_float_samples_are_a_bad_frame(server):
    with open_ws(server) as ws:
        start(ws, format="f32le", channels=1)
        ws.send(np.array([0.0, np.inf], "<f4").tobytes())
        message, code = refusal(ws)
    assert code == 4400 and "NaN or infinite" in message["message"]


def test_a_sender_faster_than_the_limit_is_closed_4429(server):
    second = b"\x00" * 4 * 48000
    with open_ws(server) as ws:
        start(ws)
        try:
            for _ in range(60):   # 60 s at once: refused after the first 5 s and 4x the time taken
                ws.send(second)
        except ConnectionClosed:
            pass
        messages = read_until_closed(ws)
    assert ws.close_code == 4429
    assert messages[-1]["code"] == "too_fast" and "more than 4x real time" in messages[-1]["message"]
    assert_still_serves(server)


def test_an_idle_stream_is_closed_4408(server):
    with open_ws(server) as ws:
        start(ws)
        message, code = refusal(ws)   # nothing sent: the server gives up after 3 s
    assert code == 4408 and message["code"] == "idle_timeout" and "3 s" in message["message"]


def test_streams_beyond_the_limit_are_closed_4503(server):
    sockets = [open_ws(server) for _ in range(MAX_STREAMS)]
    try:
        for ws in sockets:
            assert start(ws)["type"] == "ready"
        with open_ws(server) as extra:
            message, code = refusal(extra)
        assert code == 4503 and "AUDIO_CNN_STREAM_MAX_STREAMS" in message["message"]
    finally:
        for ws in sockets:
            ws.close()


# -- several streams, one model --------------------------------------------------------------------------


def test_concurrent_streams_share_forward_passes(server):
    before = requests.get(f"{server}/health", timeout=30).json()["batching"]
    second = b"\x00\x10" * 44100   # 1 s of mono 16-bit at 44.1 kHz: no resampler delay
    sockets = [open_ws(server) for _ in range(3)]
    try:
        for ws in sockets:
            start(ws, sample_rate=44100, channels=1)
        # Each stream sends its first window (allowed at once) and waits; the three windows
        # reach the micro-batcher within its 300 ms wait.
        def first_window(ws):
            for _ in range(5):
                ws.send(second)
            return json.loads(ws.recv(timeout=120))

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(first_window, sockets))
    finally:
        for ws in sockets:
            ws.close()
    assert [a["type"] for a in answers] == ["window"] * 3, answers
    after = requests.get(f"{server}/health", timeout=30).json()["batching"]
    assert after["items"] - before["items"] == 3
    assert after["batches"] - before["batches"] < 3   # fewer passes than windows


# -- memory ----------------------------------------------------------------------------------------------

MB = 1024 * 1024
LONG_STREAM_S = 360
# Keeping what a 6-minute stream sends would grow RSS by about 66 MB (48 kHz stereo 16-bit) or
# 64 MB (as 44.1 kHz float32); a stream's fixed state is one 5 s window (0.9 MB).
STREAM_GROWTH_MB = 24


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_memory_stays_flat_over_a_long_stream(tmp_path_factory):
    url, proc = serve(tmp_path_factory, stream_max_speed="1000", stream_idle_s="120")
    try:
        rng = np.random.default_rng(13)
        half_second = [(rng.standard_normal(48000) * 3000).astype("<i2").tobytes() for _ in range(4)]
        with open_ws(url) as ws:
            start(ws, hop=5.0)
            warm = None
            for i in range(2 * LONG_STREAM_S):
                ws.send(half_second[i % 4])
                drain(ws)   # read windows as they come, as a real client does
                if i == 2 * 60:            # after a minute: allocator pools at working size
                    warm = _drain_and_measure(ws, proc.pid)
            end = _drain_and_measure(ws, proc.pid)
        growth = end - warm
        assert growth < STREAM_GROWTH_MB, f"RSS grew by {growth:.0f} MB over {LONG_STREAM_S - 60} s of stream"
    finally:
        stop_process(proc)


def _drain_and_measure(ws, pid: int) -> float:
    """Read windows until none arrives for a moment (the server has caught up), then RSS in MB."""
    try:
        while True:
            ws.recv(timeout=2)
    except TimeoutError:
        pass
    return rss_mb(pid)


# -- a model that does not answer in time ----------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory):
    # Each batch waits 50 ms for company before its forward pass, so a 10 ms forward timeout
    # always expires first: every request meets a model that "does not answer".
    url, proc = serve(tmp_path_factory, forward_timeout_s="0.01", batch_wait_ms="50")
    yield url
    stop_process(proc)


def test_a_forward_that_does_not_answer_in_time_is_a_503_not_a_hung_request(impatient_server):
    r = requests.post(f"{impatient_server}/evaluate", headers=AUTH, timeout=120,
                      json={"audio_data": base64.b64encode(wav_bytes(1.0)).decode()})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json()["error"]["code"] == "model_busy" and "did not answer within 0.01 s" in r.json()["error"]["message"]
    assert requests.get(f"{impatient_server}/health", timeout=30).json()["status"] == "ok"


def test_a_stream_whose_window_gets_no_forward_in_time_is_closed_4504(impatient_server):
    pcm, rate, channels = pcm_of(wav_bytes(6.0, 48000, channels=2))
    with open_ws(impatient_server) as ws:
        assert start(ws)["type"] == "ready"
        step = rate // 10 * 2 * channels
        with contextlib.suppress(ConnectionClosed):  # the server may close while we still send
            for pos in range(0, len(pcm), step):
                ws.send(pcm[pos : pos + step])
                time.sleep(0.1)
        message, code = refusal(ws)
    assert code == 4504 and message["code"] == "model_busy"
