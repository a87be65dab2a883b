"""core.checkpoint: atomic, self-describing, weights_only checkpoints with a stable content id."""

from __future__ import annotations

import os

import pytest
import torch

from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.features import FeatureConfig
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig

SMALL = ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 1))
NAMES = list(CLASSES[:5])


def small_model(seed: int = 0) -> AudioCNN:
    torch.manual_seed(seed)
    return AudioCNN(SMALL).eval()


def test_round_trip_keeps_weights_configs_classes_and_meta(tmp_path):
    model = small_model()
    fc = FeatureConfig(norm_mean=-30.0, norm_std=12.5)
    ckpt_id = save_checkpoint(tmp_path / "best.pt", model, fc, NAMES, meta={"epoch": 7, "run_name": "r1"},
                              extra={"optimizer": {"step": torch.tensor(3)}})
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt.id == ckpt_id and len(ckpt_id) == 12
    assert ckpt.model_config == SMALL and ckpt.feature_config == fc and ckpt.classes == NAMES
    assert ckpt.meta == {"epoch": 7, "run_name": "r1"}
    assert int(ckpt.extra["optimizer"]["step"]) == 3
    x = torch.randn(2, 1, 128, 40)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.build_model()(x), model(x))


def test_id_is_stable_for_the_same_weights_and_changes_with_them(tmp_path):
    a = save_checkpoint(tmp_path / "a.pt", small_model(0), FeatureConfig(), NAMES, meta={"epoch": 1})
    b = save_checkpoint(tmp_path / "b.pt", small_model(0), FeatureConfig(), NAMES, meta={"epoch": 99})
    c = save_checkpoint(tmp_path / "c.pt", small_model(1), FeatureConfig(), NAMES)
    d = save_checkpoint(tmp_path / "d.pt", small_model(0), FeatureConfig(norm_std=2.0), NAMES)
    assert a == b          # metadata does not change what the model predicts
    assert len({a, c, d}) == 3


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    save_checkpoint(tmp_path / "last.pt", small_model(), FeatureConfig(), NAMES)
    save_checkpoint(tmp_path / "last.pt", small_model(1), FeatureConfig(), NAMES)  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    first = save_checkpoint(path, small_model(0), FeatureConfig(), NAMES)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, small_model(1), FeatureConfig(), NAMES)
    monkeypatch.undo()
    assert load_checkpoint(path).id == first
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_a_truncated_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, small_model(), FeatureConfig(), NAMES)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="best.pt is not a readable audio-cnn checkpoint"):
        load_checkpoint(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_a_foreign_torch_file_is_refused(tmp_path):
    # (the seed's best_model.pth, {"model_state_dict", "classes"}, loads: tests/test_seed_checkpoint.py)
    path = tmp_path / "other.pth"
    torch.save({"state": small_model().state_dict(), "labels": NAMES}, path)
    with pytest.raises(CheckpointError, match="not an audio-cnn checkpoint .format None.*keys are state, labels"):
        load_checkpoint(path)


def test_a_pickled_object_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "audio-cnn/1", "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_class_count_must_match_the_model(tmp_path):
    path = tmp_path / "x.pt"
    save_checkpoint(path, small_model(), FeatureConfig(), NAMES)
    payload = torch.load(path, weights_only=True)
    payload["classes"] = NAMES[:3]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="names 3 classes but its model has 5"):
        load_checkpoint(path)
