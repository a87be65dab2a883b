"""Train AudioCNN on ESC-50: on a Modal GPU, or on this machine without a Modal account.

    modal run train_modal.py --epochs 100 --run-name baseline            # on a Modal GPU
    modal run train_modal.py --run-name baseline --resume                # continue from last.pt
    modal run train_modal.py --run-name sel4 --train-folds 1,2,3 --val-fold 4 --test-fold 5
    modal run train_modal.py --cv --run-name cv                          # 5-fold cross-validation
    modal run train_modal.py --gpu H100 --timeout 7200 --epochs 100 --run-name big
    modal run --detach train_modal.py --run-name overnight               # survives closing the terminal
    python train_modal.py --local --data-dir data --runs-dir runs --epochs 3 --run-name try

Both modes parse the same flags (`python train_modal.py --help`) into a
`core.training.TrainConfig` and call `core.training.train`; this file only
wires storage. On Modal, ESC-50 is downloaded once into the `audio-cnn-data`
Volume (with the feature cache next to it) and runs go to the runs Volume
(`AUDIO_CNN_VOLUME`, default `audio-cnn-runs`), committed after every epoch so
the dashboard can follow a live run (`modal volume get audio-cnn-runs /NAME runs/`).
Modal restarts a preempted function on the same input; an unfinished run with
a last.pt then resumes by itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import modal

from core.settings import Settings

APP_NAME = "audio-cnn-train"
DATA_VOLUME = "audio-cnn-data"
RUNS_VOLUME = Settings.from_env().volume
DATA_MOUNT, RUNS_MOUNT = "/data", "/runs"
DEFAULT_GPU = "A10G"
DEFAULT_TIMEOUT = 4 * 60 * 60  # seconds; Modal allows up to 24 h

image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_requirements(str(Path(__file__).parent / "requirements.txt"))
    .add_local_python_source("core")
)
app = modal.App(APP_NAME, image=image)
data_volume = modal.Volume.from_name(DATA_VOLUME, create_if_missing=True)
runs_volume = modal.Volume.from_name(RUNS_VOLUME, create_if_missing=True)


# -- flags (one parser for both modes) ----------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Where it runs and which run, then every TrainConfig field as a flag (core.train_config)."""
    from core.settings import Settings
    from core.train_config import TrainConfig, add_arguments

    p = argparse.ArgumentParser(prog="train_modal.py", description=__doc__.split("\n\n")[0])
    mode = p.add_argument_group("where it runs")
    mode.add_argument("--local", action="store_true", help="train on this machine (no Modal account)")
    mode.add_argument("--gpu", default=DEFAULT_GPU, help=f"Modal GPU type (Modal; default: {DEFAULT_GPU})")
    mode.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                      help=f"seconds before Modal stops the function (default: {DEFAULT_TIMEOUT})")
    run = p.add_argument_group("which run")
    run.add_argument("--resume", action="store_true",
                     help="continue the run from its last.pt, with the hyperparameters saved in it")
    run.add_argument("--cv", action="store_true", help="5-fold cross-validation: runs NAME/fold-1..5")
    add_arguments(p, TrainConfig(runs_dir=str(Settings.from_env().runs_dir)))
    return p


def run_training(config, resume: bool, cv: bool, on_epoch_end=None) -> dict:
    """Train (or cross-validate); returns the summary. Raises DatasetError / TrainingError."""
    from core.training import cross_validate, train

    if cv:
        return cross_validate(config, resume=resume, on_epoch_end=on_epoch_end)
    return train(config, resume=resume, on_epoch_end=on_epoch_end).summary


# -- Modal ---------------------------------------------------------------------------------


@app.function(gpu=DEFAULT_GPU, timeout=DEFAULT_TIMEOUT,
              volumes={DATA_MOUNT: data_volume, RUNS_MOUNT: runs_volume})
def train_remote(argv: list[str]) -> dict:
    """Runs in the container: data from the data Volume, the run into the runs Volume."""
    return train_on_volumes(argv, DATA_MOUNT, RUNS_MOUNT, data_volume.commit, runs_volume.commit)


def train_on_volumes(argv: list[str], data_dir: str, runs_dir: str,
                     commit_data: Callable[[], None], commit_runs: Callable[[], None]) -> dict:
    """The container's work, without Modal: prepare data once, train, publish every epoch.

    An unfinished run that already has a last.pt is resumed: that is how a
    preempted (restarted) function continues instead of failing.
    """
    from core.esc50_download import prepare
    from core.evaluation import read_json
    from core.train_config import config_from_args

    args = build_parser().parse_args(argv)
    config = config_from_args(args, data_dir=data_dir, runs_dir=runs_dir,
                              cache_dir=args.cache_dir or f"{data_dir}/feature-cache")
    prepare(config.data_dir, config.data_url, config.data_sha256, config.download, config.progress)
    commit_data()  # ESC-50 is downloaded once, for every later run

    run_dir = Path(runs_dir) / config.run_name
    unfinished = (run_dir / "last.pt").exists() and read_json(run_dir / "summary.json").get("status") != "finished"
    cache_committed = False

    def publish(_row: dict) -> None:
        nonlocal cache_committed
        if not cache_committed:  # the feature cache was built before the first epoch
            commit_data()
            cache_committed = True
        commit_runs()  # the writer has flushed: a dashboard syncing the Volume sees this epoch

    try:
        return run_training(config, args.resume or unfinished or args.cv, args.cv, publish)
    finally:
        commit_runs()


@app.local_entrypoint()
def main(*argv: str) -> None:
    """`modal run train_modal.py [flags]`: the flags are this file's (see --help)."""
    args = build_parser().parse_args(list(argv))
    if not args.run_name:  # name it here so the command to fetch it can be printed
        import time

        argv = (*argv, "--run-name", time.strftime("run-%Y%m%d-%H%M%S"))
        args.run_name = argv[-1]
    print(f"training {args.run_name!r} on a Modal {args.gpu} (timeout {args.timeout} s)")
    remote = train_remote.with_options(gpu=args.gpu, timeout=args.timeout)
    summary = remote.remote(list(argv))
    print(_report(summary))
    print(f"fetch it: modal volume get {RUNS_VOLUME} /{args.run_name} runs/")


def _report(summary: dict) -> str:
    evaluation = summary.get("evaluation", summary)
    reported = evaluation.get("reported_accuracy")
    shown = f"{reported:.4f}" if isinstance(reported, float) else "n/a"
    return (f"status {summary.get('status')}: reported accuracy {shown} "
            f"({evaluation.get('protocol')}: {evaluation.get('reported_metric')})")


# -- local ---------------------------------------------------------------------------------


def cli(argv: list[str] | None = None) -> int:
    from core.datasets import DatasetError
    from core.train_config import config_from_args
    from core.training import TrainingError

    args = build_parser().parse_args(argv)
    if not args.local:
        print("To train on Modal: modal run train_modal.py [flags]. "
              "To train here: python train_modal.py --local [flags].", file=sys.stderr)
        return 2
    config = config_from_args(args)
    try:
        summary = run_training(config, args.resume, args.cv)
    except (DatasetError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_report(summary))
    return 0 if summary.get("status") == "finished" else 130


if __name__ == "__main__":
    sys.exit(cli())
