"""core.checkpoint's one policy: which checkpoint every entry point loads, CV folders included."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from audio_factory import wav_bytes
from conftest import ROOT
from volume_factory import FakeVolume

from core.checkpoint import (
    CheckpointError,
    RunCheckpoint,
    choose_run,
    list_run_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from core.client import make_backend
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig
from core.settings import Settings

TINY = ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 1))


def write_run(runs: Path, name: str, accuracy: float | None, status: str = "finished", seed: int = 0,
              age_s: float = 0.0) -> str:
    """runs/<name>/best.pt (a tiny model) and its summary.json, as training writes them; returns the id."""
    torch.manual_seed(seed)
    folder = runs / name
    checkpoint_id = save_checkpoint(folder / "best.pt", AudioCNN(TINY), FeatureConfig(), list(CLASSES[:5]),
                                    meta={"run_name": name})
    (folder / "summary.json").write_text(json.dumps({"status": status, "best_val_accuracy": accuracy,
                                                     "best_checkpoint_id": checkpoint_id}))
    when = time.time() - age_s
    os.utime(folder / "best.pt", (when, when))
    return checkpoint_id


def candidate(run: str, accuracy, status="finished", mtime=0.0) -> RunCheckpoint:
    return RunCheckpoint(run, {"status": status, "best_val_accuracy": accuracy}, mtime)


# -- the rule ---------------------------------------------------------------------------------


def test_the_highest_validation_accuracy_wins_among_finished_runs():
    runs = [candidate("a", 0.61), candidate("b", 0.83), candidate("c", 0.70)]
    assert choose_run(runs).run == "b"


def test_a_finished_run_wins_over_a_better_unfinished_one():
    assert choose_run([candidate("done", 0.60), candidate("live", 0.95, status="running")]).run == "done"
    assert choose_run([candidate("live", 0.95, status="running"), candidate("older", 0.5, "stopped")]).run == "live"


def test_runs_without_a_readable_number_come_last_newest_first():
    runs = [RunCheckpoint("old", {"status": "finished"}, 1.0), RunCheckpoint("new", {"status": "finished"}, 2.0),
            candidate("nan", float("nan"), mtime=3.0), candidate("scored", 0.1, mtime=0.0)]
    assert choose_run(runs).run == "scored"
    assert choose_run(runs[:3]).run == "nan"  # nan is no number: the newest of the unscored
    assert choose_run(runs[:2]).run == "new"


def test_a_named_cross_validation_folder_resolves_to_its_best_fold():
    runs = [candidate("cv/fold-1", 0.70), candidate("cv/fold-2", 0.74), candidate("other", 0.99)]
    assert choose_run(runs, "cv").run == "cv/fold-2"
    assert choose_run(runs, "cv/fold-1").run == "cv/fold-1"
    assert choose_run(runs, "cv/").run == "cv/fold-2"


def test_a_named_run_without_a_checkpoint_names_the_runs_that_have_one():
    with pytest.raises(CheckpointError, match="'nope' has no best.pt. Runs with a checkpoint: a, cv/fold-1"):
        choose_run([candidate("cv/fold-1", 0.7), candidate("a", 0.5)], "nope")
    assert choose_run([], None) is None


def test_only_a_cv_folder_on_disk_still_gives_a_trained_model(tmp_path):
    """The dashboard used to fall back to untrained: its glob saw only runs/*/best.pt."""
    write_run(tmp_path, "cv/fold-1", 0.70, seed=1)
    best = write_run(tmp_path, "cv/fold-2", 0.74, seed=2)
    (tmp_path / "cv" / "cv_summary.json").write_text(json.dumps({"status": "finished"}))
    predictor = Predictor.from_settings(Settings(runs_dir=tmp_path))
    assert predictor.info.trained and predictor.info.checkpoint_id == best


def test_summaries_that_are_missing_or_broken_count_as_unscored(tmp_path):
    write_run(tmp_path, "broken", 0.9, seed=1)
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    write_run(tmp_path, "listy", 0.9, seed=2)
    (tmp_path / "listy" / "summary.json").write_text("[1, 2]")
    write_run(tmp_path, "fine", 0.2, seed=3)
    found = {r.run: r for r in list_run_checkpoints(tmp_path)}
    assert found["broken"].summary == {} and found["listy"].summary == {}
    assert resolve_checkpoint(tmp_path) == tmp_path / "fine" / "best.pt"


def test_a_loose_best_pt_in_the_runs_folder_is_not_a_run(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "best.pt", AudioCNN(TINY), FeatureConfig(), list(CLASSES[:5]))
    assert list_run_checkpoints(tmp_path) == [] and resolve_checkpoint(tmp_path) is None
    assert resolve_checkpoint(tmp_path, checkpoint=tmp_path / "best.pt") == tmp_path / "best.pt"


# -- what Predictor.from_settings makes of it --------------------------------------------------


def test_an_explicit_checkpoint_beats_a_named_run_which_beats_the_best(tmp_path):
    small = write_run(tmp_path, "small", 0.61, seed=1)
    best = write_run(tmp_path, "best", 0.83, seed=2)
    assert Predictor.from_settings(Settings(runs_dir=tmp_path)).info.checkpoint_id == best
    assert Predictor.from_settings(Settings(runs_dir=tmp_path, run="small")).info.checkpoint_id == small
    named = Settings(runs_dir=tmp_path, run="best", checkpoint=tmp_path / "small" / "best.pt")
    assert Predictor.from_settings(named).info.checkpoint_id == small


def test_a_pinned_id_that_does_not_match_the_file_is_refused(tmp_path):
    best = write_run(tmp_path, "best", 0.83, seed=2)
    assert Predictor.from_settings(Settings(runs_dir=tmp_path, checkpoint_id=best)).info.checkpoint_id == best
    write_run(tmp_path, "best", 0.90, seed=3)  # retrained after the pin
    with pytest.raises(CheckpointError, match=f"but {best} was pinned.*Redeploy"):
        Predictor.from_settings(Settings(runs_dir=tmp_path, checkpoint_id=best))


def test_a_pinned_id_with_nothing_to_load_is_refused_not_untrained(tmp_path):
    with pytest.raises(CheckpointError, match="was pinned but no checkpoint was found"):
        Predictor.from_settings(Settings(runs_dir=tmp_path / "none", checkpoint_id="abc"))
    assert Predictor.from_settings(Settings(runs_dir=tmp_path / "none")).info.trained is False


def test_every_entry_point_loads_the_same_checkpoint(tmp_path):
    """The dashboard's local model, the batch CLI and a deploy's pin, over one runs folder."""
    import serve_modal

    runs = tmp_path / "runs"
    write_run(runs, "baseline", 0.61, seed=1)
    write_run(runs, "cv/fold-1", 0.70, seed=2)
    expected = write_run(runs, "cv/fold-3", 0.79, seed=3)
    write_run(runs, "live", 0.95, status="running", seed=4)

    dashboard = make_backend(Settings(runs_dir=runs)).health().model.checkpoint_id

    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(wav_bytes(0.5))
    env = {**os.environ, "AUDIO_CNN_RUNS_DIR": str(runs), "AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_RUN": ""}
    subprocess.run([sys.executable, "-m", "core.classify_folder", str(clips), "--out", str(tmp_path / "r.csv"),
                    "--no-progress"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    with open(tmp_path / "r.csv", newline="") as f:
        batch = next(csv.DictReader(f))["checkpoint"]

    pin = serve_modal.pin_checkpoint(Settings(), FakeVolume.from_folder(runs))

    assert dashboard == batch == pin["AUDIO_CNN_CHECKPOINT_ID"] == expected
    assert pin["AUDIO_CNN_CHECKPOINT"] == "/runs/cv/fold-3/best.pt"
