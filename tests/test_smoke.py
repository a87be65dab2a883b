"""core.smoke against real servers on 127.0.0.1 (`python serve_modal.py --local`): what it passes and fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, free_port, start_process, stop_process

from core.checkpoint import save_checkpoint
from core.features import FeatureConfig
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig


@pytest.fixture(scope="module")
def checkpoint_id(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    model = AudioCNN(ModelConfig(num_classes=10, stem_channels=16, widths=(16, 32), depths=(1, 1)))
    return runs, save_checkpoint(runs / "baseline" / "best.pt", model, FeatureConfig(), list(CLASSES[:10]),
                                 meta={"run_name": "baseline"})


def serve(*args: str, env: dict | None = None):
    port = free_port()
    proc = start_process([sys.executable, "serve_modal.py", "--local", "--port", str(port), *args],
                         f"http://127.0.0.1:{port}/health", {"AUDIO_CNN_TOKEN": "", "AUDIO_CNN_CHECKPOINT": "",
                                                             "AUDIO_CNN_RUN": "", **(env or {})})
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def trained(checkpoint_id):
    runs, _ = checkpoint_id
    proc, url = serve("--token", "t0k", env={"AUDIO_CNN_RUNS_DIR": str(runs)})
    yield url
    stop_process(proc)


def smoke(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIO_CNN_")}
    return subprocess.run([sys.executable, "-m", "core.smoke", *args, "--timeout", "60"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def test_a_healthy_deploy_of_the_expected_checkpoint_passes_every_check(trained, checkpoint_id):
    out = smoke(trained, "--token", "t0k", "--expect-checkpoint", checkpoint_id[1])
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("health", "checkpoint", "auth", "analyze", "bad input"):
        assert f"PASS  {name}" in out.stdout
    assert "a wrong token got 401" in out.stdout and "5/5 checks passed" in out.stdout


def test_another_checkpoint_than_expected_fails(trained, checkpoint_id):
    out = smoke(trained, "--token", "t0k", "--expect-checkpoint", "ffffffffffff")
    assert out.returncode == 1 and "FAIL  checkpoint" in out.stdout
    assert f"checkpoint {checkpoint_id[1]}, expected ffffffffffff" in out.stdout


def test_a_wrong_token_fails_the_analysis(trained, checkpoint_id):
    out = smoke(trained, "--token", "nope", "--expect-checkpoint", checkpoint_id[1])
    assert out.returncode == 1 and "FAIL  analyze" in out.stdout and "401" in out.stdout


def test_an_untrained_server_fails_unless_untrained_is_expected(tmp_path):
    proc, url = serve(env={"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")})
    try:
        refused = smoke(url)
        allowed = smoke(url, "--allow-untrained")
    finally:
        stop_process(proc)
    assert refused.returncode == 1 and "FAIL  checkpoint" in refused.stdout and "UNTRAINED" in refused.stdout
    assert allowed.returncode == 0, allowed.stdout
    assert "skipped: no token here and none checked by the server" in allowed.stdout


def test_no_server_fails_the_health_check_and_stops():
    out = subprocess.run([sys.executable, "-m", "core.smoke", f"http://127.0.0.1:{free_port()}", "--timeout", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "FAIL  health" in out.stdout and "0/1 checks passed" in out.stdout
