"""python -m core.demo: the day-one demo run, trained for real (one epoch here) on its synthetic data."""

from __future__ import annotations

import json

import pytest

from core import demo
from core.checkpoint import load_checkpoint
from core.runs import load_runs


def test_the_demo_writes_its_dataset_and_a_run_the_dashboard_lists(tmp_path):
    result = demo.run_demo(tmp_path / "data", tmp_path / "runs", epochs=3, progress=False)
    assert result.status == "finished" and result.run_dir == tmp_path / "runs" / "demo-5-classes"
    assert len(list((tmp_path / "data" / "audio").glob("*.wav"))) == 100
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["classes"] == ["dog", "rooster", "pig", "cow", "frog"]
    ckpt = load_checkpoint(result.run_dir / "best.pt")
    assert ckpt.meta["run_name"] == "demo-5-classes" and len(ckpt.classes) == 5
    runs = load_runs(tmp_path / "runs")
    assert [r.name for r in runs.runs] == ["demo-5-classes"]
    assert {"train/loss", "val/accuracy"} <= set(runs.tags)


def test_the_demo_command_refuses_a_silly_epoch_count(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"])
    assert "--epochs must be between 3 and 200" in capsys.readouterr().err
