"""The seed's best_model.pth: loaded wherever a checkpoint is, predicting exactly what the original does.

The seed-format file is built the way the seed's train.py saved one: a real
checkpoint's state dict with the stem renamed to the seed's nn.Sequential
indices (layer1.0 = conv, layer1.1 = BatchNorm) and its fc rows permuted into
alphabetical class order, saved as {"model_state_dict", "classes", "accuracy",
"epoch"}. A reference model written the seed's way (an nn.Sequential stem)
loads that state dict strictly, so the mapping is checked against independent code.
"""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from audio_factory import encode, tone
from conftest import ROOT
from torch import nn

from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.features import FeatureConfig, LogMel
from core.inference import Predictor, calibrate_batchnorm
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig

CONFIG = ModelConfig(num_classes=50, stem_channels=16, widths=(16, 32, 32, 64), depths=(2, 1, 2, 1))


class SeedBlock(nn.Module):
    """The seed's residual block (the same names as ours)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.use_shortcut = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if self.use_shortcut else nn.Sequential()

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (self.shortcut(x) if self.use_shortcut else x))


class SeedModel(nn.Module):
    """The seed's network: a Sequential stem (layer1.0 conv, layer1.1 BN), stages layer2..5, fc."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, c.stem_channels, 7, 2, 3, bias=False), nn.BatchNorm2d(c.stem_channels),
                                    nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        cin = c.stem_channels
        for s, (w, d) in enumerate(zip(c.widths, c.depths, strict=True)):
            setattr(self, f"layer{s + 2}", nn.ModuleList(
                [SeedBlock(cin if i == 0 else w, w, 2 if i == 0 and s > 0 else 1) for i in range(d)]))
            cin = w
        self.avgpool, self.dropout, self.fc = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.5), nn.Linear(cin, c.num_classes)

    def forward(self, x):
        x = self.layer1(x)
        for s in range(2, 6):
            for block in getattr(self, f"layer{s}"):
                x = block(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A real audio-cnn checkpoint (seeded weights, BatchNorm statistics set from audio) in ESC-50 order."""
    torch.manual_seed(0)
    model = AudioCNN(CONFIG)
    calibrate_batchnorm(model, LogMel(FeatureConfig()))
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.5)  # spread the probabilities: a permutation mistake cannot hide
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, FeatureConfig(), CLASSES, {"run_name": "orig"})
    return path


def seed_payload(ckpt) -> dict:
    """What the seed's train.py saved for this model: stem renamed, fc rows in alphabetical class order."""
    alphabetical = sorted(CLASSES)
    order = torch.tensor([list(CLASSES).index(c) for c in alphabetical])
    state = OrderedDict()
    for key, value in ckpt.model_state.items():
        key = key.replace("layer1.conv.", "layer1.0.").replace("layer1.bn.", "layer1.1.")
        state[key] = value[order] if key.startswith("fc.") else value
    return {"model_state_dict": state, "classes": alphabetical, "accuracy": 81.5, "epoch": 97}


@pytest.fixture(scope="module")
def seed_file(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "best_model.pth"
    torch.save(seed_payload(load_checkpoint(original)), path)
    return path


CLIPS = [tone(5.0, freq=f, seed=i) for i, f in enumerate((220.0, 1000.0, 3500.0))] + \
        [np.random.default_rng(9).standard_normal(44100 * 3).astype(np.float32) * 0.2]


def test_a_seed_file_loads_as_the_very_same_model(original, seed_file):
    ours, seed = load_checkpoint(original), load_checkpoint(seed_file)
    assert seed.classes == list(CLASSES) and seed.model_config == CONFIG
    assert seed.id == ours.id  # renamed and reordered back exactly: the same content hash
    assert seed.meta["seed_accuracy"] == 81.5 and seed.meta["seed_epoch"] == 97


def test_it_predicts_exactly_what_the_original_does(original, seed_file):
    a = Predictor.from_checkpoint(original, device="cpu")
    b = Predictor.from_checkpoint(seed_file, device="cpu")
    for clip in CLIPS:
        pa, pb = a.analyze(clip, top_k=50, feature_maps="none"), b.analyze(clip, top_k=50, feature_maps="none")
        assert [(p.label, p.confidence) for p in pa.predictions] == [(p.label, p.confidence) for p in pb.predictions]


def test_it_gives_the_seeds_own_predictions(seed_file):
    """The seed's network, loading its own file strictly, gives each class name the same probability.

    Both compute the same float32 operations in the same order except the
    final softmax, which sees the 50 logits permuted: its max and sum are then
    reduced in another order. Each reduction step rounds by at most 2^-24
    relative, so 50 terms differ by at most ~50 * 2^-24 ~ 3e-6 relative; the
    probabilities are <= 1, so 1e-5 absolute bounds that with room.
    """
    payload = torch.load(seed_file, weights_only=True)
    reference = SeedModel(CONFIG).eval()
    reference.load_state_dict(payload["model_state_dict"], strict=True)
    ours = Predictor.from_checkpoint(seed_file, device="cpu")
    logmel = LogMel(FeatureConfig())
    for clip in CLIPS:
        with torch.inference_mode():
            seed_probs = torch.softmax(reference(logmel(torch.from_numpy(clip)).unsqueeze(1)), dim=1)[0].numpy()
        mine = {p.label: p.confidence for p in ours.analyze(clip, top_k=50, feature_maps="none").predictions}
        theirs = dict(zip(payload["classes"], seed_probs.tolist(), strict=True))
        assert max(theirs, key=theirs.get) == max(mine, key=mine.get)
        assert max(abs(mine[c] - theirs[c]) for c in CLASSES) <= 1e-5


def test_the_server_serves_a_seed_file_named_by_the_setting(seed_file, original, monkeypatch):
    from core.settings import Settings

    monkeypatch.setenv("AUDIO_CNN_CHECKPOINT", str(seed_file))
    predictor = Predictor.from_settings(Settings.from_env(), device="cpu")
    assert predictor.info.checkpoint_id == load_checkpoint(original).id and predictor.info.trained


def test_the_convert_command_writes_our_format(seed_file, original, tmp_path):
    out = tmp_path / "runs" / "seed" / "best.pt"
    done = subprocess.run([sys.executable, "-m", "core.seed_checkpoint", str(seed_file), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "audio-cnn/1" and "layer1.conv.weight" in payload["model_state"]
    assert payload["id"] == load_checkpoint(original).id and f"checkpoint {payload['id']}" in done.stdout


def test_fine_tuning_starts_from_a_seed_file(seed_file):
    from core.fine_tune import load_parent, start_from

    parent, config = load_parent(seed_file, ("a", "b"), dropout=0.5)
    model = AudioCNN(config)
    record = start_from(model, parent, ("a", "b"), seed_file)
    assert record["head"] == "replaced" and record["source"] == "seed best_model.pth"
    assert torch.equal(model.layer1.conv.weight, parent.model_state["layer1.conv.weight"])


def test_a_state_dict_of_another_architecture_is_refused_naming_the_keys(tmp_path, original):
    state = seed_payload(load_checkpoint(original))
    state["model_state_dict"]["layer3.0.conv3.weight"] = torch.zeros(1)
    del state["model_state_dict"]["layer2.0.bn1.running_mean"]
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"another architecture than AudioCNN: missing: "
                                              r"layer2.0.bn1.running_mean; unexpected: layer3.0.conv3.weight"):
        load_checkpoint(path)


def test_a_foreign_network_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "vgg.pth"
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2))
    torch.save({"model_state_dict": net.state_dict(), "classes": ["a", "b"]}, path)
    with pytest.raises(CheckpointError, match=r"another architecture than AudioCNN: missing: layer1.conv.weight.*"
                                              r"unexpected: 0.weight, 0.bias, 1.weight, 1.bias"):
        load_checkpoint(path)


def test_a_bare_state_dict_says_what_it_lacks(tmp_path, original):
    path = tmp_path / "bare.pth"
    torch.save(seed_payload(load_checkpoint(original))["model_state_dict"], path)
    with pytest.raises(CheckpointError, match="bare state dict of this architecture without class names"):
        load_checkpoint(path)


def test_seed_classes_must_match_its_fc_rows(tmp_path, original):
    payload = seed_payload(load_checkpoint(original))
    payload["classes"] = payload["classes"][:10]
    path = tmp_path / "short.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="names 10 classes but its fc layer has 50 rows"):
        load_checkpoint(path)


def test_an_encoded_clip_round_trips_through_the_seed_model(seed_file):
    """The full path a user takes: a WAV file's bytes, decoded, classified with the seed's checkpoint."""
    predictor = Predictor.from_checkpoint(seed_file, device="cpu")
    result = predictor.analyze_bytes(encode(CLIPS[0]), top_k=3, feature_maps="none")
    assert len(result.predictions) == 3 and all(p.label in CLASSES for p in result.predictions)
