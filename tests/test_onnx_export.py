"""ONNX export: onnxruntime gives what PyTorch gives on real clips (top-1 equal, probabilities within a derived bound)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_factory import encode
from conftest import ROOT
from esc50_factory import class_sound

from core.audio import decode_audio
from core.checkpoint import save_checkpoint
from core.features import FeatureConfig, LogMel
from core.inference import Predictor, calibrate_batchnorm
from core.model import AudioCNN, ModelConfig

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CONFIG = ModelConfig(num_classes=4, stem_channels=16, widths=(16, 32, 64, 64), depths=(2, 1, 1, 1))
CLASSES = ["drill", "hammer", "saw", "sander"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from core.onnx_export import export_onnx

    torch.manual_seed(1)
    model = AudioCNN(CONFIG)
    calibrate_batchnorm(model, LogMel(FeatureConfig()))
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("onnx")
    save_checkpoint(folder / "best.pt", model, FeatureConfig(), CLASSES, {"run_name": "tools"})
    export_onnx(folder / "best.pt", folder / "model.onnx")
    return folder / "best.pt", folder / "model.onnx"


def real_clips() -> list[np.ndarray]:
    """WAV files of four kinds of sound at several lengths, decoded the way the server decodes uploads."""
    rng = np.random.default_rng(3)
    return [decode_audio(encode(class_sound(c, 4, seconds, rng))).samples
            for c, seconds in [(0, 5.0), (1, 2.0), (2, 5.0), (3, 0.7), (1, 8.0)]]


def tolerance(model: AudioCNN, logits: np.ndarray) -> float:
    """How far float32 engines may disagree on these probabilities.

    Each layer's outputs are sums of K = in_channels x kernel area products
    (and BatchNorm/ReLU, exact or one rounding). Two engines sum in different
    orders; the difference of two such float32 sums is bounded by
    ~2 K 2^-24 of the sum of magnitudes in the worst case and grows like
    sqrt(K) 2^-24 typically. Over L layers the relative error of the logits
    stays below L * K_max * 2^-24 (the worst case, taken here), times the
    largest logit. A softmax moves a probability by at most 1/2 of the largest
    change of a logit difference, so that bounds the probabilities too.
    """
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    k_max = max(m.weight[0].numel() for m in convs)
    return len(convs) * k_max * 2.0 ** -24 * max(1.0, float(np.abs(logits).max()))


def test_onnxruntime_matches_pytorch_on_real_clips(exported):
    ckpt_path, onnx_path = exported
    predictor = Predictor.from_checkpoint(ckpt_path, device="cpu")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logmel = LogMel(FeatureConfig())
    for clip in real_clips():
        with torch.inference_mode():
            spec = logmel(torch.from_numpy(clip)).unsqueeze(1)          # (1, 1, 128, frames)
            logits = predictor.model(spec).numpy()
        torch_probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()[0]
        onnx_probs = session.run(["probabilities"], {"logmel": spec.numpy()})[0][0]
        tol = tolerance(predictor.model, logits)
        assert tol < 0.05  # the bound is tight enough to mean something
        assert np.max(np.abs(onnx_probs - torch_probs)) <= tol
        top2 = np.sort(torch_probs)[-2:]
        if top2[1] - top2[0] > 2 * tol:  # a top-1 that rounding cannot flip must be the same
            assert int(np.argmax(onnx_probs)) == int(np.argmax(torch_probs))


def test_the_file_carries_classes_features_and_id(exported):
    from core.checkpoint import load_checkpoint
    from core.onnx_export import read_metadata

    ckpt_path, onnx_path = exported
    meta = read_metadata(onnx_path)
    assert meta["classes"] == CLASSES and meta["feature_config"] == FeatureConfig().to_dict()
    assert meta["checkpoint_id"] == load_checkpoint(ckpt_path).id


def test_batch_and_length_are_dynamic(exported):
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    for shape in [(3, 1, 128, 87), (1, 1, 128, 700)]:
        out = session.run(["probabilities"], {"logmel": np.zeros(shape, np.float32)})[0]
        assert out.shape == (shape[0], 4) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_the_export_command_refuses_a_non_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "core.onnx_export", str(bad), str(tmp_path / "x.onnx")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a readable audio-cnn checkpoint" in done.stderr
    assert not (tmp_path / "x.onnx").exists()
