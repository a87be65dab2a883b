"""serve_modal.py: inspectable without Modal credentials, the class works offline, local mode serves.

Modal's cloud is the only thing faked: `.local()` runs the class's enter
methods and returns the real FastAPI app (ECOSYSTEM.md), and the fan-out is
driven through a stand-in for `Function.map` that calls `.local()`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import torch
from audio_factory import wav_bytes
from conftest import ROOT, free_port, start_process, stop_process

from core.checkpoint import CheckpointError, find_best_checkpoint, run_checkpoint, save_checkpoint
from core.client import BackendError, HttpBackend
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Server.* function is executing locally"),
    pytest.mark.filterwarnings("ignore:Using `httpx`"),
]

TINY = ModelConfig(num_classes=10, stem_channels=16, widths=(16, 32), depths=(1, 1))


def write_run(runs, name: str, accuracy: float | None, seed: int, summary: str | None = None):
    """runs/<name>/best.pt (a tiny model) and a summary.json with `best_val_accuracy`."""
    torch.manual_seed(seed)
    folder = runs / name
    save_checkpoint(folder / "best.pt", AudioCNN(TINY), FeatureConfig(), list(CLASSES[:10]), meta={"run_name": name})
    if summary is not None:
        (folder / "summary.json").write_text(summary)
    elif accuracy is not None:
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "best_val_accuracy": accuracy}))
    return folder / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_run(root, "small", 0.61, seed=1)
    write_run(root, "best", 0.83, seed=2)
    write_run(root, "cv/fold-1", 0.70, seed=3)
    write_run(root, "broken-summary", None, seed=4, summary="{not json")
    write_run(root, "no-summary", None, seed=5)
    return root


# -- which checkpoint is served --------------------------------------------------------


def test_the_best_run_is_chosen_by_summary_json(runs):
    assert find_best_checkpoint(runs) == runs / "best" / "best.pt"


def test_without_usable_summaries_the_newest_best_pt_is_chosen(tmp_path):
    write_run(tmp_path, "old", None, seed=1, summary='{"best_val_accuracy": "n/a"}')
    newest = write_run(tmp_path, "new", None, seed=2)
    assert find_best_checkpoint(tmp_path) == newest
    assert find_best_checkpoint(tmp_path / "nothing-here") is None


def test_a_named_run_without_a_checkpoint_names_the_runs_that_have_one(runs):
    assert run_checkpoint(runs, "cv/fold-1") == runs / "cv" / "fold-1" / "best.pt"
    with pytest.raises(CheckpointError, match="'nope'.*best, broken-summary, cv/fold-1"):
        run_checkpoint(runs, "nope")


# -- importable and inspectable without credentials ---------------------------------------------


def no_credentials_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "AUDIO_CNN_"))}
    return {**env, "HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml"), **extra}


MANIFEST = """
import json, serve_modal as m
print(json.dumps({"app": m.app.name, "gpu": m.SETTINGS.gpu, "proxy_auth": m.SETTINGS.proxy_auth,
                  "secrets": len(m.secrets), "scaledown": m.SETTINGS.scaledown_s, "max_inputs": m.MAX_INPUTS, "target_inputs": m.TARGET_INPUTS,
                  "env": m.CONTAINER_ENV, "packages": m.serving_requirements(),
                  "methods": sorted(k for k in ("web", "classify_chunk", "load", "start") if hasattr(m.Server, k))}))
"""


def manifest(tmp_path, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", MANIFEST], cwd=ROOT, env=no_credentials_env(tmp_path, **env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_imports_without_credentials_with_the_documented_defaults(tmp_path):
    m = manifest(tmp_path)
    assert m["app"] == "audio-cnn-serve" and m["gpu"] == "A10G"
    assert m["proxy_auth"] is True and m["secrets"] == 0
    assert m["scaledown"] == 300 and (m["target_inputs"], m["max_inputs"]) == (16, 32)
    assert m["env"]["AUDIO_CNN_RUNS_DIR"] == "/runs" and "AUDIO_CNN_RUN" not in m["env"]
    assert m["methods"] == ["classify_chunk", "load", "start", "web"]
    names = [line.split("=")[0].split(">")[0] for line in m["packages"]]
    assert names == ["torch", "numpy", "soundfile", "librosa", "scipy", "soxr", "fastapi", "pydantic", "orjson",
                     "tqdm"]
    assert "torch==2.13.0" in m["packages"]  # the pins come from requirements.txt


def test_deploy_time_settings_come_from_the_environment(tmp_path):
    m = manifest(tmp_path, AUDIO_CNN_GPU="H100", AUDIO_CNN_PROXY_AUTH="0", AUDIO_CNN_TOKEN_SECRET="audio-cnn-token",
                 AUDIO_CNN_RUN="best", AUDIO_CNN_SCALEDOWN_S="60", AUDIO_CNN_BATCH_MAX="8")
    assert m["gpu"] == "H100" and m["proxy_auth"] is False and m["secrets"] == 1
    assert m["scaledown"] == 60 and (m["target_inputs"], m["max_inputs"]) == (8, 16)
    # passed on to the container, so the module defines the same things there
    assert m["env"]["AUDIO_CNN_RUN"] == "best" and m["env"]["AUDIO_CNN_GPU"] == "H100"


def test_modal_cli_sees_the_classify_entrypoint_without_credentials(tmp_path):
    out = subprocess.run([sys.executable, "-m", "modal", "run", "serve_modal.py::classify", "--help"],
                         cwd=ROOT, env=no_credentials_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--input-dir" in out.stdout and "--out" in out.stdout and "--chunk-size" in out.stdout


# -- the Modal class, offline ---------------------------------------------------------------


@pytest.fixture
def modal_env(runs, monkeypatch):
    """What the container's environment holds, pointed at the local runs folder."""
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(runs))
    for key in ("AUDIO_CNN_CHECKPOINT", "AUDIO_CNN_TOKEN", "AUDIO_CNN_RUN"):
        monkeypatch.delenv(key, raising=False)
    import serve_modal

    return serve_modal


def local_client(serve_modal):
    from fastapi.testclient import TestClient

    return TestClient(serve_modal.Server().web.local())


def test_enter_loads_the_best_run_once_and_serves_the_real_app(modal_env):
    client = local_client(modal_env)
    health = client.get("/health").json()
    assert health["model"]["name"] == "AudioCNN (best)" and health["model"]["trained"]
    assert health["batching"]["enabled"] and health["auth"] is False
    r = client.post("/evaluate", json={"audio_data": base64.b64encode(wav_bytes(1.0)).decode(),
                                       "options": {"feature_maps": "none", "top_k": 2}})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert client.get("/classes").json()["classes"][0]["name"] == CLASSES[0]


def test_a_named_run_is_served(modal_env, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_RUN", "small")
    assert local_client(modal_env).get("/health").json()["model"]["name"] == "AudioCNN (small)"


def test_the_token_from_a_modal_secret_guards_everything_but_health(modal_env, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_TOKEN", "from-a-secret")  # what modal.Secret.from_name puts in the env
    client = local_client(modal_env)
    body = {"audio_data": base64.b64encode(wav_bytes(0.5)).decode(), "options": {"feature_maps": "none"}}
    assert client.get("/health").status_code == 200 and client.get("/health").json()["auth"] is True
    assert client.post("/evaluate", json=body).json()["error"]["code"] == "missing_token"
    wrong = client.post("/evaluate", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_token"
    assert client.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.post("/evaluate", json=body, headers={"Authorization": "Bearer from-a-secret"})
    assert ok.status_code == 200


def test_classify_chunk_returns_one_row_per_file(modal_env):
    items = [("a.wav", wav_bytes(1.0)), ("bad.wav", b"nope" * 100), ("b.wav", wav_bytes(1.0, freq=900))]
    rows = modal_env.Server().classify_chunk.local(items, top_k=2)
    assert [(r["file"], r["status"]) for r in rows] == [("a.wav", "ok"), ("bad.wav", "error"), ("b.wav", "ok")]
    assert rows[1]["error"].startswith("not_audio: ")


def test_the_fan_out_writes_every_file_even_when_a_chunk_fails(modal_env, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(7):
        (folder / f"clip-{i}.wav").write_bytes(wav_bytes(0.5, freq=300 + 50 * i))
    (folder / "garbage.wav").write_bytes(b"\x00garbage" * 50)
    server = modal_env.Server()

    def fake_map(chunks, top_k):
        """Function.map(order_outputs=False, return_exceptions=True), minus the cloud: the
        outputs come back in reverse order and the second chunk's container fails."""
        outputs = []
        for i, chunk in enumerate(chunks):
            outputs.append(RuntimeError("container lost") if i == 1 else server.classify_chunk.local(chunk, top_k))
        return reversed(outputs)

    out = tmp_path / "results.csv"
    ok, errors = modal_env.classify_remote(fake_map, folder, out, chunk_size=3, top_k=2)
    import csv

    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == sorted(p.name for p in folder.iterdir())  # path order, not arrival order
    by_file = {r["file"]: r for r in rows}
    # chunks are [clip-0, clip-1, clip-2], [clip-3, clip-4, clip-5], [clip-6, garbage]
    for name in ("clip-3.wav", "clip-4.wav", "clip-5.wav"):
        assert by_file[name]["status"] == "error" and "RuntimeError: container lost" in by_file[name]["error"]
    assert by_file["garbage.wav"]["error"].startswith("not_audio")
    assert (ok, errors) == (4, 4)


def test_predictor_to_moves_and_reports_the_device():
    p = Predictor.untrained(device="cpu", model_config=TINY)
    assert p.to("cpu") is p and p.info.device == "cpu"
    target = "cuda" if torch.cuda.is_available() else "cpu"
    assert p.to(target).info.device.startswith(target) and next(p.model.parameters()).device.type == target


# -- local mode: the same app with uvicorn on 127.0.0.1 -------------------------------------------


@pytest.fixture(scope="module")
def local_mode(runs):
    port = free_port()
    proc = start_process([sys.executable, "serve_modal.py", "--local", "--port", str(port), "--token", "t0k"],
                         f"http://127.0.0.1:{port}/health",
                         {"AUDIO_CNN_RUNS_DIR": str(runs), "AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_RUN": ""})
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


def test_local_mode_serves_the_best_run_with_its_token(local_mode):
    assert requests.get(f"{local_mode}/health", timeout=30).json()["model"]["name"] == "AudioCNN (best)"
    backend = HttpBackend(local_mode, token="t0k")
    assert backend.analyze(wav_bytes(1.0), top_k=3).model.name == "AudioCNN (best)"
    with pytest.raises(BackendError, match="refused the token"):
        HttpBackend(local_mode, token="wrong").analyze(wav_bytes(1.0))
    with pytest.raises(BackendError) as info:
        HttpBackend(local_mode).architecture()
    assert info.value.status == 401


def test_local_mode_takes_a_checkpoint_file(runs):
    port = free_port()
    proc = start_process([sys.executable, "serve_modal.py", "--local", "--port", str(port),
                          "--checkpoint", str(runs / "small" / "best.pt")],
                         f"http://127.0.0.1:{port}/health", {"AUDIO_CNN_TOKEN": ""})
    try:
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=30).json()
        assert health["model"]["name"] == "AudioCNN (small)" and health["auth"] is False
    finally:
        stop_process(proc)


def test_local_mode_refuses_a_run_without_a_checkpoint(runs):
    out = subprocess.run([sys.executable, "serve_modal.py", "--local", "--run", "nope"], cwd=ROOT,
                         env={**os.environ, "AUDIO_CNN_RUNS_DIR": str(runs)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Run 'nope' has no best.pt" in out.stderr


def test_the_deployed_app_serves_the_stream_websocket(modal_env):
    import numpy as np

    client = local_client(modal_env)
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"type": "start", "format": "s16le", "sample_rate": 44100, "top_k": 2}))
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["model"]["name"] == "AudioCNN (best)"
        for _ in range(5):
            ws.send_bytes(np.zeros(44100, "<i2").tobytes())
        window = ws.receive_json()
    assert window["type"] == "window" and (window["start"], window["end"]) == (0.0, 5.0)
    assert len(window["predictions"]) == 2


# -- calling a Modal endpoint: proxy-auth tokens, and what is (not) retried ------------------------


class _ModalEdge(BaseHTTPRequestHandler):
    """Answers like Modal's proxy: 401 in plain text without Modal-Key/Modal-Secret, else `status`."""

    status = 200
    seen = 0

    def do_GET(self):
        type(self).seen += 1
        if (self.headers.get("Modal-Key"), self.headers.get("Modal-Secret")) != ("wk-abc", "ws-xyz"):
            self._send(401, b"modal-http: missing credentials for proxy authorization", "text/plain")
        elif type(self).status != 200:
            self._send(type(self).status, b'{"error": {"code": "nope", "message": "not here"}}', "application/json")
        else:
            self._send(200, json.dumps({"classes": [{"index": 0, "name": "dog", "category": "Animals"}]}).encode(),
                       "application/json")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def modal_edge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModalEdge)
    _ModalEdge.status, _ModalEdge.seen = 200, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_proxy_token_pair_is_sent_as_modal_headers(modal_edge):
    backend = HttpBackend(modal_edge, token="wk-abc:ws-xyz")
    assert "Authorization" not in backend.session.headers
    assert backend.classes()[0]["name"] == "dog"


def test_a_missing_proxy_token_says_how_to_get_one(modal_edge):
    with pytest.raises(BackendError, match="proxy-auth token.*wk-\\.\\.\\.:ws-\\.\\.\\..*proxy-tokens create") as info:
        HttpBackend(modal_edge).classes()
    assert info.value.status == 401 and _ModalEdge.seen == 1  # a 401 is never retried


@pytest.mark.parametrize("status", [400, 404, 413, 429])
def test_4xx_answers_are_never_retried(modal_edge, status):
    _ModalEdge.status = status
    with pytest.raises(BackendError) as info:
        HttpBackend(modal_edge, token="wk-abc:ws-xyz", retries=3, backoff=0.01).classes()
    assert info.value.status == status and _ModalEdge.seen == 1


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried_then_explained(modal_edge, status):
    _ModalEdge.status = status
    with pytest.raises(BackendError, match="cold-starting") as info:
        HttpBackend(modal_edge, token="wk-abc:ws-xyz", retries=2, backoff=0.01).classes()
    assert info.value.status == status and _ModalEdge.seen == 3  # the first try and 2 retries
