"""core.training: it learns, it writes the run folder DESIGN.md describes, it resumes exactly."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from esc50_factory import class_sound, make_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import core.training as training
from core.checkpoint import load_checkpoint
from core.datasets import DatasetError
from core.inference import Predictor
from core.model import ModelConfig
from core.training import TrainConfig, TrainingError, cross_validate, pick_device, train

TAGS = ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr",
        "perf/epoch_seconds", "perf/samples_per_second", "hparam/best_val_accuracy"]
DETERMINISTIC = ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"]
SMALL = ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def esc50_small(tmp_path_factory) -> Path:
    """5 classes x 5 folds x 4 clips of 1 s in the ESC-50 layout (its feature cache is shared)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "ESC-50-master")


@pytest.fixture(scope="module")
def base(esc50_small, tmp_path_factory) -> TrainConfig:
    """The seed's recipe on the small dataset, with a small model and batches of 16."""
    return TrainConfig(data_dir=str(esc50_small), runs_dir=str(tmp_path_factory.mktemp("runs")),
                       batch_size=16, model=SMALL, progress=False)


@pytest.fixture(scope="module")
def learned(base):
    return train(replace(base, run_name="learned", epochs=20))


@pytest.fixture(scope="module")
def reference(base):
    """An uninterrupted 6-epoch run for the resume tests."""
    return train(replace(base, run_name="reference", epochs=6))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# -- learning and the run folder ------------------------------------------------------------


def test_training_learns_the_synthetic_classes(learned):
    assert learned.status == "finished" and learned.epochs_completed == 20
    assert learned.reported_accuracy >= 0.9          # fold 5 after the last epoch
    assert learned.best_val_accuracy >= 0.9


def test_run_folder_holds_events_config_summary_and_checkpoints(learned):
    names = sorted(p.name for p in learned.run_dir.iterdir())
    events = [n for n in names if n.startswith("events.out.tfevents.")]
    assert len(events) == 1
    assert sorted(set(names) - set(events)) == ["best.pt", "config.json", "embeddings.npz", "last.pt",
                                                "predictions.csv", "summary.json"]


def test_tensorboard_reads_every_tag_once_per_epoch(learned):
    found = scalars(learned.run_dir)
    for tag in TAGS:
        assert [step for step, _ in found[tag]] == list(range(1, 21)), tag
    assert [step for step, _ in found["hparam/reported_accuracy"]] == [20]
    assert found["hparam/reported_accuracy"][0][1] == pytest.approx(learned.reported_accuracy)
    assert all(v > 0 for _, v in found["perf/samples_per_second"])


def test_hparams_are_written_into_the_run_folder_itself(learned):
    assert not [p for p in learned.run_dir.iterdir() if p.is_dir()]
    acc = EventAccumulator(str(learned.run_dir))
    acc.Reload()
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = dict(data.session_start_info.hparams)
    assert hparams["epochs"].number_value == 20 and hparams["model.stem_channels"].number_value == 8


def test_summary_has_best_epoch_per_class_accuracy_confusion_and_protocol(learned):
    s = json.loads((learned.run_dir / "summary.json").read_text())
    assert s["status"] == "finished" and s["epochs_completed"] == 20
    assert 1 <= s["best_epoch"] <= 20 and s["best_val_accuracy"] == learned.best_val_accuracy
    assert list(s["per_class_accuracy"]) == ["dog", "rooster", "pig", "cow", "frog"]
    matrix = np.array(s["confusion_matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == 20           # fold 5: 5 classes x 4 clips
    assert np.trace(matrix) / 20 == pytest.approx(s["best_val_accuracy"])
    ev = s["evaluation"]
    assert ev["protocol"] == "fixed-schedule" and ev["report_fold"] == 5
    assert ev["reported_accuracy"] == s["final_val_accuracy"]
    assert "step = epoch" in s["step"]


def test_config_json_records_the_recipe_and_the_split(learned):
    c = json.loads((learned.run_dir / "config.json").read_text())
    assert (c["epochs"], c["batch_size"], c["max_lr"], c["label_smoothing"]) == (20, 16, 2e-3, 0.1)
    assert (c["mixup_prob"], c["freq_mask"], c["time_mask"]) == (0.3, 30, 80)
    assert c["train_folds"] == [1, 2, 3, 4] and c["val_fold"] == 5 and c["protocol"] == "fixed-schedule"
    assert c["data"]["train_clips"] == 80 and c["data"]["val_clips"] == 20
    assert c["environment"]["device"] == "cpu" and c["model"]["widths"] == [8, 16, 32, 64]


def test_defaults_are_the_seed_recipe():
    d = TrainConfig()
    assert (d.batch_size, d.lr, d.weight_decay, d.max_lr, d.pct_start) == (32, 5e-4, 0.01, 2e-3, 0.1)
    assert (d.label_smoothing, d.epochs, d.mixup_alpha, d.mixup_prob) == (0.1, 100, 0.2, 0.3)
    assert (d.freq_mask, d.time_mask, d.train_folds, d.val_fold) == (30, 80, (1, 2, 3, 4), 5)
    assert d.model == ModelConfig(num_classes=0)  # the seed's network; as many outputs as the data has classes


def test_summary_names_the_best_checkpoint_by_its_content_id(learned):
    summary = json.loads((learned.run_dir / "summary.json").read_text())
    assert summary["best_checkpoint_id"] == load_checkpoint(learned.run_dir / "best.pt").id


def test_best_checkpoint_serves_predictions(learned):
    predictor = Predictor.from_checkpoint(learned.run_dir / "best.pt")
    assert predictor.classes == ["dog", "rooster", "pig", "cow", "frog"]
    assert predictor.info.meta["epoch"] == learned.best_epoch
    rng = np.random.default_rng(123)
    clips = [class_sound(t, 5, 1.0, rng) for t in range(5) for _ in range(2)]
    labels = [predictor.analyze(c, top_k=1, feature_maps="none").predictions[0].label for c in clips]
    truth = [predictor.classes[t] for t in range(5) for _ in range(2)]
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 8


# -- resume ----------------------------------------------------------------------------------


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = scalars(a), scalars(b)
    for tag in DETERMINISTIC:
        assert sa[tag] == sb[tag], tag
    assert load_checkpoint(a / "last.pt").id == load_checkpoint(b / "last.pt").id
    assert load_checkpoint(a / "best.pt").id == load_checkpoint(b / "best.pt").id


def test_resume_after_epoch_k_ends_identical_to_an_uninterrupted_run(base, reference):
    stop = threading.Event()
    config = replace(base, run_name="stopped-after-2", epochs=6)
    first = train(config, stop=stop, on_epoch_end=lambda row: row.get("epoch") == 2 and stop.set())
    assert first.status == "stopped" and first.epochs_completed == 2
    assert json.loads((first.run_dir / "summary.json").read_text())["status"] == "stopped"
    resumed = train(config, resume=True)
    assert resumed.status == "finished" and resumed.epochs_completed == 6
    assert_same_run(reference.run_dir, resumed.run_dir)
    assert len(json.loads((resumed.run_dir / "config.json").read_text())["resumes"]) == 1


def test_resume_from_the_middle_of_an_epoch_ends_identical(base, reference, monkeypatch):
    stop = threading.Event()
    calls = {"n": 0}
    original = training.spec_augment

    def counting(*args, **kwargs):  # one call per training batch: stop during batch 3 of epoch 2
        calls["n"] += 1
        if calls["n"] == 5 + 3:
            stop.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "spec_augment", counting)
    config = replace(base, run_name="stopped-mid-epoch", epochs=6)
    first = train(config, stop=stop)
    monkeypatch.setattr(training, "spec_augment", original)
    assert first.status == "stopped" and first.epochs_completed == 1
    extra = load_checkpoint(first.run_dir / "last.pt").extra
    assert (extra["epoch"], extra["batch"]) == (2, 3)
    resumed = train(config)  # the same call again, as a Modal retry makes it: it continues
    assert resumed.status == "finished"
    assert_same_run(reference.run_dir, resumed.run_dir)


def test_a_run_killed_before_its_first_last_pt_starts_again(base, reference, monkeypatch):
    calls = {"n": 0}
    original = training.spec_augment

    def dying(*args, **kwargs):  # the process dies in batch 3 of epoch 1: summary.json exists, last.pt not
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "spec_augment", dying)
    config = replace(base, run_name="killed-in-epoch-1", epochs=6)
    with pytest.raises(SystemExit):
        train(config)
    monkeypatch.setattr(training, "spec_augment", original)
    run_dir = Path(base.runs_dir) / "killed-in-epoch-1"
    assert (run_dir / "summary.json").exists() and not (run_dir / "last.pt").exists()
    again = train(config)
    assert again.status == "finished"
    assert_same_run(reference.run_dir, again.run_dir)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # the dead attempt's events are gone


def test_resume_without_last_pt_names_the_run(base):
    with pytest.raises(TrainingError, match="Cannot resume run 'never-started'"):
        train(replace(base, run_name="never-started"), resume=True)


def test_a_finished_run_is_refused_with_the_flag_that_overrides_it(base, reference):
    with pytest.raises(TrainingError, match="'reference' .* is finished: pass --overwrite"):
        train(replace(base, run_name="reference", epochs=6))


def test_overwrite_trains_a_finished_run_again_from_scratch(base, reference, tmp_path):
    import shutil

    copy = Path(base.runs_dir) / "overwritten"
    shutil.copytree(reference.run_dir, copy)
    (copy / "notes.txt").write_text("a user's file")
    again = train(replace(base, run_name="overwritten", epochs=6), overwrite=True)
    assert again.status == "finished"
    assert_same_run(reference.run_dir, copy)
    assert len(list(copy.glob("events.out.tfevents.*"))) == 1  # the old run's events were removed
    assert json.loads((copy / "config.json").read_text())["resumes"] == []
    assert (copy / "notes.txt").exists()  # only the run's own files are cleared


# -- protocols -------------------------------------------------------------------------------


def test_holdout_selects_on_one_fold_and_reports_another(base):
    result = train(replace(base, run_name="holdout", epochs=6, train_folds=(1, 2, 3), val_fold=4, test_fold=5))
    s = result.summary
    ev = s["evaluation"]
    assert (ev["protocol"], ev["selection_fold"], ev["report_fold"]) == ("holdout", 4, 5)
    assert ev["reported_accuracy"] == s["test"]["accuracy"] == result.reported_accuracy
    meta = load_checkpoint(result.run_dir / "best.pt").meta
    assert meta["val_fold"] == 4 and meta["test_accuracy"] == s["test"]["accuracy"]
    assert "test/accuracy" not in scalars(result.run_dir)  # the reported fold never steers training


def test_cross_validation_trains_every_fold_and_reports_the_mean(base):
    result = cross_validate(replace(base, run_name="cv", epochs=4))
    assert result["status"] == "finished" and result["protocol"] == "5-fold-cv"
    assert list(result["fold_accuracy"]) == [f"fold-{k}" for k in range(1, 6)]
    assert result["reported_accuracy"] == pytest.approx(np.mean(list(result["fold_accuracy"].values())))
    parent = Path(base.runs_dir) / "cv"
    assert json.loads((parent / "cv_summary.json").read_text())["reported_accuracy"] == result["reported_accuracy"]
    for k in range(1, 6):
        s = json.loads((parent / f"fold-{k}" / "summary.json").read_text())
        assert s["evaluation"]["report_fold"] == k and s["evaluation"]["train_folds"] == [f for f in range(1, 6) if f != k]


def test_a_finished_cross_validation_is_refused_then_overwritten(base):
    config = replace(base, run_name="cv-again", epochs=3)
    first = cross_validate(config)
    parent = Path(base.runs_dir) / "cv-again"
    before = {k: (parent / f"fold-{k}" / "best.pt").stat().st_mtime_ns for k in range(1, 6)}
    with pytest.raises(TrainingError, match="'cv-again' .* is finished: pass --overwrite"):
        cross_validate(config)
    again = cross_validate(config, overwrite=True)
    assert again["status"] == "finished" and again["fold_accuracy"] == first["fold_accuracy"]  # same seed
    for k in range(1, 6):
        assert (parent / f"fold-{k}" / "best.pt").stat().st_mtime_ns != before[k]
        assert len(list((parent / f"fold-{k}").glob("events.out.tfevents.*"))) == 1


# -- refusing to start -----------------------------------------------------------------------


def _missing_file(root: Path) -> str:
    victim = sorted((root / "audio").iterdir())[4]
    victim.unlink()
    return f"audio/{victim.name}"


def _bad_csv(root: Path) -> str:
    path = root / "meta" / "esc50.csv"
    path.write_text(path.read_text().replace("filename,fold,target", "file,fold,target", 1))
    return "lacks the column(s) filename"


def _wrong_class_count(root: Path) -> str:
    path = root / "meta" / "esc50.csv"
    lines = path.read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if not line.split(",")[0].endswith("-4.wav")]
    path.write_text("\n".join(keep) + "\n")
    return "has 4 classes (targets 0-3) but 5 were expected"


@pytest.mark.parametrize("damage", [_missing_file, _bad_csv, _wrong_class_count])
def test_a_broken_dataset_fails_before_the_first_epoch(damage, esc50_small, base, tmp_path):
    root = Path(shutil.copytree(esc50_small, tmp_path / "ESC-50-master",
                                ignore=shutil.ignore_patterns(".feature-cache")))
    message = damage(root)
    config = replace(base, data_dir=str(root), runs_dir=str(tmp_path / "runs"), run_name="broken", epochs=6)
    with pytest.raises(DatasetError) as err:
        train(config)
    assert message in str(err.value)
    assert not (tmp_path / "runs").exists()  # no run folder, no event file: nothing was trained


def test_too_few_steps_for_the_schedule_is_refused_with_a_reason(base):
    with pytest.raises(TrainingError, match="too few steps"):
        train(replace(base, run_name="short", epochs=1))


def test_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if not torch.backends.mps.is_available():
        assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
