"""core.runs: runs written with torch's SummaryWriter are read back exactly."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from torch.utils.tensorboard import SummaryWriter

from core import runs as R

TAGS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy")
LATER = 4_000_000_000.0  # a "now" long after every file was written


def f32(x: float) -> float:
    """Event files store scalars as float32."""
    return float(np.float32(x))


def value(tag_index: int, step: int, seed: int = 0) -> float:
    return math.sin(0.37 * step + tag_index + seed) * (tag_index + 1) + 0.001 * step


def write_run(folder, steps=300, tags=TAGS, seed=0) -> dict:
    """A run written with SummaryWriter; returns {tag: [(step, float32 value)]}."""
    expected = {tag: [] for tag in tags}
    with SummaryWriter(str(folder)) as writer:
        for step in range(steps):
            for i, tag in enumerate(tags):
                writer.add_scalar(tag, value(i, step, seed), step)
                expected[tag].append((step, f32(value(i, step, seed))))
    return expected


def rows(frame: pd.DataFrame, run: str, tag: str) -> list[tuple[int, float]]:
    sub = frame[(frame["run"] == run) & (frame["tag"] == tag)]
    return list(zip(sub["step"].tolist(), sub["value"].tolist(), strict=True))


def records(path) -> list[tuple[int, int]]:
    """(offset of data, length) of every record: the TFRecord framing, walked by hand."""
    data, pos, out = open(path, "rb").read(), 0, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 8], "little")
        out.append((pos + 12, length))
        pos += 16 + length
    return out


def event_file(folder) -> str:
    (name,) = [n for n in os.listdir(folder) if "tfevents" in n]
    return os.path.join(folder, name)


# ---------------------------------------------------------------- reading

def test_summarywriter_runs_read_back_with_exact_values(tmp_path):
    written = {name: write_run(tmp_path / name, seed=i) for i, name in enumerate(["a", "b", "c"])}
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert data.problems == []
    assert list(data.scalars.columns) == R.COLUMNS
    assert [info.name for info in data.runs] == ["a", "b", "c"]
    assert len(data.scalars) == 3 * 4 * 300
    for name, tags in written.items():
        for tag, points in tags.items():
            assert rows(data.scalars, name, tag) == points
    a_loss = (data.scalars["run"] == "a") & (data.scalars["tag"] == "val/loss")
    walls = data.scalars.loc[a_loss, "wall_time"]
    assert walls.is_monotonic_increasing and walls.iloc[0] > 1.6e9


def test_a_run_of_the_real_training_loop_reads_back_exactly(tmp_path):
    from esc50_factory import make_dataset
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from core.model import ModelConfig
    from core.training import TrainConfig, train

    data_dir = make_dataset(tmp_path / "ESC-50", num_classes=5, clips_per_fold=1, seconds=0.25)
    tiny = ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 1))
    result = train(TrainConfig(data_dir=str(data_dir), runs_dir=str(tmp_path / "runs"), run_name="tiny",
                               epochs=3, batch_size=2, model=tiny, progress=False, download=False))
    data = R.load_runs(tmp_path / "runs", cache=R.EventCache())
    assert data.problems == []
    (info,) = data.runs
    reference = EventAccumulator(str(result.run_dir), size_guidance={"scalars": 0}).Reload()
    assert data.tags == sorted(reference.Tags()["scalars"])
    for tag in data.tags:
        assert rows(data.scalars, "tiny", tag) == [(e.step, e.value) for e in reference.Scalars(tag)]
    assert rows(data.scalars, "tiny", "val/accuracy")[-1][0] == 3  # step = epoch, from 1
    assert (info.status, info.epochs, info.best_epoch) == ("finished", 3, result.best_epoch)
    assert info.hparams["max_lr"] == 2e-3 and info.params["max_lr"] == 2e-3


def test_nested_folders_are_runs_named_by_relative_path(tmp_path):
    write_run(tmp_path / "sweep" / "lr-1e-3", steps=3)
    write_run(tmp_path / "sweep" / "lr-1e-4", steps=3)
    write_run(tmp_path / "plain", steps=3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    assert [info.name for info in R.find_runs(tmp_path)] == ["plain", "sweep/lr-1e-3", "sweep/lr-1e-4"]


def test_seed_project_run_maps_its_tags_onto_ours(tmp_path):
    folder = tmp_path / "tensorboard_logs" / "run_20250101_120000"
    seed_tags = ("Loss/train", "Loss/val", "Accuracy/val", "Learning_rate")
    written = write_run(folder, steps=20, tags=seed_tags)
    data = R.load_runs(tmp_path, cache=R.EventCache(), now=LATER)
    (info,) = data.runs
    assert (info.name, info.kind, info.status) == ("tensorboard_logs/run_20250101_120000", "seed", "finished")
    assert data.tags == ["lr", "train/loss", "val/accuracy", "val/loss"]
    for seed_tag, ours in R.SEED_TAGS.items():
        assert rows(data.scalars, info.name, ours) == written[seed_tag]
    assert info.epochs == 20
    best = max(written["Accuracy/val"], key=lambda p: p[1])  # first maximum
    assert (info.best_epoch, info.best_val_accuracy) == best


def test_config_summary_and_hparams_are_read(tmp_path):
    folder = tmp_path / "run1"
    with SummaryWriter(str(folder)) as writer:
        writer.add_scalar("val/accuracy", 0.5, 0)
        writer.add_hparams({"lr": 0.001, "optimizer": "adamw"}, {"hparam/best_accuracy": 0.5})
    (folder / "config.json").write_text(json.dumps({"train": {"lr": 0.0005, "epochs": 3}}))
    (folder / "summary.json").write_text(json.dumps({"best_epoch": 2, "best_val_accuracy": 0.75}))
    data = R.load_runs(tmp_path, cache=R.EventCache())
    (info,) = data.runs  # add_hparams' timestamped child folder belongs to run1
    assert info.config == {"train": {"lr": 0.0005, "epochs": 3}}
    assert info.hparams == {"lr": 0.001, "optimizer": "adamw"}
    assert info.params == {"train.lr": 0.0005, "train.epochs": 3, "lr": 0.001, "optimizer": "adamw"}
    assert (info.best_epoch, info.best_val_accuracy) == (2, 0.75)  # summary wins over scalars
    assert data.tags == ["hparam/best_accuracy", "val/accuracy"]


def test_status_follows_summary_and_age_of_last_write(tmp_path):
    for name in ("done", "halted", "killed", "quiet", "seed"):
        write_run(tmp_path / name, steps=2)
    (tmp_path / "done" / "summary.json").write_text('{"status": "finished"}')
    (tmp_path / "halted" / "summary.json").write_text('{"status": "stopped"}')
    (tmp_path / "killed" / "summary.json").write_text('{"status": "running"}')
    (tmp_path / "quiet" / "config.json").write_text("{}")
    last = max(info.last_activity for info in R.find_runs(tmp_path))
    status = lambda now: {i.name: i.status for i in R.find_runs(tmp_path, now=now)}  # noqa: E731
    assert status(last + 60) == {"done": "finished", "halted": "stopped", "killed": "running",
                                 "quiet": "running", "seed": "running"}
    assert status(last + 3600) == {"done": "finished", "halted": "stopped", "killed": "stopped",
                                   "quiet": "stopped", "seed": "finished"}


def test_resumed_run_keeps_the_newer_file_from_its_first_step(tmp_path):
    folder = tmp_path / "resumed"
    with SummaryWriter(str(folder)) as first:
        for step in range(8):  # crashed after step 7, last checkpoint at step 4
            first.add_scalar("val/loss", 1.0 + step, step)
    with SummaryWriter(str(folder)) as second:
        for step in range(5, 10):
            second.add_scalar("val/loss", 100.0 + step, step)
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert rows(data.scalars, "resumed", "val/loss") == (
        [(s, 1.0 + s) for s in range(5)] + [(s, 100.0 + s) for s in range(5, 10)])


def test_a_step_in_two_files_keeps_the_newer_files_value_even_where_the_newer_file_ends_first(tmp_path):
    folder = tmp_path / "resumed"
    with SummaryWriter(str(folder)) as first:
        for step in range(1, 9):
            first.add_scalar("val/accuracy", 0.1 * step, step)
    with SummaryWriter(str(folder)) as second:  # resumed from epoch 4, then stopped after epoch 6
        for step in (5, 6):
            second.add_scalar("val/accuracy", 0.9, step)
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert rows(data.scalars, "resumed", "val/accuracy") == (
        [(s, f32(0.1 * s)) for s in range(1, 5)] + [(5, f32(0.9)), (6, f32(0.9))])
    assert data.runs[0].best_epoch == 5  # the superseded 0.8 at epoch 8 is gone


def test_names_select_runs_and_unknown_names_are_reported(tmp_path):
    write_run(tmp_path / "a", steps=2)
    write_run(tmp_path / "b", steps=2)
    data = R.load_runs(tmp_path, names=["b", "nope"], cache=R.EventCache())
    assert [info.name for info in data.runs] == ["b"]
    assert set(data.scalars["run"]) == {"b"}
    assert data.problems == [f"run 'nope' not found under {tmp_path}"]


def test_checksums_are_computed_in_c_and_agree_with_tensorboards_own(tmp_path):
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as pw

    from core.event_files import use_fast_crc32c

    assert use_fast_crc32c()
    data = bytes(range(256)) * 37 + b"audio-cnn"
    expected = pw.crc_finalize(pw.crc_update(pw.CRC_INIT, data))  # TensorBoard's pure-Python CRC-32C
    assert pw.crc32c(data) == expected and pw.crc32c(b"123456789") == 0xE3069283  # the standard check value
    write_run(tmp_path / "r", steps=20)  # written and read back through the C checksum: no problem reported
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert data.problems == [] and len(rows(data.scalars, "r", "train/loss")) == 20


# ---------------------------------------------------------------- bad files

def test_garbage_event_file_is_skipped_by_name_and_other_runs_load(tmp_path):
    written = write_run(tmp_path / "good", steps=10)
    bad = tmp_path / "bad" / "events.out.tfevents.1700000000.host.1.0"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(3000))
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert len(data.problems) == 1 and str(bad) in data.problems[0]
    assert "skipped" in data.problems[0]
    assert set(data.scalars["run"]) == {"good"}
    assert rows(data.scalars, "good", "val/loss") == written["val/loss"]


def test_truncated_event_file_is_reported_and_keeps_the_points_before(tmp_path):
    written = write_run(tmp_path / "cut", steps=10)
    path = event_file(tmp_path / "cut")
    os.truncate(path, os.path.getsize(path) - 5)  # the last record loses its tail
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert len(data.problems) == 1 and path in data.problems[0]
    assert "incomplete record" in data.problems[0]
    assert rows(data.scalars, "cut", "val/accuracy") == written["val/accuracy"][:-1]  # written last
    assert rows(data.scalars, "cut", "train/loss") == written["train/loss"]


def test_corrupt_record_part_way_is_reported(tmp_path):
    write_run(tmp_path / "flipped", steps=10)
    path = event_file(tmp_path / "flipped")
    start, _ = records(path)[21]  # record 0 is the file version, then one scalar per record
    blob = bytearray(open(path, "rb").read())
    blob[start + 2] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert len(data.problems) == 1 and path in data.problems[0]
    assert "corrupt record" in data.problems[0]
    assert len(data.scalars) == 20


def test_invalid_config_json_is_reported_and_the_run_still_listed(tmp_path):
    write_run(tmp_path / "r", steps=2)
    (tmp_path / "r" / "config.json").write_text("{not json")
    data = R.load_runs(tmp_path, cache=R.EventCache())
    assert [info.name for info in data.runs] == ["r"]
    assert len(data.problems) == 1 and "config.json" in data.problems[0]
    assert len(data.scalars) == 2 * 4


# ---------------------------------------------------------------- cache

def test_unchanged_files_are_not_parsed_again(tmp_path):
    write_run(tmp_path / "a", steps=5)
    write_run(tmp_path / "b", steps=5)
    cache = R.EventCache()
    first = R.load_runs(tmp_path, cache=cache)
    assert cache.parses == 2
    second = R.load_runs(tmp_path, cache=cache)
    assert cache.parses == 2
    pd.testing.assert_frame_equal(first.scalars, second.scalars)


def test_a_live_runs_new_points_appear_on_the_next_load(tmp_path):
    write_run(tmp_path / "old", steps=5)
    cache = R.EventCache()
    writer = SummaryWriter(str(tmp_path / "live"))
    try:
        for step in range(10):
            writer.add_scalar("train/loss", float(step), step)
        writer.flush()
        assert len(rows(R.load_runs(tmp_path, cache=cache).scalars, "live", "train/loss")) == 10
        assert cache.parses == 2
        for step in range(10, 25):
            writer.add_scalar("train/loss", float(step), step)
        writer.flush()
        live = rows(R.load_runs(tmp_path, cache=cache).scalars, "live", "train/loss")
        assert live == [(s, float(s)) for s in range(25)]
        assert cache.parses == 3  # only the live file was parsed again
    finally:
        writer.close()


# ---------------------------------------------------------------- comparing

def test_smoothing_matches_tensorboards_formula():
    # w = 0.6: last = 0.6*last + 0.4*y, shown = last / (1 - 0.6**n), NaN skipped.
    #   y=1: last=0.4             shown=0.4/0.4       = 1.0
    #   y=2: last=0.24+0.8=1.04   shown=1.04/0.64     = 1.625
    #   y=4: last=0.624+1.6=2.224 shown=2.224/0.784   = 2.8367346938775513
    #   NaN passes through, n stays 3
    #   y=8: last=1.3344+3.2=4.5344 shown=4.5344/0.8704 = 5.209558823529412
    out = R.smooth([1.0, 2.0, 4.0, float("nan"), 8.0], 0.6)
    assert out[:3].tolist() == pytest.approx([1.0, 1.625, 2.8367346938775513], rel=1e-12)
    assert math.isnan(out[3])
    assert out[4] == pytest.approx(5.209558823529412, rel=1e-12)


def test_smoothing_edge_cases_follow_tensorboard():
    assert R.smooth([0.1] * 5, 0.6).tolist() == [0.1] * 5  # constant: untouched (EMA would drift)
    assert R.smooth([1.0, 3.0, float("inf")], 0.0).tolist() == [1.0, 3.0, float("inf")]
    assert R.smooth([1.0, 3.0], float("nan")).tolist() == [1.0, 3.0]  # non-finite weight -> 0
    assert R.smooth([1.0, 3.0], 1.0).tolist() == [0.0, 0.0]  # w = 1: no debiasing, stuck at 0
    assert R.smooth([], 0.6).tolist() == []


def test_with_smoothing_smooths_each_run_and_tag_separately():
    frame = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 2, "tag": ["t"] * 5,
                          "step": [0, 1, 2, 0, 1], "wall_time": [0.0] * 5,
                          "value": [1.0, 2.0, 4.0, 10.0, 20.0]})
    out = R.with_smoothing(frame, 0.6)
    assert out["smoothed"].tolist() == pytest.approx(
        [1.0, 1.625, 2.8367346938775513, 10.0, 16.25], rel=1e-12)


def test_time_columns_are_relative_to_run_start_and_utc_wall():
    frame = pd.DataFrame({"run": ["a", "a", "b"], "tag": ["t"] * 3, "step": [0, 1, 0],
                          "wall_time": [1000.0, 1060.0, 5000.0], "value": [1.0, 2.0, 3.0]})
    out = R.with_time_columns(frame, {"a": 990.0})
    assert out["relative"].tolist() == [10.0, 70.0, 0.0]  # b has no start: its first point
    assert out["wall"].iloc[1] == pd.Timestamp(1060, unit="s", tz="UTC")


def test_best_epochs_take_the_first_best_step_per_run():
    frame = pd.DataFrame({"run": ["a"] * 4 + ["b"] * 2, "tag": ["val/accuracy"] * 6,
                          "step": [0, 1, 2, 3, 0, 1], "wall_time": [0.0] * 6,
                          "value": [0.5, 0.8, 0.8, float("nan"), 0.9, 0.1]})
    best = R.best_epochs(frame)
    assert best.to_dict("list") == {"run": ["a", "b"], "step": [1, 0], "value": [0.8, 0.9]}
    assert R.best_epochs(frame, mode="min").to_dict("list") == {
        "run": ["a", "b"], "step": [0, 1], "value": [0.5, 0.1]}


def test_hparam_diff_lists_only_keys_that_differ():
    def run(name, config, hparams=None):
        return R.RunInfo(name=name, path=None, kind="audio-cnn", event_files=(),
                         config=config, hparams=hparams or {})

    infos = [run("a", {"lr": 0.001, "batch": 32, "folds": [1, 2, 3], "aug": {"mixup": 0.3},
                       "warmup": None}),
             run("b", {"lr": 0.002, "batch": 32, "folds": [1, 2, 3], "aug": {"mixup": 0.0}}),
             run("c", {"lr": 0.001, "batch": 32.0, "folds": [1, 2, 4]}, {"seed": 7})]
    diff = R.hparam_diff(infos)
    assert list(diff.columns) == ["a", "b", "c"]
    assert diff.index.tolist() == ["aug.mixup", "batch", "folds", "lr", "seed", "warmup"]
    assert diff.loc["aug.mixup"].tolist() == [0.3, 0.0, None]
    assert diff.loc["batch"].tolist() == [32, 32, 32.0]  # 32 vs 32.0: not the same setting
    assert diff.loc["folds"].tolist() == [[1, 2, 3], [1, 2, 3], [1, 2, 4]]
    assert diff.loc["seed"].tolist() == [None, None, 7]
    assert diff.loc["warmup"].tolist() == [None, None, None]  # set to null in a, absent in b, c
    assert R.hparam_diff(infos[:1]).index.tolist() == []
    assert R.hparam_diff(infos, ignore=("aug.*", "f*")).index.tolist() == ["batch", "lr", "seed", "warmup"]


def test_hparam_diff_leaves_out_training_bookkeeping():
    def run(name, created):
        return R.RunInfo(name=name, path=None, kind="audio-cnn", event_files=(),
                         config={"run_name": name, "created_at": created, "lr": 0.001})

    assert R.hparam_diff([run("a", "2026-01-01"), run("b", "2026-01-02")]).index.tolist() == []


def test_scalars_csv_is_exact():
    frame = pd.DataFrame({"run": ["a", "b"], "tag": ["val/loss", "lr"], "step": [3, 10],
                          "wall_time": [1700000000.25, 1700000001.5], "value": [1 / 3, 5e-4]})
    text = R.scalars_csv(frame[["value", "run", "tag", "step", "wall_time"]])
    assert text == ("run,tag,step,wall_time,value\n"
                    "a,val/loss,3,1700000000.25,0.3333333333333333\n"
                    "b,lr,10,1700000001.5,0.0005\n")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(text)), frame)
