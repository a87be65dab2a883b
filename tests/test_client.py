"""core.client: HttpBackend against a real server and LocalBackend agree; errors read well."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from audio_factory import wav_bytes
from conftest import ROOT, free_port, start_process, stop_process

from core.checkpoint import save_checkpoint
from core.client import BackendError, HttpBackend, LocalBackend, make_backend
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig
from core.settings import Settings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(42)
    model = AudioCNN(ModelConfig(num_classes=10, stem_channels=16, widths=(16, 32), depths=(1, 1)))
    path = tmp_path_factory.mktemp("ckpt") / "run-a" / "best.pt"
    save_checkpoint(path, model, FeatureConfig(), list(CLASSES[:10]), meta={"run_name": "run-a"})
    return path


@pytest.fixture(scope="module")
def checkpoint_server(checkpoint):
    port = free_port()
    proc = start_process([sys.executable, "-m", "core.server", "--port", str(port), "--checkpoint", str(checkpoint)],
                         f"http://127.0.0.1:{port}/health", {"AUDIO_CNN_TOKEN": ""})
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


def test_http_and_local_backends_return_the_same_analysis(checkpoint, checkpoint_server):
    clip = wav_bytes(3.0, 22050, freq=660)
    remote = HttpBackend(checkpoint_server).analyze(clip, top_k=5)
    local = LocalBackend(Predictor.from_checkpoint(checkpoint)).analyze(clip, top_k=5)
    assert [p.label for p in remote.predictions] == [p.label for p in local.predictions]
    for theirs, ours in zip(remote.predictions, local.predictions, strict=True):
        assert theirs.confidence == pytest.approx(ours.confidence, rel=1e-5)
    assert remote.model.checkpoint_id == local.model.checkpoint_id and remote.model.trained
    assert list(remote.feature_maps) == list(local.feature_maps)
    # arrays travel as float16: equal within its precision
    np.testing.assert_allclose(remote.spectrogram, local.spectrogram, rtol=2 ** -11, atol=1e-3)
    np.testing.assert_allclose(remote.feature_maps["layer3"], local.feature_maps["layer3"], rtol=2 ** -10, atol=1e-5)
    assert remote.duration == local.duration == pytest.approx(3.0)


def test_http_health_reports_model_and_latency(checkpoint_server):
    health = HttpBackend(checkpoint_server).health()
    assert health.ok and health.model.trained and health.model.name == "AudioCNN (run-a)"
    assert health.latency_ms > 0 and health.limits["max_audio_seconds"] == 30.0


def test_http_architecture_and_classes(checkpoint_server):
    backend = HttpBackend(checkpoint_server)
    assert backend.architecture()["layers"][-1]["name"] == "fc"
    assert [c["name"] for c in backend.classes()] == list(CLASSES[:10])


def test_bad_audio_through_http_is_a_backend_error_with_the_servers_message(checkpoint_server):
    with pytest.raises(BackendError, match="not an audio file") as info:
        HttpBackend(checkpoint_server).analyze(b"definitely not audio" * 10)
    assert info.value.status == 400 and info.value.code == "not_audio"


def test_wrong_token_says_so(live_server):
    url, _ = live_server
    with pytest.raises(BackendError, match="refused the token.*AUDIO_CNN_TOKEN") as info:
        HttpBackend(url, token="wrong").analyze(wav_bytes(1.0))
    assert info.value.status == 401


def test_missing_token_says_so(live_server):
    url, _ = live_server
    with pytest.raises(BackendError, match="Bearer") as info:
        HttpBackend(url).architecture()
    assert info.value.status == 401


def test_too_large_body_is_a_413_backend_error(live_server):
    url, token = live_server
    with pytest.raises(BackendError, match="limit of 20 MB") as info:
        HttpBackend(url, token=token).analyze(b"\0" * (16 * 1024 * 1024))
    assert info.value.status == 413


def test_connection_refused_is_a_clear_error():
    port = free_port()  # nothing listens here
    backend = HttpBackend(f"http://127.0.0.1:{port}", retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="connection refused. Is the server running"):
        backend.analyze(wav_bytes(0.5))
    health = backend.health()
    assert not health.ok and "connection refused" in health.message


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then a real /health body."""

    failures = 2
    seen = 0

    def do_GET(self):
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.end_headers()
            return
        body = b'{"status": "ok", "model": {"name": "m", "checkpoint_id": null, "trained": false, "num_classes": 50}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_503_is_retried_with_backoff_then_succeeds():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        health = HttpBackend(f"http://127.0.0.1:{server.server_port}", retries=3, backoff=0.01).health()
        assert health.ok and _Flaky.seen == 3
    finally:
        server.shutdown()


def test_local_backend_turns_audio_errors_into_backend_errors(untrained_predictor):
    backend = LocalBackend(untrained_predictor)
    with pytest.raises(BackendError, match="0 bytes") as info:
        backend.analyze(b"")
    assert info.value.status == 400 and info.value.code == "empty_audio"
    with pytest.raises(BackendError) as info:
        backend.analyze(wav_bytes(31.0, 8000))
    assert info.value.status == 413


def test_local_backend_health_names_the_device(untrained_predictor):
    health = LocalBackend(untrained_predictor).health()
    assert health.ok and health.backend == "local (cpu)" and health.model.trained is False


def test_make_backend_picks_http_when_an_endpoint_is_set(tmp_path):
    backend = make_backend(Settings(endpoint="http://127.0.0.1:9", token="t", runs_dir=tmp_path))
    assert isinstance(backend, HttpBackend) and backend.session.headers["Authorization"] == "Bearer t"
    local = make_backend(Settings(runs_dir=tmp_path))
    assert isinstance(local, LocalBackend) and not local.predictor.info.trained


def test_make_backend_reports_a_broken_checkpoint_as_a_backend_error(tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="best.pt is not a readable audio-cnn checkpoint") as info:
        make_backend(Settings(checkpoint=broken, runs_dir=tmp_path))
    assert info.value.code == "bad_checkpoint"


def test_cli_prints_the_top_k_from_a_server(tmp_path, checkpoint_server):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(2.0))
    out = subprocess.run([sys.executable, "-m", "core.client", str(clip), "--endpoint", checkpoint_server,
                          "--top-k", "4"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "%" in line]
    assert len(lines) == 4 and "AudioCNN (run-a)" in out.stdout


def test_cli_warns_about_an_untrained_model_and_fails_cleanly_on_bad_files(tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(1.0))
    env_runs = {"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")}
    out = subprocess.run([sys.executable, "-m", "core.client", str(clip)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, **env_runs})
    assert out.returncode == 0 and "untrained" in out.stderr
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio at all " * 20)
    out = subprocess.run([sys.executable, "-m", "core.client", str(bad)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, **env_runs})
    assert out.returncode == 1 and "error: This is not an audio file" in out.stderr


def test_the_http_client_and_the_dashboard_code_do_not_load_torch():
    # A dashboard pointed at an endpoint is a thin client: it must not pay for the model code.
    code = ("import sys, core.client, core.schema, core.clip_charts, core.network_charts, core.runs, core.run_charts, core.volume, pages.ui; "
            "loaded = [m for m in ('torch', 'core.inference', 'core.model', 'librosa') if m in sys.modules]; "
            "print(loaded); sys.exit(1 if loaded else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
