"""serve_modal.py: a deploy pins its checkpoint, containers serve exactly that, local mode serves.

Modal's cloud is the only thing emulated, as its docs describe it: a deploy
runs this module where `modal deploy` runs (here: pin_checkpoint over a
stand-in Volume holding a real runs folder) and freezes the containers' env;
a container runs `@modal.enter(snap=True)` once for the memory snapshot and
then the second enter, which `.local()` does (ECOSYSTEM.md) before returning
the real FastAPI app; the Volume mounted at /runs is the same runs folder.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import torch
from audio_factory import wav_bytes
from conftest import ROOT, free_port, start_process, stop_process
from volume_factory import FakeVolume

from core.checkpoint import CheckpointError, save_checkpoint
from core.client import BackendError, HttpBackend
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig
from core.settings import Settings, describe

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Server.* function is executing locally"),
    pytest.mark.filterwarnings("ignore:Using `httpx`"),
]

TINY = ModelConfig(num_classes=10, stem_channels=16, widths=(16, 32), depths=(1, 1))


def write_run(runs, name: str, accuracy: float | None, seed: int, summary: str | None = None,
              status: str = "finished") -> str:
    """runs/<name>/best.pt (a tiny model) and its summary.json as training writes it; returns best.pt's id."""
    torch.manual_seed(seed)
    folder = runs / name
    checkpoint_id = save_checkpoint(folder / "best.pt", AudioCNN(TINY), FeatureConfig(), list(CLASSES[:10]),
                                    meta={"run_name": name})
    if summary is not None:
        (folder / "summary.json").write_text(summary)
    elif accuracy is not None:
        (folder / "summary.json").write_text(json.dumps({"status": status, "best_val_accuracy": accuracy,
                                                         "best_checkpoint_id": checkpoint_id}))
    return checkpoint_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_run(root, "small", 0.61, seed=1)
    write_run(root, "best", 0.83, seed=2)
    write_run(root, "cv/fold-1", 0.70, seed=3)
    write_run(root, "broken-summary", None, seed=4, summary="{not json")
    write_run(root, "no-summary", None, seed=5)
    return root


# -- what Modal is given (recorded where the app is defined; no credentials, no network) -----------


def no_credentials_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "AUDIO_CNN_"))}
    return {**env, "HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml"),
            "PYTHONPATH": str(ROOT / "tests"), **extra}


# Wraps the modal calls that define the app and records their arguments, then imports the module.
RECORDER = r"""
import json, sys, modal
seen = {"cls": [], "function": [], "secret": [], "volume": []}

def plain(v):
    if isinstance(v, modal.Retries):
        return {k: (x.total_seconds() if hasattr(x, "total_seconds") else x) for k, x in vars(v).items()}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return type(v).__name__

def spy(owner, name, bucket, skip):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        seen[bucket].append({"args": plain(list(args[skip:])), **{k: plain(v) for k, v in kwargs.items()}})
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

spy(modal.App, "cls", "cls", 1)
spy(modal.App, "function", "function", 1)
spy(modal.Secret, "from_name", "secret", 0)
spy(modal.Volume, "from_name", "volume", 0)
module = __import__(sys.argv[1])
seen["container_env"] = getattr(module, "CONTAINER_ENV", None)
print(json.dumps(seen))
"""


def recorded(tmp_path, module: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", RECORDER, module], cwd=ROOT,
                         env=no_credentials_env(tmp_path, **env), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_server_class_gets_the_documented_defaults(tmp_path):
    seen = recorded(tmp_path, "serve_modal")
    [server] = seen["cls"]
    assert server["gpu"] == "A10G" and server["max_containers"] == 4 and server["min_containers"] == 0
    assert server["scaledown_window"] == 300 and server["enable_memory_snapshot"] is True
    assert server["secrets"] == [] and list(server["volumes"]) == ["/runs"]
    assert seen["volume"][0] == {"args": ["audio-cnn-runs"]}  # read side: never create_if_missing
    assert seen["container_env"]["AUDIO_CNN_RUNS_DIR"] == "/runs"
    assert "AUDIO_CNN_CHECKPOINT" not in seen["container_env"]  # importing is not deploying: nothing pinned


def test_deploy_settings_shape_the_server_class(tmp_path):
    seen = recorded(tmp_path, "serve_modal", AUDIO_CNN_GPU="none", AUDIO_CNN_MAX_CONTAINERS="2",
                    AUDIO_CNN_TOKEN_SECRET="audio-cnn-token", AUDIO_CNN_SCALEDOWN_S="60", AUDIO_CNN_VOLUME="mine")
    [server] = seen["cls"]
    assert server["gpu"] is None and server["max_containers"] == 2 and server["scaledown_window"] == 60
    assert seen["secret"][0] == {"args": ["audio-cnn-token"], "required_keys": ["AUDIO_CNN_TOKEN"]}
    assert seen["volume"][0] == {"args": ["mine"]}


def test_training_retries_a_preempted_input_on_a_fresh_container(tmp_path):
    seen = recorded(tmp_path, "train_modal")
    [function] = seen["function"]
    assert function["retries"]["max_retries"] == 10 and function["retries"]["initial_delay"] == 0.0
    assert function["single_use_containers"] is True
    assert function["gpu"] == "A10G" and function["timeout"] == 4 * 60 * 60
    assert {v["args"][0] for v in seen["volume"]} == {"audio-cnn-data", "audio-cnn-runs"}


def test_every_serving_setting_reaches_the_container(tmp_path):
    """Each "serve"/"deploy" setting, set to a value of its own, is in CONTAINER_ENV; the token is not."""
    values = {"AUDIO_CNN_CORS_ORIGINS": "https://a.example,https://b.example", "AUDIO_CNN_MAX_AUDIO_SECONDS": "12.5",
              "AUDIO_CNN_MAX_BODY_MB": "7", "AUDIO_CNN_BATCH_MAX": "4", "AUDIO_CNN_BATCH_WAIT_MS": "2",
              "AUDIO_CNN_RUN": "best", "AUDIO_CNN_CHECKPOINT_ID": "abc", "AUDIO_CNN_GPU": "L4",
              "AUDIO_CNN_PROXY_AUTH": "0", "AUDIO_CNN_TOKEN_SECRET": "s", "AUDIO_CNN_SCALEDOWN_S": "9",
              "AUDIO_CNN_MIN_CONTAINERS": "1", "AUDIO_CNN_MAX_CONTAINERS": "3", "AUDIO_CNN_VOLUME": "v",
              "AUDIO_CNN_ALLOW_UNTRAINED": "1", "AUDIO_CNN_MAX_DECODES": "2", "AUDIO_CNN_MAX_DECODE_SAMPLES": "1000000",
              "AUDIO_CNN_STREAM_WINDOW_S": "4", "AUDIO_CNN_STREAM_HOP_S": "0.5", "AUDIO_CNN_STREAM_MAX_SPEED": "3",
              "AUDIO_CNN_STREAM_IDLE_S": "20", "AUDIO_CNN_STREAM_MAX_STREAMS": "8", "AUDIO_CNN_FORWARD_TIMEOUT_S": "30",
              "AUDIO_CNN_ALLOWED_EMAILS": "a@example.com", "AUDIO_CNN_ALLOWED_DOMAINS": "example.com",
              "AUDIO_CNN_DASHBOARD_PUBLIC": "1", "AUDIO_CNN_DASHBOARD_SECRET": "d",
              "AUDIO_CNN_PUBLIC_URL": "https://dash.example.com"}
    scoped = {row["key"] for row in describe() if {"serve", "deploy"} & set(row["scopes"])}
    assert scoped == set(values), "a new serving setting: give it a value here"
    env = recorded(tmp_path, "serve_modal", AUDIO_CNN_TOKEN="secret!", **values)["container_env"]
    expected = Settings.from_env(values)  # each value as core.settings writes it back ("7" -> "7.0")
    assert {k: env[k] for k in values} == {**expected.env_for("deploy"), **expected.env_for("serve")}
    assert "AUDIO_CNN_TOKEN" not in env  # secrets travel in Modal Secrets only


NEW_SETTING = r"""
import dataclasses, json, core.settings as cs
@dataclasses.dataclass(frozen=True)
class Extended(cs.Settings):
    brand_new_limit: float = cs.setting(3.0, cs.POSITIVE, "serve", help="a setting added after serve_modal.py")
cs.Settings = Extended
import serve_modal
print(json.dumps(serve_modal.CONTAINER_ENV))
"""


def test_a_setting_added_with_the_serve_scope_is_forwarded_without_touching_serve_modal(tmp_path):
    out = subprocess.run([sys.executable, "-c", NEW_SETTING], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=no_credentials_env(tmp_path, AUDIO_CNN_BRAND_NEW_LIMIT="4.5"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["AUDIO_CNN_BRAND_NEW_LIMIT"] == "4.5"


def test_serving_requirements_come_from_requirements_txt_and_a_missing_file_fails_the_deploy(tmp_path, modal_env):
    names = [line.split("=")[0].split(">")[0] for line in modal_env.serving_requirements()]
    assert names == ["torch", "numpy", "soundfile", "librosa", "soxr", "scipy", "fastapi", "pydantic", "orjson", "tqdm",
                     "captum"]
    assert "torch==2.13.0" in modal_env.serving_requirements()  # the pins come from requirements.txt
    with pytest.raises(modal_env.DeployError, match="requirements.txt is missing"):
        modal_env.serving_requirements(tmp_path / "requirements.txt", local=True)
    assert modal_env.serving_requirements(tmp_path / "requirements.txt", local=False) == []  # in the container


def test_modal_cli_sees_the_classify_entrypoint_without_credentials(tmp_path):
    out = subprocess.run([sys.executable, "-m", "modal", "run", "serve_modal.py::classify", "--help"],
                         cwd=ROOT, env=no_credentials_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--input-dir", "--out", "--chunk-size", "--in-flight", "--overwrite"):
        assert flag in out.stdout


# -- modal deploy: the pin, decided where `modal deploy` runs ----------------------------------------


DEPLOY = r"""
import json, sys
from volume_factory import FakeVolume
import modal
fake, from_name = FakeVolume.from_folder(sys.argv[1]), modal.Volume.from_name

def runs_volume(name, **kw):  # a real (lazy) modal.Volume whose listing and reads come from the folder
    volume = from_name(name, **kw)
    volume.iterdir, volume.read_file = fake.iterdir, fake.read_file
    return volume

modal.Volume.from_name = runs_volume
sys.argv = ["/usr/local/bin/modal", "deploy", "serve_modal.py"]  # what the modal CLI's process looks like
import serve_modal
print(json.dumps(serve_modal.CONTAINER_ENV))
"""


def modal_deploy(tmp_path, runs, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DEPLOY, str(runs)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=no_credentials_env(tmp_path, **{"AUDIO_CNN_DASHBOARD_SECRET": "team", **env}))


@pytest.mark.parametrize("argv, deploying", [
    (["/usr/local/bin/modal", "deploy", "serve_modal.py"], True),
    (["/venv/lib/python3.11/site-packages/modal/__main__.py", "serve", "serve_modal.py"], True),
    (["modal", "run", "serve_modal.py::classify", "--input-dir", "x"], True),
    (["modal", "run", "serve_modal.py::classify", "--help"], False),
    (["serve_modal.py", "--local"], False), (["-c"], False), (["/usr/bin/pytest", "deploy"], False), ([], False),
])
def test_only_the_modal_cli_building_the_app_resolves_a_pin(modal_env, argv, deploying):
    assert modal_env.modal_cli_deploying(argv) is deploying


def test_modal_deploy_pins_the_best_finished_run_into_the_container_env(tmp_path, runs):
    out = modal_deploy(tmp_path, runs)
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout.strip().splitlines()[-1])
    best = json.loads((runs / "best" / "summary.json").read_text())["best_checkpoint_id"]
    assert env["AUDIO_CNN_CHECKPOINT"] == "/runs/best/best.pt" and env["AUDIO_CNN_CHECKPOINT_ID"] == best
    assert "Pinning run 'best'" in out.stderr and "next deploy" in out.stderr


def test_modal_deploy_with_no_trained_run_is_refused_unless_untrained_is_asked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    out = modal_deploy(tmp_path, tmp_path / "empty")
    assert out.returncode != 0 and "DeployError" in out.stderr and "AUDIO_CNN_ALLOW_UNTRAINED=1" in out.stderr
    allowed = modal_deploy(tmp_path, tmp_path / "empty", AUDIO_CNN_ALLOW_UNTRAINED="1")
    assert allowed.returncode == 0, allowed.stderr
    env = json.loads(allowed.stdout.strip().splitlines()[-1])
    assert "AUDIO_CNN_CHECKPOINT" not in env and env["AUDIO_CNN_ALLOW_UNTRAINED"] == "1"
    assert "UNTRAINED" in allowed.stderr


def test_an_unfinished_best_run_is_pinned_only_when_named(modal_env, tmp_path):
    write_run(tmp_path, "live", 0.9, seed=1, status="running")
    with pytest.raises(modal_env.DeployError, match="'live', has not finished.*AUDIO_CNN_RUN=live"):
        modal_env.pin_checkpoint(Settings(), FakeVolume.from_folder(tmp_path))
    pin = modal_env.pin_checkpoint(Settings(run="live"), FakeVolume.from_folder(tmp_path))
    assert pin["AUDIO_CNN_CHECKPOINT"] == "/runs/live/best.pt"


def test_a_local_checkpoint_file_cannot_be_deployed(modal_env, runs):
    with pytest.raises(modal_env.DeployError, match="AUDIO_CNN_CHECKPOINT names a file on this machine"):
        modal_env.pin_checkpoint(Settings(checkpoint=runs / "best" / "best.pt"), FakeVolume.from_folder(runs))


def test_a_named_run_missing_from_the_volume_fails_the_deploy_with_the_runs_it_has(modal_env, runs):
    with pytest.raises(modal_env.DeployError, match="'nope' has no best.pt.*best, broken-summary, cv/fold-1"):
        modal_env.pin_checkpoint(Settings(run="nope"), FakeVolume.from_folder(runs))


# -- the containers of a deploy ---------------------------------------------------------------------


@pytest.fixture
def modal_env(monkeypatch):
    """serve_modal with no AUDIO_CNN_* in this process's env (each test sets the container's)."""
    for key in [k for k in os.environ if k.startswith("AUDIO_CNN_")]:
        monkeypatch.delenv(key)
    import serve_modal

    return serve_modal


def deploy(serve_modal, runs, monkeypatch, **deploy_env) -> dict:
    """`modal deploy` over `runs` as the runs Volume; sets this process's env to what its containers get.

    The Volume is mounted at /runs in a container: here that mount is the folder itself.
    Returns the pin. AUDIO_CNN_GPU=none: this machine has no GPU (the GPU check has its own test).
    """
    settings = Settings.from_env({"AUDIO_CNN_GPU": "none", **deploy_env})
    pin = serve_modal.pin_checkpoint(settings, FakeVolume.from_folder(runs))
    for key, value in serve_modal.container_env(settings, pin).items():
        monkeypatch.setenv(key, value.replace(serve_modal.RUNS_MOUNT, str(runs), 1) if value.startswith("/runs") else value)
    return pin


def container(serve_modal):
    """A new container: the snapshot enter (CPU), the second enter, then the real app."""
    from fastapi.testclient import TestClient

    return TestClient(serve_modal.Server().web.local())


def test_a_container_serves_the_pinned_checkpoint_and_health_names_it(modal_env, runs, monkeypatch):
    pin = deploy(modal_env, runs, monkeypatch)
    client = container(modal_env)
    model = client.get("/health").json()["model"]
    assert model["checkpoint_id"] == pin["AUDIO_CNN_CHECKPOINT_ID"] and model["name"] == "AudioCNN (best)"
    assert model["trained"] is True
    r = client.post("/evaluate", json={"audio_data": base64.b64encode(wav_bytes(1.0)).decode(),
                                       "options": {"feature_maps": "none", "top_k": 2}})
    assert r.status_code == 200 and r.json()["model"]["checkpoint_id"] == pin["AUDIO_CNN_CHECKPOINT_ID"]
    assert len(r.json()["predictions"]) == 2


def test_a_better_run_trained_after_the_deploy_does_not_change_what_it_serves(modal_env, runs, tmp_path, monkeypatch):
    import shutil

    volume = Path(shutil.copytree(runs, tmp_path / "volume"))
    pin = deploy(modal_env, volume, monkeypatch)
    first = container(modal_env).get("/health").json()["model"]["checkpoint_id"]
    better = write_run(volume, "better", 0.99, seed=9)  # finished, and better than the pinned run
    later = container(modal_env).get("/health").json()["model"]["checkpoint_id"]  # a new container, same deploy
    assert first == later == pin["AUDIO_CNN_CHECKPOINT_ID"] != better
    assert deploy(modal_env, volume, monkeypatch)["AUDIO_CNN_CHECKPOINT_ID"] == better  # the next deploy


def test_a_container_refuses_to_start_when_the_pinned_file_changed(modal_env, runs, tmp_path, monkeypatch):
    import shutil

    volume = Path(shutil.copytree(runs, tmp_path / "volume"))
    deploy(modal_env, volume, monkeypatch, AUDIO_CNN_RUN="small")
    write_run(volume, "small", 0.99, seed=42)  # the pinned run trained again (--overwrite) after the deploy
    with pytest.raises(CheckpointError, match="was pinned: the file changed after the deploy.*Redeploy"):
        container(modal_env)


def test_a_named_cv_folder_pins_its_best_fold(modal_env, tmp_path, monkeypatch):
    write_run(tmp_path, "cv/fold-1", 0.70, seed=1)
    best = write_run(tmp_path, "cv/fold-2", 0.75, seed=2)
    pin = deploy(modal_env, tmp_path, monkeypatch, AUDIO_CNN_RUN="cv")
    assert pin["AUDIO_CNN_CHECKPOINT"] == "/runs/cv/fold-2/best.pt"
    assert container(modal_env).get("/health").json()["model"]["checkpoint_id"] == best


def test_an_untrained_deploy_serves_the_untrained_model_and_says_so(modal_env, tmp_path, monkeypatch):
    assert deploy(modal_env, tmp_path, monkeypatch, AUDIO_CNN_ALLOW_UNTRAINED="1") == {}
    write_run(tmp_path, "late", 0.9, seed=1)  # on the Volume after the deploy: not picked up
    model = container(modal_env).get("/health").json()["model"]
    assert model["trained"] is False and model["checkpoint_id"] is None


def test_a_container_without_a_pin_refuses_to_start(modal_env, runs, monkeypatch):
    monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(runs))
    monkeypatch.setenv("AUDIO_CNN_GPU", "none")
    with pytest.raises(modal_env.DeployError, match="No checkpoint was pinned"):
        container(modal_env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_container_without_cuda_fails_its_start(modal_env, runs, monkeypatch):
    deploy(modal_env, runs, monkeypatch)
    monkeypatch.setenv("AUDIO_CNN_GPU", "A10G")  # deployed for a GPU; this machine has no CUDA
    with pytest.raises(modal_env.DeployError, match="AUDIO_CNN_GPU=A10G but CUDA is not available"):
        container(modal_env)


def test_the_token_from_a_modal_secret_guards_everything_but_health(modal_env, runs, monkeypatch):
    deploy(modal_env, runs, monkeypatch)
    monkeypatch.setenv("AUDIO_CNN_TOKEN", "from-a-secret")  # what modal.Secret.from_name puts in the env
    client = container(modal_env)
    body = {"audio_data": base64.b64encode(wav_bytes(0.5)).decode(), "options": {"feature_maps": "none"}}
    assert client.get("/health").status_code == 200 and client.get("/health").json()["auth"] is True
    assert client.post("/evaluate", json=body).json()["error"]["code"] == "missing_token"
    wrong = client.post("/evaluate", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_token"
    assert client.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = client.post("/evaluate", json=body, headers={"Authorization": "Bearer from-a-secret"})
    assert ok.status_code == 200


def test_serve_settings_reach_the_app_in_the_container(modal_env, runs, monkeypatch):
    deploy(modal_env, runs, monkeypatch, AUDIO_CNN_MAX_AUDIO_SECONDS="2", AUDIO_CNN_CORS_ORIGINS="https://ok.example")
    client = container(modal_env)
    assert client.get("/health").json()["limits"]["max_audio_seconds"] == 2
    long = client.post("/evaluate", json={"audio_data": base64.b64encode(wav_bytes(3.0)).decode()})
    assert long.status_code == 413
    preflight = client.options("/evaluate", headers={"Origin": "https://ok.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://ok.example"


# -- batch classification on Modal ------------------------------------------------------------------


def test_classify_chunk_returns_one_row_per_file_with_the_checkpoint(modal_env, runs, monkeypatch):
    pin = deploy(modal_env, runs, monkeypatch)
    server = modal_env.Server()
    items = [("a.wav", wav_bytes(1.0)), ("bad.wav", b"nope" * 100), ("b.wav", wav_bytes(1.0, freq=900))]
    rows = server.classify_chunk.local(items, top_k=2)
    assert [(r["file"], r["status"]) for r in rows] == [("a.wav", "ok"), ("bad.wav", "error"), ("b.wav", "ok")]
    assert rows[1]["error"].startswith("not_audio: ")
    assert {r["checkpoint"] for r in rows} == {pin["AUDIO_CNN_CHECKPOINT_ID"]}
    assert server.model_info.local() == {"checkpoint": pin["AUDIO_CNN_CHECKPOINT_ID"], "name": "AudioCNN (best)",
                                         "trained": True}


def test_the_fan_out_keeps_each_chunks_own_error_and_a_rerun_retries_only_those(modal_env, runs, tmp_path, monkeypatch):
    """classify_to_csv with chunks on the container (`.local()`, as `.remote()` runs them), 3 in flight."""
    import csv

    from core.classify_folder import classify_to_csv

    pin = deploy(modal_env, runs, monkeypatch)
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(7):
        (folder / f"clip-{i}.wav").write_bytes(wav_bytes(0.5, freq=300 + 50 * i))
    (folder / "garbage.wav").write_bytes(b"\x00garbage" * 50)
    server = modal_env.Server()
    calls, failing = [], {"on": True}

    def remote(items):
        calls.append([name for name, _ in items])
        if "clip-3.wav" in calls[-1] and failing["on"]:  # the second chunk's container is lost
            raise RuntimeError("container lost")
        if "clip-6.wav" in calls[-1] and failing["on"]:
            raise TimeoutError("input timed out")
        return server.classify_chunk.local(items, top_k=2)

    out = tmp_path / "results.csv"
    checkpoint = pin["AUDIO_CNN_CHECKPOINT_ID"]
    tally = classify_to_csv(folder, out, remote, checkpoint=checkpoint, chunk_size=3, in_flight=3, progress=False)
    with open(out, newline="") as f:
        by_file = {r["file"]: r for r in csv.DictReader(f)}
    assert sorted(by_file) == sorted(p.name for p in folder.iterdir())  # every file once
    for name in ("clip-3.wav", "clip-4.wav", "clip-5.wav"):
        assert by_file[name]["error"] == "remote_error: RuntimeError: container lost"
    assert by_file["clip-6.wav"]["error"] == "remote_error: TimeoutError: input timed out"
    assert by_file["garbage.wav"]["error"] == "remote_error: TimeoutError: input timed out"  # its chunk's error
    assert (tally.ok, tally.errors) == (3, 5)

    calls.clear()
    failing["on"] = False
    again = classify_to_csv(folder, out, remote, checkpoint=checkpoint, chunk_size=3, in_flight=3, progress=False)
    assert sorted(sum(calls, [])) == ["clip-3.wav", "clip-4.wav", "clip-5.wav", "clip-6.wav", "garbage.wav"]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and (again.ok, again.errors, again.skipped) == (7, 1, 3)
    assert next(r for r in rows if r["file"] == "garbage.wav")["error"].startswith("not_audio")


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


def test_the_deployed_app_serves_the_stream_websocket(modal_env, runs, monkeypatch):
    import numpy as np

    deploy(modal_env, runs, monkeypatch)
    client = container(modal_env)
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
