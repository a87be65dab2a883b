"""core.stream_client: the URL, Modal's edge in front of /stream, and the CLI against a real server."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading

import pytest
from audio_factory import wav_bytes
from conftest import ROOT

from core.stream_client import StreamClient, stream_url
from core.stream_protocol import StreamError

START = {"format": "s16le", "sample_rate": 44100, "channels": 1}


@pytest.mark.parametrize("endpoint,url", [
    ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/stream"),
    ("https://team--audio-cnn-serve-server-web.modal.run/", "wss://team--audio-cnn-serve-server-web.modal.run/stream"),
    ("https://example.com/api", "wss://example.com/api/stream"),
])
def test_the_stream_url_follows_the_endpoint(endpoint, url):
    assert stream_url(endpoint) == url


# -- Modal's edge: proxy auth is checked on the websocket handshake, before a container starts ----------


@pytest.fixture
def modal_edge():
    """A websocket server that answers like Modal's proxy: 401 without Modal-Key/Modal-Secret,
    else a tiny /stream (ready, then one window per binary message)."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response
    from websockets.sync.server import serve

    def check(connection, request):
        if (request.headers.get("Modal-Key"), request.headers.get("Modal-Secret")) != ("wk-abc", "ws-xyz"):
            body = b"modal-http: missing credentials for proxy authorization"
            return Response(401, "Unauthorized", Headers([("Content-Length", str(len(body)))]), body)
        return None

    def handler(ws):
        json.loads(ws.recv())
        ws.send(json.dumps({"type": "ready", "window": 5.0, "hop": 1.0, "model": {}}))
        for i, _ in enumerate(ws):
            ws.send(json.dumps({"type": "window", "index": i, "start": float(i), "end": i + 5.0,
                                "predictions": [{"class": "dog", "confidence": 0.5}]}))

    server = serve(handler, "127.0.0.1", 0, process_request=check)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()


def test_a_proxy_token_pair_is_sent_as_modal_headers_on_the_handshake(modal_edge):
    client = StreamClient.connect(modal_edge, START, token="wk-abc:ws-xyz")
    client.send(b"\x00\x00" * 441)
    [window] = client.receive(timeout=30)
    assert window.top.label == "dog" and window.end == 5.0
    client.close()


def test_a_refused_handshake_says_which_token_to_set(modal_edge):
    with pytest.raises(StreamError, match="AUDIO_CNN_TOKEN.*wk-\\.\\.\\.:ws-\\.\\.\\.") as info:
        StreamClient.connect(modal_edge, START, token="wrong")
    assert info.value.code == "unauthorized"


def test_an_unreachable_endpoint_is_a_stream_error():
    with pytest.raises(StreamError, match="Cannot open a stream to http://127.0.0.1:9"):
        StreamClient.connect("http://127.0.0.1:9", START, open_timeout=5)


# -- the CLI ----------------------------------------------------------------------------------------------


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.stream_client", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", "AUDIO_CNN_CHECKPOINT": ""})


def test_the_cli_streams_a_file_to_the_server_and_prints_labels_as_they_change(live_server, tmp_path):
    url, token = live_server
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(8.0, 48000, channels=2, seed=21))
    out = cli(str(clip), "--endpoint", url, "--token", token, "--speed", "2", "--all", "--threshold", "dog=0")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"streaming {clip} (48000 Hz, 2 ch) to {url}: 5 s windows every 1 s")
    windows = [line for line in lines if line.strip().endswith("%") or "(was " in line]
    assert [w.split()[0] for w in windows] == ["0.0-5.0", "1.0-6.0", "2.0-7.0", "3.0-8.0"]
    assert any(line.startswith("event: Dog at ") for line in lines)  # a zero threshold always fires
    assert lines[-1] == "done: 4 windows"
    assert "untrained" in out.stderr


def test_the_cli_says_when_the_server_refuses_the_token(live_server, tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(1.0))
    out = cli(str(clip), "--endpoint", live_server[0], "--token", "wrong")
    assert out.returncode == 1 and "error: The bearer token is not valid" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("sounddevice") is not None, reason="sounddevice is installed")
def test_the_cli_microphone_names_the_optional_package_it_needs():
    out = cli("--mic", "--seconds", "1")
    assert out.returncode != 0 and "pip install sounddevice" in out.stderr


# -- the Live page's data path with an endpoint: LiveSession over HttpBackend.stream -------------------


def test_a_live_session_streams_to_the_endpoint_over_the_websocket(live_server):
    import time

    import numpy as np

    from core.client import HttpBackend
    from core.live import LiveSession

    url, token = live_server
    live = LiveSession(HttpBackend(url, token=token).stream, thresholds={"dog": 0.0})

    def push(seconds: float, real_time: bool) -> None:
        """20 ms frames, as WebRTC delivers them: all at once, or each when a microphone would have it."""
        pcm = (np.sin(np.arange(int(seconds * 44100)) / 44100 * 2 * np.pi * 330) * 6000).astype("<i2").tobytes()
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), 1764)):
            while real_time and time.monotonic() < t0 + n * 0.02:
                time.sleep(0.005)   # a real-time source, not a wait for the result
            live.push(pcm[i : i + 1764], 44100, 1)

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline and live.snapshot().error is None, live.snapshot().error
            time.sleep(0.05)

    push(4.5, real_time=False)   # at once: within what the server allows up front and the session's backlog
    push(1.5, real_time=True)    # then as a microphone records it: windows end at 5 and 6 s
    wait_for(lambda: len(live.snapshot().windows) == 2)
    live.close()
    snap = live.snapshot()
    assert [w.start for w in snap.windows] == [0.0, 1.0] and snap.ready["model"]["trained"] is False
    assert snap.spectrogram.shape[0] == 128 and [e.label for e in snap.events] == ["dog"]
