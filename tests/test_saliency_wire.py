"""The saliency option over HTTP: JSON and f16 encodings, a real server against the in-process backend."""

from __future__ import annotations

import base64
import sys

import numpy as np
import pytest
import requests
import torch
from audio_factory import tone, wav_bytes
from conftest import free_port, start_process, stop_process

from core.checkpoint import save_checkpoint
from core.client import BackendError, HttpBackend, LocalBackend
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig
from core.schema import decode_array

F16_STEP = 2.0 ** -11  # float16's spacing just below 1: the most rounding can move a value in [0, 1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(7)
    model = AudioCNN(ModelConfig(num_classes=10, stem_channels=8, widths=(8, 16, 16), depths=(1, 1, 1)))
    path = tmp_path_factory.mktemp("ckpt") / "small" / "best.pt"
    save_checkpoint(path, model, FeatureConfig(), list(CLASSES[:10]), meta={"run_name": "small"})
    return path


@pytest.fixture(scope="module")
def server(checkpoint):
    port = free_port()
    proc = start_process([sys.executable, "-m", "core.server", "--port", str(port), "--checkpoint", str(checkpoint)],
                         f"http://127.0.0.1:{port}/health", {"AUDIO_CNN_TOKEN": "", "AUDIO_CNN_BATCH_MAX": "1"})
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)


@pytest.fixture(scope="module")
def local(checkpoint):
    return LocalBackend(Predictor.from_checkpoint(checkpoint, device="cpu"))


def post(server, **options):
    body = {"audio_data": base64.b64encode(wav_bytes(1.0)).decode(), "options": {"feature_maps": "none", **options}}
    return requests.post(f"{server}/evaluate", json=body, timeout=120)


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_json_and_f16_carry_the_same_map_on_the_spectrogram_grid(server, method):
    plain = post(server, saliency=method, saliency_target="rooster")
    packed = post(server, saliency=method, saliency_target="rooster", encoding="f16")
    assert plain.status_code == 200 and packed.status_code == 200, plain.text + packed.text
    a, b = plain.json()["saliency"], packed.json()["saliency"]
    assert {k: a[k] for k in ("method", "target", "layer")} == {"method": method, "target": "rooster",
                                                                "layer": "layer4" if method == "gradcam" else "input"}
    assert "values" in a and "data" in b and "values" not in b
    assert a["shape"] == b["shape"] == plain.json()["input_spectogram"]["shape"]
    values = decode_array(a)
    assert values.min() >= 0 and values.max() == 1
    np.testing.assert_allclose(decode_array(b), values, rtol=0, atol=F16_STEP)


def test_without_the_option_there_is_no_saliency_field(server):
    assert "saliency" not in post(server).json()


@pytest.mark.parametrize("options, code", [
    ({"saliency": "gradcam", "saliency_target": "unicorn"}, "bad_option"),
    ({"saliency": "gradcam", "saliency_layer": "layer7"}, "bad_option"),
    ({"saliency": "smoothgrad"}, "invalid_request"),
    ({"saliency": "gradcam", "saliency_target": "x" * 65}, "invalid_request"),
])
def test_a_bad_saliency_option_is_a_422_and_the_server_keeps_serving(server, options, code):
    r = post(server, **options)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert post(server, saliency="gradcam").status_code == 200


def test_the_endpoint_and_the_in_process_backend_give_the_same_map(server, local):
    data = wav_bytes(1.0, freq=880.0)
    options = {"feature_maps": "none", "saliency": "integrated_gradients", "saliency_target": "dog"}
    remote = HttpBackend(server).analyze(data, **options).saliency
    here = local.analyze(data, **options).saliency
    assert (remote.method, remote.target, remote.layer) == (here.method, here.target, here.layer)
    # f16 on the wire, plus float32 sums that another thread count may order differently
    np.testing.assert_allclose(remote.values, here.values, rtol=0, atol=F16_STEP + 1e-4)


def test_the_in_process_backend_refuses_a_bad_target_like_the_server(local):
    with pytest.raises(BackendError) as err:
        local.analyze(wav_bytes(1.0), saliency="gradcam", saliency_target="unicorn")
    assert err.value.status == 422 and "GET /classes" in err.value.message


def test_a_30_s_clip_is_explained_one_path_point_per_pass(local):
    """Integrated Gradients runs its path in chunks of at most four 5 s clips' frames: a 30 s clip
    takes one point per pass, and still gets a map for its whole spectrogram."""
    result = local.predictor.analyze(tone(30.0), feature_maps="none", saliency="integrated_gradients")
    assert result.saliency.values.shape == result.spectrogram.shape == (128, 2584)
    assert result.saliency.values.max() == 1
