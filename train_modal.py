"""Train AudioCNN on ESC-50: on a Modal GPU, or on this machine without a Modal account.

    modal run --detach train_modal.py --epochs 100 --run-name baseline    # on a Modal GPU
    modal run --detach train_modal.py --run-name baseline                 # the same name again: continues it
    modal run train_modal.py --run-name baseline --overwrite              # a finished run, from scratch
    modal run train_modal.py --run-name sel4 --train-folds 1,2,3 --val-fold 4 --test-fold 5
    modal run train_modal.py --cv --run-name cv                           # 5-fold cross-validation
    modal run train_modal.py --gpu H100 --timeout 7200 --epochs 100 --run-name big
    python train_modal.py --local --data-dir data --runs-dir runs --epochs 3 --run-name try
    python train_modal.py --local --data-dir my-sounds --run-name mine          # DIR/<class>/*.wav or labels.csv
    modal run train_modal.py --data-dir my-sounds --init-from /runs/base/best.pt  # my-sounds in the data Volume

Both modes parse the same flags (`python train_modal.py --help`) into a
`core.training.TrainConfig` and call `core.training.train`; this file only
wires storage. On Modal, `--data-dir NAME` other than the default is a folder
inside the `audio-cnn-data` Volume (`modal volume put audio-cnn-data my-sounds
/my-sounds`), and `--init-from` a path in the container (runs are under
/runs); otherwise ESC-50 is downloaded once into the `audio-cnn-data`
Volume (with the feature cache next to it) and runs go to the runs Volume
(`AUDIO_CNN_VOLUME`, default `audio-cnn-runs`), committed after every epoch so
the dashboard can follow a live run (the command to fetch one is printed).

Preemption: Modal sends SIGTERM (or SIGINT), waits a short grace period and
restarts the input on a fresh container unless the function returned. So on
a signal the training function saves last.pt, commits the Volume and RAISES
(TrainingInterrupted); `retries=modal.Retries(initial_delay=0, max_retries=10)`
then runs the same arguments again, and core.training continues an
unfinished run of that name by itself (or starts it again when it was killed
before its first last.pt). Errors that a retry cannot fix (a finished run,
a broken dataset) are returned, not raised, so Modal does not retry them. The
local entrypoint `.spawn()`s the call and waits on it (a `.remote()` call
expires after 24 h); with `modal run --detach` the run survives closing the
terminal, and the same command later waits for or continues it.
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
RETRIES = modal.Retries(initial_delay=0.0, max_retries=10)  # a preempted run comes back at once

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
                     help="insist on continuing: fail when the run has no last.pt (a rerun continues anyway)")
    run.add_argument("--overwrite", action="store_true",
                     help="when a run of this name has finished, train it again from scratch")
    run.add_argument("--cv", action="store_true", help="5-fold cross-validation: runs NAME/fold-1..5")
    add_arguments(p, TrainConfig(runs_dir=str(Settings.from_env().runs_dir)))
    return p


def run_training(args, config, on_epoch_end=None) -> dict:
    """Train (or cross-validate) as the flags say; returns the summary. Raises DatasetError / TrainingError."""
    from core.training import cross_validate, train

    if args.cv:
        return cross_validate(config, resume=args.resume, on_epoch_end=on_epoch_end, overwrite=args.overwrite)
    return train(config, resume=args.resume, on_epoch_end=on_epoch_end, overwrite=args.overwrite).summary


class TrainingInterrupted(RuntimeError):
    """Raised by the container after a signal stopped the run and last.pt was saved: Modal retries it."""


# -- Modal ---------------------------------------------------------------------------------


@app.function(gpu=DEFAULT_GPU, timeout=DEFAULT_TIMEOUT,
              volumes={DATA_MOUNT: data_volume, RUNS_MOUNT: runs_volume},
              retries=RETRIES,
              single_use_containers=True)  # every attempt on a fresh container
def train_remote(argv: list[str]) -> dict:
    """Runs in the container: data from the data Volume, the run into the runs Volume."""
    return train_on_volumes(argv, DATA_MOUNT, RUNS_MOUNT, data_volume.commit, runs_volume.commit)


def train_on_volumes(argv: list[str], data_dir: str, runs_dir: str,
                     commit_data: Callable[[], None], commit_runs: Callable[[], None]) -> dict:
    """The container's work, without Modal: prepare data once, train, publish every epoch.

    Returns the summary; {"status": "error", "error": ...} for what a retry cannot fix.
    Raises TrainingInterrupted when a signal stopped the run (last.pt saved and
    committed): that failure is what makes Modal run the same arguments again.
    """
    from core.custom_datasets import detect_layout
    from core.datasets import DatasetError
    from core.esc50_download import prepare
    from core.train_config import TrainConfig, config_from_args
    from core.training import TrainingError

    args = build_parser().parse_args(argv)
    if args.data_dir != TrainConfig.data_dir:  # your own data: a folder inside the data Volume
        data_dir = f"{data_dir}/{args.data_dir.strip('/')}"
    config = config_from_args(args, data_dir=data_dir, runs_dir=runs_dir,
                              cache_dir=args.cache_dir or f"{data_dir}/feature-cache")
    cache_committed = False

    def publish(row: dict) -> None:
        nonlocal cache_committed
        if row.get("stopped"):
            return  # the commit in `finally` below publishes the stop
        if not cache_committed:  # the feature cache was built before the first epoch
            commit_data()
            cache_committed = True
        commit_runs()  # the writer has flushed: a dashboard syncing the Volume sees this epoch

    try:
        if detect_layout(config.data_dir) in (None, "esc50"):
            prepare(config.data_dir, config.data_url, config.data_sha256, config.download, config.progress)
        commit_data()  # ESC-50 is downloaded once, for every later run
        summary = run_training(args, config, publish)
    except (DatasetError, TrainingError) as err:
        return {"status": "error", "error": str(err)}
    finally:
        commit_runs()
    if summary.get("status") != "finished":
        raise TrainingInterrupted(f"Run {config.run_name!r} was stopped by a signal after "
                                  f"{summary.get('epochs_completed', '?')} epochs; last.pt is saved on the Volume, "
                                  "and a retry of this input continues it.")
    return summary


@app.local_entrypoint()
def main(*argv: str) -> None:
    """`modal run [--detach] train_modal.py [flags]`: the flags are this file's (see --help)."""
    from core.modal_commands import fetch_run

    args = build_parser().parse_args(list(argv))
    if not args.run_name:  # name it here so that a retry continues the same run, and it can be fetched
        import time

        argv = (*argv, "--run-name", time.strftime("run-%Y%m%d-%H%M%S"))
        args.run_name = argv[-1]
    print(f"training {args.run_name!r} on a Modal {args.gpu} (timeout {args.timeout} s, up to 10 retries)")
    remote = train_remote.with_options(gpu=args.gpu, timeout=args.timeout, retries=RETRIES)
    summary = remote.spawn(list(argv)).get()
    if summary.get("status") == "error":
        raise SystemExit(f"error: {summary['error']}")
    print(_report(summary))
    print(f"fetch it: {fetch_run(RUNS_VOLUME, args.run_name, 'runs')}")


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
        summary = run_training(args, config)
    except (DatasetError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_report(summary))
    return 0 if summary.get("status") == "finished" else 130


if __name__ == "__main__":
    sys.exit(cli())
