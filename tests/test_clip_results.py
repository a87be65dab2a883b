"""core.clip_results: predictions.csv and embeddings.npz from training, and from the command for any checkpoint."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from esc50_factory import make_dataset

from core.checkpoint import load_checkpoint
from core.clip_results import COLUMNS, read_predictions
from core.model import ModelConfig
from core.training import TrainConfig, cross_validate, train

SMALL = ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ESC-50-master")


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> TrainConfig:
    # No feature cache: training and the command then decode the same float32 features.
    return TrainConfig(data_dir=str(data), runs_dir=str(tmp_path_factory.mktemp("runs")), batch_size=16,
                       model=SMALL, progress=False, feature_cache=False)


@pytest.fixture(scope="module")
def fixed(base):
    return train(replace(base, run_name="fixed", epochs=8))


@pytest.fixture(scope="module")
def holdout(base):
    return train(replace(base, run_name="holdout", epochs=6, train_folds=(1, 2, 3), val_fold=4, test_fold=5))


def test_predictions_csv_has_a_row_per_clip_of_the_reported_fold_with_class_names(fixed, data):
    table = read_predictions(fixed.run_dir / "predictions.csv")
    meta = pd.read_csv(data / "meta" / "esc50.csv")
    fold5 = meta[meta["fold"] == 5]
    assert list(table.columns) == COLUMNS
    assert list(table["file"]) == list(fold5["filename"]) and set(table["fold"]) == {5}
    assert list(table["target"]) == list(fold5["category"])
    assert (table["predicted"] == table["top1"]).all() and (table["confidence"] == table["p1"]).all()
    assert set(table["predicted"]) <= set(meta["category"])


def test_its_accuracy_is_the_number_the_run_reports(fixed):
    table = read_predictions(fixed.run_dir / "predictions.csv")
    assert (table["predicted"] == table["target"]).mean() == fixed.reported_accuracy


def test_loss_is_the_cross_entropy_of_the_true_class_and_top5_is_sorted(fixed):
    table = read_predictions(fixed.run_dir / "predictions.csv")
    right = table[table["predicted"] == table["target"]]
    np.testing.assert_allclose(right["loss"], -np.log(right["confidence"]), rtol=1e-12)
    p = table[[f"p{k}" for k in range(1, 6)]].to_numpy()
    assert (np.diff(p, axis=1) <= 0).all() and np.allclose(p.sum(axis=1), 1.0)  # 5 classes: all of them


def test_embeddings_are_the_features_the_classifier_reads(fixed):
    emb = np.load(fixed.run_dir / "embeddings.npz")
    table = read_predictions(fixed.run_dir / "predictions.csv")
    assert list(emb["files"]) == list(table["file"]) and emb["embeddings"].shape == (len(table), 64)
    fc = load_checkpoint(fixed.run_dir / "last.pt").model_state  # the weights after the last epoch
    logits = torch.from_numpy(emb["embeddings"]) @ fc["fc.weight"].T + fc["fc.bias"]
    probs = torch.softmax(logits.double(), dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose(probs, table["confidence"], rtol=0, atol=1e-5)  # float32 sums in another order


def test_holdout_writes_the_test_fold_as_predicted_by_best_pt(holdout):
    table = read_predictions(holdout.run_dir / "predictions.csv")
    assert set(table["fold"]) == {5}
    assert (table["predicted"] == table["target"]).mean() == holdout.reported_accuracy  # best.pt on fold 5


def test_the_command_recomputes_the_same_results_for_any_checkpoint(holdout, data, tmp_path):
    out = subprocess.run([sys.executable, "-m", "core.clip_results", str(holdout.run_dir / "best.pt"),
                          "--data-dir", str(data), "--fold", "5", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    again, trained = read_predictions(tmp_path / "predictions.csv"), read_predictions(holdout.run_dir / "predictions.csv")
    assert list(again["file"]) == list(trained["file"]) and list(again["predicted"]) == list(trained["predicted"])
    np.testing.assert_allclose(again["confidence"], trained["confidence"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "embeddings.npz")["embeddings"],
                               np.load(holdout.run_dir / "embeddings.npz")["embeddings"], rtol=1e-4, atol=1e-5)


def test_the_command_refuses_a_dataset_the_checkpoint_does_not_fit(holdout, tmp_path):
    other = make_dataset(tmp_path / "seven", num_classes=7, clips_per_fold=1)
    out = subprocess.run([sys.executable, "-m", "core.clip_results", str(holdout.run_dir / "best.pt"),
                          "--data-dir", str(other)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "7 classes" in out.stderr and "Traceback" not in out.stderr


def test_every_cross_validation_fold_gets_its_own_predictions(base):
    cross_validate(replace(base, run_name="cv", epochs=3))
    for k in range(1, 6):
        assert set(read_predictions(Path(base.runs_dir) / "cv" / f"fold-{k}" / "predictions.csv")["fold"]) == {k}


@pytest.mark.parametrize("content, words", [
    ("file,fold\na.wav,1\n", "lacks the columns target, predicted, confidence, loss"),
    ("\x00\xff\xfe garbage", "cannot be read|lacks the columns"),
])
def test_a_damaged_predictions_csv_is_refused_with_a_reason(tmp_path, content, words):
    path = tmp_path / "predictions.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=words):
        read_predictions(path)


def test_an_oversized_predictions_csv_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "predictions.csv"
    with open(path, "wb") as f:
        f.truncate(21 * 2**20)  # sparse: 21 MB of zeros without writing them
    with pytest.raises(ValueError, match="larger than 20 MB"):
        read_predictions(path)


def test_embeddings_name_the_weights_that_computed_them(fixed, holdout):
    """The Embeddings page places a clip only when the backend serves these weights: the ids must be real."""
    assert str(np.load(fixed.run_dir / "embeddings.npz")["checkpoint_id"]) == load_checkpoint(fixed.run_dir / "last.pt").id
    assert str(np.load(holdout.run_dir / "embeddings.npz")["checkpoint_id"]) == load_checkpoint(holdout.run_dir / "best.pt").id
