"""train_modal.py: imports without Modal credentials; local mode and the container's work train, stop, continue.

Modal's cloud is emulated as its docs describe preemption: SIGTERM, then the
same input again in a fresh process (a new container) unless the function
returned. The container's work (`train_on_volumes`) runs in real subprocesses
on a real runs folder; only the Volume commits are replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from esc50_factory import make_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint import load_checkpoint

SMALL_MODEL = ["--num-classes", "5", "--stem-channels", "8", "--widths", "8,16,32,64", "--depths", "1,1,1,1"]


def bare_env(tmp_path: Path) -> dict:
    """No Modal token or config file, one thread per process (the suite shares two cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    return env | {"HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dataset, an empty HOME and a runs folder; `cli(*flags)` builds a local-mode command."""
    base = tmp_path_factory.mktemp("train-modal")
    data = make_dataset(base / "data" / "ESC-50-master", clips_per_fold=2)
    runs = base / "runs"
    (base / "home").mkdir()

    def cli(run_name: str, *extra: str, epochs: int = 4) -> list[str]:
        return [sys.executable, "train_modal.py", "--local", "--data-dir", str(data.parent),
                "--runs-dir", str(runs), "--run-name", run_name, "--epochs", str(epochs),
                "--batch-size", "4", "--no-progress", *SMALL_MODEL, *extra]

    return {"cli": cli, "runs": runs, "env": bare_env(base / "home"), "data": data}


@pytest.fixture(scope="module")
def local_run(setup):
    proc = subprocess.run(setup["cli"]("local"), cwd=ROOT, env=setup["env"], capture_output=True,
                          text=True, timeout=600)
    return proc


def test_imports_without_modal_credentials(tmp_path):
    code = "import train_modal; print(type(train_modal.app).__name__, train_modal.train_remote is not None)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=bare_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["App", "True"]


def test_modal_run_hands_its_flags_to_the_same_parser():
    from modal.cli.run import _get_click_command_for_local_entrypoint

    import train_modal
    from core.train_config import config_from_args

    command = _get_click_command_for_local_entrypoint(train_modal.app, train_modal.main)
    flags = ["--epochs", "7", "--run-name", "gpu-run", "--gpu", "H100", "--test-fold", "5", "--val-fold", "4",
             "--train-folds", "1,2,3", "--overwrite"]
    ctx = command.make_context("main", list(flags), obj={})
    args = train_modal.build_parser().parse_args(ctx.args)
    config = config_from_args(args)
    assert (config.epochs, config.run_name, config.test_fold, config.train_folds) == (7, "gpu-run", 5, (1, 2, 3))
    assert args.gpu == "H100" and args.overwrite is True


def test_local_mode_trains_end_to_end(local_run, setup):
    assert local_run.returncode == 0, local_run.stderr[-3000:]
    assert "status finished" in local_run.stdout
    run = setup["runs"] / "local"
    assert {"best.pt", "last.pt", "config.json", "summary.json"} <= {p.name for p in run.iterdir()}
    assert list(run.glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 4


def scalars(path: Path) -> dict:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)]
            for t in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr")}


def test_sigterm_saves_last_pt_and_the_same_command_continues_like_an_uninterrupted_run(local_run, setup):
    assert local_run.returncode == 0
    proc = subprocess.Popen(setup["cli"]("sigterm"), cwd=ROOT, env=setup["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith("epoch 1/"):  # training epoch 2 has begun
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, "".join(output)
    run = setup["runs"] / "sigterm"
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    extra = load_checkpoint(run / "last.pt").extra
    assert extra["epoch"] == 2 or (extra["epoch"], extra["batch"]) == (3, 0)

    resumed = subprocess.run(setup["cli"]("sigterm"), cwd=ROOT, env=setup["env"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing run 'sigterm' from last.pt" in resumed.stdout
    assert scalars(run) == scalars(setup["runs"] / "local")
    assert load_checkpoint(run / "last.pt").id == load_checkpoint(setup["runs"] / "local" / "last.pt").id


def test_rerunning_a_finished_run_is_refused_naming_overwrite(local_run, setup):
    assert local_run.returncode == 0
    again = subprocess.run(setup["cli"]("local"), cwd=ROOT, env=setup["env"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2 and "is finished: pass --overwrite" in again.stderr


# -- the container's work, preempted the way Modal does it -------------------------------------------

CONTAINER = """
import json, sys
import train_modal
argv, data_dir, runs_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
summary = train_modal.train_on_volumes(argv, data_dir, runs_dir, lambda: None, lambda: None)
print("RETURNED", json.dumps({"status": summary["status"], "error": summary.get("error")}), flush=True)
"""


def container_attempt(setup, runs: Path, name: str) -> subprocess.Popen:
    """One attempt at the input `name` in a fresh process, as Modal starts one per (re)try."""
    argv = ["--run-name", name, "--epochs", "4", "--batch-size", "4", "--no-progress", *SMALL_MODEL]
    return subprocess.Popen([sys.executable, "-c", CONTAINER, json.dumps(argv), str(setup["data"].parent), str(runs)],
                            cwd=ROOT, env=setup["env"], text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def until(proc: subprocess.Popen, prefix: str) -> list[str]:
    """Read the attempt's output until a line starts with `prefix` (or it ends); returns the lines."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            break
    return lines


def test_preempted_in_epoch_2_the_attempt_fails_and_the_retry_finishes_each_epoch_once(local_run, setup, tmp_path):
    runs = tmp_path / "runs"
    first = container_attempt(setup, runs, "preempted")
    until(first, "epoch 1/")  # epoch 1 is logged and committed: now in epoch 2
    first.send_signal(signal.SIGTERM)  # what Modal sends before it restarts the input elsewhere
    rest = first.communicate(timeout=300)[0]
    assert first.returncode != 0, rest  # a failed input: what makes Modal retry it
    assert "TrainingInterrupted" in rest and "RETURNED" not in rest
    run = runs / "preempted"
    assert (run / "last.pt").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"

    retry = container_attempt(setup, runs, "preempted")  # the same arguments, a fresh container
    out = retry.communicate(timeout=600)[0]
    assert retry.returncode == 0 and 'RETURNED {"status": "finished"' in out, out[-3000:]
    assert "continuing run 'preempted' from last.pt" in out
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    logged = scalars(run)
    assert all([step for step, _ in points] == [1, 2, 3, 4] for points in logged.values()), logged
    assert logged == scalars(setup["runs"] / "local")  # and it is the uninterrupted run, bit for bit


def test_killed_in_epoch_1_before_any_last_pt_the_retry_trains_it(local_run, setup, tmp_path):
    runs = tmp_path / "runs"
    first = container_attempt(setup, runs, "killed")
    until(first, "starting run 'killed'")  # summary.json is written, epoch 1 has begun
    first.kill()  # SIGKILL: nothing saved, nothing returned
    first.communicate(timeout=60)
    run = runs / "killed"
    assert (run / "summary.json").exists()
    assert not (run / "last.pt").exists(), "epoch 1 ended before the kill: this test needs a longer epoch"

    retry = container_attempt(setup, runs, "killed")
    out = retry.communicate(timeout=600)[0]
    assert retry.returncode == 0 and 'RETURNED {"status": "finished"' in out, out[-3000:]
    assert "starting run 'killed'" in out
    assert scalars(run) == scalars(setup["runs"] / "local")


def test_what_a_retry_cannot_fix_is_returned_not_raised(local_run, setup, tmp_path):
    """A finished run of that name: Modal must not spend ten GPU attempts on it."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(setup["runs"] / "local", runs / "done")
    attempt = container_attempt(setup, runs, "done")
    out = attempt.communicate(timeout=300)[0]
    assert attempt.returncode == 0, out
    assert '"status": "error"' in out and "is finished: pass --overwrite" in out


def test_a_broken_dataset_exits_with_a_message_naming_the_file(setup, tmp_path):
    import shutil

    root = Path(shutil.copytree(setup["data"], tmp_path / "ESC-50-master",
                                ignore=shutil.ignore_patterns(".feature-cache")))
    victim = sorted((root / "audio").iterdir())[0]
    victim.unlink()
    args = setup["cli"]("broken")
    args[args.index("--data-dir") + 1] = str(tmp_path)
    proc = subprocess.run(args, cwd=ROOT, env=setup["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"audio/{victim.name} is listed in meta/esc50.csv but does not exist" in proc.stderr
    assert not (setup["runs"] / "broken").exists()


def test_without_local_it_says_how_to_run_on_modal(tmp_path):
    proc = subprocess.run([sys.executable, "train_modal.py", "--epochs", "1"], cwd=ROOT,
                          env=bare_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "modal run train_modal.py" in proc.stderr


def test_container_work_publishes_every_epoch_and_a_restarted_input_resumes(setup, tmp_path):
    """What train_remote does in Modal, with the Volume commits replaced by counters."""
    import shutil

    import torch

    import train_modal

    data_dir = tmp_path / "data"
    shutil.copytree(setup["data"], data_dir / "ESC-50-master", ignore=shutil.ignore_patterns(".feature-cache"))
    commits = {"data": 0, "runs": 0}
    preempt_after = {"runs": 2}

    def commit_runs():
        commits["runs"] += 1
        if commits["runs"] == preempt_after["runs"]:
            os.kill(os.getpid(), signal.SIGTERM)  # what Modal sends before it restarts the input

    def commit_data():
        commits["data"] += 1

    argv = ["--run-name", "volume-run", "--epochs", "4", "--batch-size", "4", "--no-progress", *SMALL_MODEL]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(train_modal.TrainingInterrupted, match="'volume-run' was stopped by a signal after 2"):
            train_modal.train_on_volumes(argv, str(data_dir), str(tmp_path / "runs"), commit_data, commit_runs)
        assert commits["runs"] == 2 + 1  # two epochs, then the final commit publishes the stop
        preempt_after["runs"] = -1
        again = train_modal.train_on_volumes(argv, str(data_dir), str(tmp_path / "runs"), commit_data, commit_runs)
    finally:
        torch.set_num_threads(threads)
    assert again["status"] == "finished" and again["epochs_completed"] == 4
    assert commits["runs"] == 3 + 2 + 1
    assert commits["data"] == 4  # after download (twice) and after the feature cache is built (twice)
    config = json.loads((tmp_path / "runs" / "volume-run" / "config.json").read_text())
    assert len(config["resumes"]) == 1 and config["resumes"][0]["epoch"] == 3
