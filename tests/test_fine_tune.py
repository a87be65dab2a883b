"""Training on your own data and fine-tuning: classes from the data, the split written down, a new head, frozen stages, lineage, served."""

from __future__ import annotations

import base64
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import torch
from audio_factory import encode
from conftest import free_port, start_process, stop_process
from custom_data_factory import make_folders, make_labels_csv
from esc50_factory import class_sound, make_dataset

from core import lineage
from core.checkpoint import load_checkpoint
from core.inference import Predictor
from core.model import ModelConfig
from core.training import TrainConfig, TrainingError, train

SMALL = ModelConfig(num_classes=0, stem_channels=8, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))
TOOLS = {"saw": 6, "drill": 6, "hammer": 6}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def base(runs) -> TrainConfig:
    return TrainConfig(runs_dir=str(runs), batch_size=4, epochs=2, pct_start=0.3, model=SMALL, progress=False,
                       device="cpu")


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> Path:
    return make_folders(tmp_path_factory.mktemp("tools") / "tools", TOOLS)


@pytest.fixture(scope="module")
def esc_parent(base, tmp_path_factory):
    """A 2-epoch run on 5 ESC-50 classes in the ESC-50 layout: the model the fine-tuning starts from."""
    data = make_dataset(tmp_path_factory.mktemp("esc") / "ESC-50-master", clips_per_fold=2, seconds=0.5)
    return train(replace(base, data_dir=str(data), run_name="esc-parent", batch_size=8))


@pytest.fixture(scope="module")
def tuned(base, tools, esc_parent, capsys_module):
    result = train(replace(base, data_dir=str(tools), run_name="tuned", freeze_stages=2,
                           init_from=str(esc_parent.run_dir / "best.pt")))
    return result, capsys_module.readouterr().out


@pytest.fixture(scope="module")
def capsys_module():
    """Captured stdout for module-scoped fixtures (pytest's capsys is function-scoped)."""
    import io
    from contextlib import redirect_stdout

    class Capture:
        def __init__(self):
            self.buffer = io.StringIO()

        def readouterr(self):
            class Out:
                out = self.buffer.getvalue()
            return Out

    cap = Capture()
    with redirect_stdout(cap.buffer):
        yield cap


# -- your own data ----------------------------------------------------------------------------------


def test_a_run_on_class_folders_names_its_classes_and_writes_its_split(base, tools):
    result = train(replace(base, data_dir=str(tools), run_name="folders"))
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["data"]["classes"] == ["drill", "hammer", "saw"] and config["data"]["layout"] == "folders"
    assert config["model"]["num_classes"] == 3
    assert config["data"]["split"] == {"method": "stratified-k-fold", "k": 5, "seed": 0,
                                       "library": config["data"]["split"]["library"], "file": "split.csv"}
    rows = list(csv.DictReader((result.run_dir / "split.csv").open()))
    assert len(rows) == 18 and {r["label"] for r in rows} == set(TOOLS) and {r["fold"] for r in rows} == set("12345")
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best.classes == ["drill", "hammer", "saw"] and best.model_config.num_classes == 3
    assert best.meta["clip_seconds"] == pytest.approx(0.625, abs=1e-4)


def test_a_labels_csv_dataset_trains_on_its_own_folds(base, tmp_path):
    data = make_labels_csv(tmp_path / "csv", {"on": 6, "off": 6}, folds=3)
    result = train(replace(base, data_dir=str(data), run_name="csv", train_folds=(1, 2), val_fold=3))
    config = json.loads((result.run_dir / "config.json").read_text())
    assert result.status == "finished" and config["data"]["clips_per_fold"] == {"fold-1": 4, "fold-2": 4, "fold-3": 4}


def test_folds_the_data_lacks_are_refused_with_a_hint(base, tmp_path):
    from core.datasets import DatasetError

    data = make_labels_csv(tmp_path / "csv", {"on": 6, "off": 6}, folds=3)
    with pytest.raises(DatasetError, match="Folds are 1-3.*pass e.g. --train-folds 1,2 --val-fold 3"):
        train(replace(base, data_dir=str(data), run_name="csv-default-folds"))


# -- fine-tuning -----------------------------------------------------------------------------------


def test_other_classes_get_a_new_head_and_it_says_so(tuned):
    result, out = tuned
    assert result.status == "finished"
    assert "the classes differ (3 here, 3 new" in out and "classifier head is replaced" in out


def test_the_parent_is_recorded_in_config_json(tuned, esc_parent):
    result, _ = tuned
    parent = json.loads((result.run_dir / "config.json").read_text())["parent"]
    parent_ckpt = load_checkpoint(esc_parent.run_dir / "best.pt")
    assert parent["checkpoint_id"] == parent_ckpt.id and parent["head"] == "replaced"
    assert parent["classes"] == parent_ckpt.classes and parent["frozen_stages"] == ["layer1", "layer2"]
    assert load_checkpoint(result.run_dir / "best.pt").meta["parent_checkpoint_id"] == parent_ckpt.id


def test_frozen_stages_keep_the_parents_weights_and_the_rest_learn(tuned, esc_parent):
    result, _ = tuned
    parent = load_checkpoint(esc_parent.run_dir / "best.pt").model_state
    child = load_checkpoint(result.run_dir / "last.pt").model_state
    for key in parent:
        if key.startswith(("layer1.", "layer2.")):  # weights and BatchNorm statistics alike
            assert torch.equal(parent[key], child[key]), key
    assert not torch.equal(parent["layer3.0.conv1.weight"], child["layer3.0.conv1.weight"])
    assert child["fc.weight"].shape == (3, 64)


def test_the_same_classes_keep_every_layer(base, tools, tuned):
    result, _ = tuned
    again = train(replace(base, data_dir=str(tools), run_name="tuned-again", init_from=str(result.run_dir / "best.pt")))
    assert json.loads((again.run_dir / "config.json").read_text())["parent"]["head"] == "kept"


def test_the_lineage_chain_goes_back_to_the_first_run(base, tools, tuned, runs):
    again = runs / "tuned-again"
    if not again.exists():
        train(replace(base, data_dir=str(tools), run_name="tuned-again",
                      init_from=str(tuned[0].run_dir / "best.pt")))
    chain = lineage.chain(runs, "tuned-again")
    assert [link["run"] for link in chain] == ["tuned-again", "tuned", "esc-parent"]
    assert lineage.markdown(chain) == "`esc-parent` → `tuned` (head replaced) → `tuned-again` (head kept)"
    assert lineage.chain(runs, "esc-parent") == [{"run": "esc-parent", "head": None}]


@pytest.mark.parametrize("change, message", [
    ({"freeze_stages": 6}, "--freeze-stages 6: this model has 5 stages"),
    ({"init_from": "/nonexistent/best.pt"}, "--init-from: Checkpoint /nonexistent/best.pt does not exist"),
])
def test_bad_fine_tuning_settings_are_refused(base, tools, change, message):
    with pytest.raises(TrainingError, match=message):
        train(replace(base, data_dir=str(tools), run_name="bad", **change))


def test_the_fine_tuned_model_is_served_with_its_classes(tuned, tools):
    result, _ = tuned
    port = free_port()
    proc = start_process([sys.executable, "-m", "core.server", "--host", "127.0.0.1", "--port", str(port)],
                         f"http://127.0.0.1:{port}/health",
                         {"AUDIO_CNN_CHECKPOINT": str(result.run_dir / "best.pt"), "AUDIO_CNN_TOKEN": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        names = [c["name"] for c in requests.get(f"{url}/classes", timeout=30).json()["classes"]]
        assert names == ["drill", "hammer", "saw"]
        clip = encode(class_sound(1, 3, 0.5, __import__("numpy").random.default_rng(5)))
        body = {"audio_data": base64.b64encode(clip).decode(), "options": {"top_k": 3, "feature_maps": "none"}}
        answer = requests.post(f"{url}/evaluate", json=body, timeout=60).json()
        assert sorted(p["class"] for p in answer["predictions"]) == names
        assert answer["model"]["num_classes"] == 3
    finally:
        stop_process(proc)


def test_serving_pads_a_short_clip_as_training_did(tuned):
    predictor = Predictor.from_checkpoint(tuned[0].run_dir / "best.pt", device="cpu")
    import numpy as np

    short = np.random.default_rng(0).standard_normal(4410).astype(np.float32) * 0.1
    analysis = predictor.analyze(short, feature_maps="none")
    assert analysis.spectrogram.shape[1] == predictor.feature_config.frames(round(0.625 * 44100))
    assert analysis.duration == pytest.approx(0.1)  # the clip's own length is still reported


def test_on_modal_the_data_dir_is_a_folder_in_the_data_volume(tools, tmp_path, monkeypatch):
    """train_modal's container work with your own data: --data-dir names a folder of the data Volume,
    and nothing is downloaded over it (download is off: a download attempt would fail the run)."""
    import shutil

    import train_modal

    volume = tmp_path / "data-volume"
    shutil.copytree(tools, volume / "my-tools")
    argv = ["--data-dir", "my-tools", "--run-name", "on-modal", "--epochs", "2", "--pct-start", "0.3",
            "--batch-size", "4", "--stem-channels", "8", "--widths", "8,16,32,64", "--depths", "1,1,1,1",
            "--no-progress", "--no-download", "--device", "cpu"]
    commits = []
    summary = train_modal.train_on_volumes(argv, str(volume), str(tmp_path / "runs"),
                                           lambda: commits.append("data"), lambda: commits.append("runs"))
    assert summary["status"] == "finished", summary
    assert summary["classes"] == ["drill", "hammer", "saw"]
    config = json.loads((tmp_path / "runs" / "on-modal" / "config.json").read_text())
    assert config["data_dir"] == f"{volume}/my-tools" and config["data"]["layout"] == "folders"
