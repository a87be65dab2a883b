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
import os
import sys
from collections.abc import Callable
from pathlib import Path

import modal

APP_NAME = "audio-cnn-train"
DATA_VOLUME = "audio-cnn-data"
RUNS_VOLUME = os.environ.get("AUDIO_CNN_VOLUME", "audio-cnn-runs")
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


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from core.training import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="train_modal.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = p.add_argument_group("where it runs")
    mode.add_argument("--local", action="store_true", help="train on this machine (no Modal account)")
    mode.add_argument("--data-dir", default=d.data_dir, help="ESC-50 folder, downloaded into it if missing (local)")
    mode.add_argument("--runs-dir", default=os.environ.get("AUDIO_CNN_RUNS_DIR", d.runs_dir), help="(local)")
    mode.add_argument("--cache-dir", default=None, help="feature cache (default: <dataset>/.feature-cache)")
    mode.add_argument("--gpu", default=DEFAULT_GPU, help="Modal GPU type (Modal)")
    mode.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds (Modal)")
    mode.add_argument("--device", default=d.device, help="auto, cuda, mps or cpu")
    run = p.add_argument_group("run")
    run.add_argument("--run-name", default=d.run_name, help="default: run-YYYYmmdd-HHMMSS")
    run.add_argument("--resume", action="store_true", help="continue the run from its last.pt, with the hyperparameters saved in it")
    run.add_argument("--cv", action="store_true", help="5-fold cross-validation: runs NAME/fold-1..5")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    data = p.add_argument_group("data")
    data.add_argument("--train-folds", type=_ints, default=d.train_folds)
    data.add_argument("--val-fold", type=int, default=d.val_fold, help="selects best.pt")
    data.add_argument("--test-fold", type=int, default=0, help="held-out fold to report (0: none)")
    data.add_argument("--no-cache", action="store_true", help="decode audio every epoch (slow)")
    data.add_argument("--no-download", action="store_true", help="fail instead of downloading ESC-50")
    data.add_argument("--data-url", default=d.data_url)
    data.add_argument("--data-sha256", default=None, help="pin the archive's checksum")
    recipe = p.add_argument_group("recipe")
    for name in ("epochs", "batch_size", "seed", "freq_mask", "time_mask"):
        recipe.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "max_lr", "weight_decay", "pct_start", "label_smoothing", "mixup_alpha", "mixup_prob"):
        recipe.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    model = p.add_argument_group("model")
    model.add_argument("--num-classes", type=int, default=d.model.num_classes)
    model.add_argument("--stem-channels", type=int, default=d.model.stem_channels)
    model.add_argument("--widths", type=_ints, default=d.model.widths)
    model.add_argument("--depths", type=_ints, default=d.model.depths)
    model.add_argument("--dropout", type=float, default=d.model.dropout)
    return p


def config_from_args(args: argparse.Namespace):
    from core.model import ModelConfig
    from core.training import TrainConfig

    return TrainConfig(
        data_dir=args.data_dir, data_url=args.data_url, data_sha256=args.data_sha256,
        download=not args.no_download, train_folds=tuple(args.train_folds), val_fold=args.val_fold,
        test_fold=args.test_fold or None, feature_cache=not args.no_cache, cache_dir=args.cache_dir,
        runs_dir=args.runs_dir, run_name=args.run_name, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, max_lr=args.max_lr, pct_start=args.pct_start,
        label_smoothing=args.label_smoothing, mixup_alpha=args.mixup_alpha, mixup_prob=args.mixup_prob,
        freq_mask=args.freq_mask, time_mask=args.time_mask, seed=args.seed, device=args.device,
        progress=not args.no_progress,
        model=ModelConfig(num_classes=args.num_classes, stem_channels=args.stem_channels,
                          widths=tuple(args.widths), depths=tuple(args.depths), dropout=args.dropout),
    )


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
    from core.esc50 import prepare
    from core.evaluation import read_json

    args = build_parser().parse_args(argv)
    args.data_dir, args.runs_dir = data_dir, runs_dir
    args.cache_dir = args.cache_dir or f"{data_dir}/feature-cache"
    config = config_from_args(args)
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
    from core.esc50 import DatasetError
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
