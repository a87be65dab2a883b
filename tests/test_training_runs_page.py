"""The Training Runs page under AppTest: runs table, URL state, filter, bad files, CSV, Modal sync.

The page runs on its own (no Home.py, no model): it needs only the runs folder.
Runs are written with SummaryWriter plus config/summary JSON (runs_factory);
tests/e2e/test_training_runs_e2e.py checks the same page in Chromium.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT
from runs_factory import write_run
from streamlit import dataframe_util
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from core.runs import smooth

PAGE = str(ROOT / "pages" / "training_runs.py")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, dict]:
    """A runs folder with "baseline" (12 epochs) and "sweep/lr-1e-3" (8 epochs, other max_lr)."""
    root = tmp_path_factory.mktemp("runs")
    written = {"baseline": write_run(root, "baseline", epochs=12, seed=0),
               "sweep/lr-1e-3": write_run(root, "sweep/lr-1e-3", epochs=8, seed=2, config={"max_lr": 1e-3})}
    return root, written


@pytest.fixture
def runs_page(monkeypatch):
    """A factory: AppTest of the page over `root`, with no Modal credentials anywhere."""
    for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "AUDIO_CNN_VOLUME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", os.devnull)

    def make(root: Path, **params) -> AppTest:
        monkeypatch.setenv("AUDIO_CNN_RUNS_DIR", str(root))
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.query_params.update(params)
        return at

    return make


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def chart_specs(at: AppTest) -> list[dict]:
    """Every chart's Vega-Lite spec, with the data Streamlit moved out of it put back as "values"."""
    specs = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        data = {d.name: dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data).to_dict("records")
                for d in chart.proto.datasets}
        for part in [spec, *spec.get("layer", [])]:
            if "name" in part.get("data", {}):
                part["data"] = {"values": data[part["data"]["name"]]}
        specs.append(spec)
    return specs


def scalar_specs(at: AppTest) -> dict[str, dict]:
    """The curve charts by tag (their title); the per-class charts have other titles."""
    return {s["title"]: s for s in chart_specs(at) if "layer" in s and s["title"] != "Confusion matrix"}


def runs_drawn(spec: dict) -> list[str]:
    return spec["layer"][0]["encoding"]["color"]["scale"]["domain"]


def test_an_empty_runs_folder_shows_the_commands_to_create_a_run(runs_page, tmp_path):
    at = runs_page(tmp_path / "runs").run()
    assert not at.exception
    assert any("No training runs in" in i for i in texts(at, "info"))
    code = "\n".join(texts(at, "code"))
    runs = tmp_path / "runs"
    assert (f"python train_modal.py --local --data-dir data --runs-dir {runs} --epochs 20 "
            "--run-name first") in code
    # the page shows core.modal_commands' lines (tests/test_modal_commands.py parses them with modal's CLI)
    assert "modal run --detach train_modal.py --epochs 100 --run-name baseline" in code
    assert f"mkdir -p {runs} && modal volume get --force audio-cnn-runs /baseline {runs}" in code


def test_two_runs_are_listed_with_status_epochs_and_best_accuracy(runs_page, two_runs):
    root, written = two_runs
    at = runs_page(root).run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("run")
    assert list(table.index) == ["baseline", "sweep/lr-1e-3"]
    assert list(table["status"]) == ["finished", "finished"]
    assert list(table["epochs"]) == [12, 8]
    for name, points in written.items():
        epoch, best = max(points["val/accuracy"], key=lambda p: p[1])
        assert (table.loc[name, "best epoch"], table.loc[name, "best val acc"]) == (epoch, best)
    assert list(table["max_lr"]) == [2e-3, 1e-3]
    assert table["started"].notna().all()


def test_no_run_picked_compares_every_run_with_the_default_tags(runs_page, two_runs):
    at = runs_page(two_runs[0]).run()
    specs = scalar_specs(at)
    assert list(specs) == ["val/accuracy", "val/loss", "train/loss"]
    assert runs_drawn(specs["val/loss"]) == ["baseline", "sweep/lr-1e-3"]
    assert at.slider(key="smoothing").value == 0.6 and at.radio(key="x").value == "step"


def test_a_shared_link_restores_runs_tags_smoothing_and_axis(runs_page, two_runs):
    root, written = two_runs
    at = runs_page(root, runs=["sweep/lr-1e-3"], tags=["val/loss", "lr"], smoothing="0.9", x="relative",
              log="true").run()
    assert not at.exception
    assert at.multiselect(key="runs").value == ["sweep/lr-1e-3"]
    assert at.multiselect(key="tags").value == ["val/loss", "lr"]
    assert (at.slider(key="smoothing").value, at.radio(key="x").value, at.toggle(key="log").value) == (
        0.9, "relative", True)
    specs = scalar_specs(at)
    assert list(specs) == ["val/loss", "lr"]
    loss = specs["val/loss"]
    assert runs_drawn(loss) == ["sweep/lr-1e-3"]
    assert loss["layer"][1]["encoding"]["x"]["title"] == "relative time (min)"
    assert loss["layer"][1]["encoding"]["y"]["scale"]["type"] == "log"
    curve = loss["layer"][1]["data"]["values"]
    raw = [value for _, value in written["sweep/lr-1e-3"]["val/loss"]]
    assert [p["smoothed"] for p in curve] == pytest.approx(smooth(raw, 0.9).tolist(), rel=1e-12)


def test_the_regex_filter_narrows_the_table_and_the_curves(runs_page, two_runs):
    at = runs_page(two_runs[0], filter="^sweep/").run()
    assert list(at.dataframe[0].value["run"]) == ["sweep/lr-1e-3"]
    assert runs_drawn(scalar_specs(at)["val/accuracy"]) == ["sweep/lr-1e-3"]
    at.text_input(key="filter").input("(unclosed").run()
    assert not at.exception
    assert any("Invalid or too slow filter (not a regular expression" in w for w in texts(at, "warning"))
    assert len(at.dataframe[0].value) == 2


def test_hyperparameter_diff_shows_only_what_differs(runs_page, two_runs):
    at = runs_page(two_runs[0]).run()
    diff = at.dataframe[1].value
    assert list(diff.index) == ["epochs", "max_lr"]  # run_name differs too, but is bookkeeping
    assert diff.loc["max_lr"].tolist() == ["0.002", "0.001"]


def test_one_runs_confusion_matrix_and_per_class_bars(runs_page, two_runs):
    at = runs_page(two_runs[0], detail="sweep/lr-1e-3").run()
    assert at.selectbox(key="detail").value == "sweep/lr-1e-3"
    titles = [s.get("title") for s in chart_specs(at)]
    assert "Confusion matrix" in titles and "Per-class accuracy" in titles
    bars = next(s for s in chart_specs(at) if s.get("title") == "Per-class accuracy")
    assert {row["category"] for row in bars["data"]["values"]} == {
        "Animals", "Natural soundscapes & water sounds", "Human, non-speech sounds",
        "Interior/domestic sounds", "Exterior/urban noises"}


def test_a_corrupt_event_file_is_named_in_a_warning_and_the_other_runs_load(runs_page, tmp_path):
    write_run(tmp_path, "good", epochs=4)
    bad = tmp_path / "broken" / "events.out.tfevents.1700000000.host.1.0"
    bad.parent.mkdir()
    bad.write_bytes(os.urandom(2000))
    at = runs_page(tmp_path).run()
    assert not at.exception
    assert any(str(bad) in w for w in texts(at, "warning"))
    assert list(at.dataframe[0].value["run"]) == ["broken", "good"]
    assert runs_drawn(scalar_specs(at)["val/accuracy"]) == ["broken", "good"]


def test_the_csv_download_holds_exactly_the_selected_scalars(runs_page, two_runs, monkeypatch):
    root, written = two_runs
    files: dict[str, bytes] = {}
    add = MediaFileManager.add

    def recording_add(self, data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        url = add(self, data, mimetype, coordinates, file_name, is_for_static_download)
        files[url] = data if isinstance(data, bytes) else data.encode()
        return url

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    at = runs_page(root, runs=["baseline"], tags=["val/accuracy"]).run()
    (button,) = at.get("download_button")
    lines = files[button.proto.url].decode().splitlines()
    assert lines[0] == "run,tag,step,wall_time,value"
    rows = [line.split(",") for line in lines[1:]]
    assert [(r[0], r[1], int(r[2]), float(r[4])) for r in rows] == [
        ("baseline", "val/accuracy", step, value) for step, value in written["baseline"]["val/accuracy"]]


def test_without_modal_credentials_there_is_no_sync_button_but_a_note(runs_page, two_runs):
    at = runs_page(two_runs[0]).run()
    assert not [b for b in at.button if "Sync from Modal" in b.label]
    assert any("To sync runs from the Modal Volume `audio-cnn-runs`" in c and "modal setup" in c
               for c in texts(at, "caption"))


def test_sync_from_modal_copies_the_volumes_runs_and_lists_them(runs_page, tmp_path, monkeypatch):
    from modal.volume import FileEntry, FileEntryType

    import core.volume

    remote = tmp_path / "remote"
    write_run(remote, "on-modal", epochs=3)
    files = {p.relative_to(remote).as_posix(): p.read_bytes() for p in remote.rglob("*") if p.is_file()}

    class Volume:  # the two modal.Volume methods core.volume uses
        def iterdir(self, path, recursive=True):
            return [FileEntry(path=name, type=FileEntryType.FILE, mtime=1_700_000_000, size=len(data))
                    for name, data in files.items()]

        def read_file(self, path):
            yield files[path]

    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-test")
    monkeypatch.setattr(core.volume, "_open_volume", lambda name: Volume())
    at = runs_page(tmp_path / "local").run()
    assert any("No training runs in" in i for i in texts(at, "info"))
    (sync,) = [b for b in at.button if "Sync from Modal" in b.label]
    at = sync.click().run()
    assert not at.exception
    assert any(f"Copied {len(files)} files" in s for s in texts(at, "success"))
    assert list(at.dataframe[0].value["run"]) == ["on-modal"]
    assert (tmp_path / "local" / "on-modal" / "summary.json").exists()


def test_a_running_run_is_followed(runs_page, tmp_path):
    write_run(tmp_path, "live", epochs=2, status="running")  # just written: running
    at = runs_page(tmp_path).run()
    assert not at.exception
    assert any("Running: live" in c for c in texts(at, "caption"))
    assert at.dataframe[0].value["status"].tolist() == ["running"]


def test_a_link_to_a_run_that_is_not_here_says_so(runs_page, two_runs):
    at = runs_page(two_runs[0], runs=["baseline", "gone"]).run()
    assert not at.exception
    assert any("not in" in w and "gone" in w for w in texts(at, "warning"))
    assert at.multiselect(key="runs").value == ["baseline"]
