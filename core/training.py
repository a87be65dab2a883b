"""The training loop: ESC-50 folds -> AudioCNN, logged as a TensorBoard run, resumable.

    runs/<run-name>/
      events.out.tfevents.*   one scalar point per epoch, step = epoch number (1-based):
                              train/loss  train/accuracy  val/loss  val/accuracy  lr
                              perf/epoch_seconds  perf/samples_per_second
                              hparam/best_val_accuracy (every epoch), hparam/reported_accuracy (at the end)
                              and the hparams session, written by the same writer (no subfolder)
      config.json             TrainConfig, the data and fold split, device, resumes
      summary.json            status running/finished/stopped, best epoch, best val accuracy,
                              per-class accuracy, confusion matrix, evaluation protocol
      best.pt, last.pt        core.checkpoint files; last.pt also holds the training state

`train(config)` runs the seed's recipe (TrainConfig's defaults): AdamW, OneCycleLR
stepped per batch, label smoothing, SpecAugment on every batch and mixup on
some. The data order and every augmentation draw come from one seeded
generator, dropout from torch's global RNG; both are saved in last.pt with the
optimizer, scheduler, scaler and the position inside the epoch, so
`train(config, resume=True)` ends bit-identical to an uninterrupted run on CPU.
SIGINT/SIGTERM (or `stop.set()`) finish the current batch, save last.pt and
return with status "stopped". CUDA gets mixed precision and channels-last.
`cross_validate(config)` runs ESC-50's 5-fold protocol as runs <name>/fold-k.

Public API: TrainConfig, train, cross_validate, TrainResult, TrainingError, pick_device.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm

from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.esc50 import (ESC50_URL, AudioFeatures, CachedFeatures, Split, cross_validation_splits,
                        load_dataset, prepare)
from core.evaluation import (config_json, cv_summary, evaluate, read_json, summary_json,
                             write_json)
from core.features import FeatureConfig, mixup, spec_augment
from core.model import AudioCNN, ModelConfig, count_parameters
from core.runs import flatten


class TrainingError(RuntimeError):
    """A run that cannot start or resume (the message says what to do)."""


@dataclass(frozen=True)
class TrainConfig:
    # data: ESC-50 in data_dir (downloaded once if missing), folds, feature cache
    data_dir: str = "data"
    data_url: str = ESC50_URL
    data_sha256: str | None = None
    download: bool = True
    train_folds: tuple[int, ...] = (1, 2, 3, 4)
    val_fold: int = 5
    test_fold: int | None = None          # set it (e.g. val 4, test 5) for the holdout protocol
    feature_cache: bool = True
    cache_dir: str | None = None          # default: <dataset>/.feature-cache
    # where the run goes
    runs_dir: str = "runs"
    run_name: str = ""                    # default: run-YYYYmmdd-HHMMSS
    # the seed's recipe
    epochs: int = 100
    batch_size: int = 32
    lr: float = 5e-4                      # AdamW's; OneCycleLR drives it from max_lr / 25
    weight_decay: float = 0.01
    max_lr: float = 2e-3
    pct_start: float = 0.1
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.2
    mixup_prob: float = 0.3
    freq_mask: int = 30
    time_mask: int = 80
    model: ModelConfig = ModelConfig()
    features: FeatureConfig = FeatureConfig()
    # how it runs
    seed: int = 0
    device: str = "auto"                  # auto: cuda, then mps, then cpu
    amp: bool = True                      # CUDA only
    channels_last: bool = True            # CUDA only
    eval_batch_size: int = 64
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_folds"] = list(self.train_folds)
        d["model"], d["features"] = self.model.to_dict(), self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        kwargs = {k: d[k] for k in (f.name for f in fields(cls)) if k in d}
        kwargs["train_folds"] = tuple(int(f) for f in kwargs.get("train_folds", cls.train_folds))
        kwargs["model"] = ModelConfig.from_dict(d.get("model", {}))
        kwargs["features"] = FeatureConfig.from_dict(d.get("features", {}))
        return cls(**kwargs)

    @property
    def split(self) -> Split:
        return Split(tuple(self.train_folds), self.val_fold, self.test_fold)


# Fields a resumed run takes from the caller; every other one comes from last.pt.
RUNTIME_FIELDS = ("data_dir", "data_url", "data_sha256", "download", "feature_cache", "cache_dir",
                  "runs_dir", "device", "amp", "channels_last", "eval_batch_size", "progress")


@dataclass
class TrainResult:
    run_dir: Path
    status: str                           # "finished" or "stopped"
    epochs_completed: int
    best_epoch: int | None
    best_val_accuracy: float | None
    reported_accuracy: float | None
    summary: dict


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def train(config: TrainConfig, resume: bool = False, stop: threading.Event | None = None,
          on_epoch_end: Callable[[dict], None] | None = None, cv: bool = False) -> TrainResult:
    """Train (or, with resume=True, continue) the run `config.runs_dir/config.run_name`.

    The data is prepared and checked first: a DatasetError (or TrainingError)
    raised before any run folder exists. `stop` ends the run like SIGTERM does.
    `on_epoch_end(row)` is called after each epoch's files are written (row:
    "epoch" and the logged scalars) and once more with {"stopped": True} when
    stopped: the place to commit a Modal Volume. `cv` marks a 5-fold CV member.
    Returns TrainResult; on a stop its status is "stopped" and last.pt resumes it.
    """
    if not config.run_name:
        config = replace(config, run_name=time.strftime("run-%Y%m%d-%H%M%S"))
    run_dir = Path(config.runs_dir) / config.run_name
    state: dict | None = None
    if resume:
        try:
            last = load_checkpoint(run_dir / "last.pt")
        except CheckpointError as err:
            raise TrainingError(f"Cannot resume run {config.run_name!r}: {err}") from None
        state = last.extra
        saved = TrainConfig.from_dict(state["train_config"])
        config = replace(saved, **{k: getattr(config, k) for k in RUNTIME_FIELDS})
    elif (run_dir / "last.pt").exists() or (run_dir / "summary.json").exists():
        raise TrainingError(f"Run {run_dir} already exists: resume it (--resume) or pick another --run-name.")

    # Everything that can be wrong with the data fails here, before a run folder exists.
    split = config.split
    root = prepare(config.data_dir, config.data_url, config.data_sha256, config.download, config.progress)
    data = load_dataset(root, config.model.num_classes)
    device = pick_device(config.device)
    cuda = device.type == "cuda"
    use_amp, channels_last = config.amp and cuda, config.channels_last and cuda
    if config.feature_cache:
        source = CachedFeatures(data, config.features, config.cache_dir, device, config.progress)
    else:
        source = AudioFeatures(data, config.features, device)
    targets = data.targets()
    train_idx = torch.tensor(data.indices(split.train_folds))
    val_idx = torch.tensor(data.indices([split.val_fold]))
    test_idx = torch.tensor(data.indices([split.test_fold])) if split.test_fold else None
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    if config.pct_start * config.epochs * steps_per_epoch <= 1:  # OneCycleLR divides by zero at 1
        raise TrainingError(f"{config.epochs} epochs of {steps_per_epoch} batches are too few steps for "
                            f"OneCycleLR's warm-up (pct_start {config.pct_start} of them must exceed 1 "
                            "step): train for more epochs.")

    torch.manual_seed(config.seed)
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = AudioCNN(config.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=config.pct_start)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    generator = torch.Generator().manual_seed(config.seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    epoch, batch, perm = 1, 0, None
    sums = {"loss": 0.0, "correct": 0.0, "seen": 0, "seconds": 0.0}
    best: dict | None = None
    last_val: dict | None = None
    if state:
        model.load_state_dict(last.model_state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if cuda and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        epoch, batch, perm = state["epoch"], state["batch"], state.get("permutation")
        sums, best, last_val = dict(state["sums"]), state.get("best"), state.get("last_val")

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (batch, 1, n_mels, frames)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext():
            return model(x)

    def save_last(epoch: int, batch: int, perm: torch.Tensor | None) -> None:
        extra = {
            "train_config": config.to_dict(), "epoch": epoch, "batch": batch, "permutation": perm,
            "sums": dict(sums), "best": best, "last_val": last_val,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if cuda else []},
        }
        meta = {"run_name": config.run_name, "epoch": epoch - 1, "val_fold": split.val_fold}
        save_checkpoint(run_dir / "last.pt", model, config.features, data.classes, meta, extra)

    def write_summary(status: str, completed: int, error: str | None = None) -> dict:
        summary = summary_json(status=status, run_name=config.run_name, classes=data.classes,
                               split=split, epochs_completed=completed, epochs_total=config.epochs,
                               best=best, last_val=last_val, cv=cv, error=error)
        write_json(run_dir / "summary.json", summary)
        return summary

    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_json(run_dir / "config.json") if state else {}
    environment = {"device": str(device), "amp": use_amp, "channels_last": channels_last,
                   "model_parameters": count_parameters(model)}
    write_json(run_dir / "config.json", config_json(config.to_dict(), data, split, environment, previous,
                                                    resumed_at=(epoch, batch) if state else None))
    # purge_step: should a previous process have logged epochs after its last.pt, TensorBoard drops them.
    writer = SummaryWriter(str(run_dir), purge_step=epoch if state else None)
    hp = {k: (str(v) if isinstance(v, (list, tuple)) or v is None else v)
          for k, v in flatten(config.to_dict()).items()}
    for proto in hparams_summary(hp, {"hparam/best_val_accuracy": 0.0, "hparam/reported_accuracy": 0.0}):
        writer.file_writer.add_summary(proto)
    write_summary("running", epoch - 1)
    status, trained = "finished", epoch <= config.epochs
    try:
        with _stop_on_signals(stop or threading.Event()) as stop:
            while epoch <= config.epochs:
                if batch == 0:
                    if stop.is_set():
                        status = "stopped"
                        break
                    perm = torch.randperm(len(train_idx), generator=generator)
                    sums = {"loss": 0.0, "correct": 0.0, "seen": 0, "seconds": 0.0}
                model.train()
                bar = tqdm(total=steps_per_epoch, initial=batch, desc=f"epoch {epoch}/{config.epochs}",
                           leave=False, disable=not config.progress, file=sys.stderr)
                started = time.perf_counter()
                while batch < steps_per_epoch and not (batch > 0 and stop.is_set()):
                    idx = train_idx[perm[batch * config.batch_size : (batch + 1) * config.batch_size]]
                    x, y = source.batch(idx), targets[idx].to(device)
                    x = spec_augment(x, config.freq_mask, config.time_mask, generator=generator)
                    if float(torch.rand((), generator=generator)) < config.mixup_prob:
                        x, y_a, y_b, lam = mixup(x, y, config.mixup_alpha, generator=generator)
                    else:
                        y_a, y_b, lam = y, y, 1.0
                    logits = forward(x)
                    loss = lam * criterion(logits.float(), y_a) + (1 - lam) * criterion(logits.float(), y_b)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    lr = optimizer.param_groups[0]["lr"]
                    scheduler.step()
                    pred = logits.argmax(dim=1)
                    sums["loss"] += float(loss.detach()) * len(idx)
                    sums["correct"] += float(lam * (pred == y_a).sum() + (1 - lam) * (pred == y_b).sum())
                    sums["seen"] += len(idx)
                    sums["lr"] = lr
                    batch += 1
                    bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", refresh=False)
                    bar.update()
                bar.close()
                sums["seconds"] += time.perf_counter() - started
                if batch < steps_per_epoch:  # stopped part-way: last.pt resumes at this batch
                    status = "stopped"
                    break

                val_started = time.perf_counter()
                model.eval()
                val = evaluate(forward, source.batch, val_idx, targets, len(data.classes), criterion,
                               config.eval_batch_size)
                last_val = val.to_dict(data.classes)
                if best is None or val.accuracy > best["val"]["accuracy"]:
                    test = None
                    if test_idx is not None:
                        test = evaluate(forward, source.batch, test_idx, targets, len(data.classes),
                                        criterion, config.eval_batch_size).to_dict(data.classes)
                    best = {"epoch": epoch, "val": last_val, "test": test}
                    meta = {"run_name": config.run_name, "epoch": epoch, "val_accuracy": val.accuracy,
                            "val_fold": split.val_fold, "protocol": split.protocol,
                            "test_accuracy": test["accuracy"] if test else None}
                    save_checkpoint(run_dir / "best.pt", model, config.features, data.classes, meta)
                row = {
                    "train/loss": sums["loss"] / sums["seen"], "train/accuracy": sums["correct"] / sums["seen"],
                    "val/loss": val.loss, "val/accuracy": val.accuracy, "lr": sums["lr"],
                    # train time (summed over a resume) + this epoch's evaluation and best.pt
                    "perf/epoch_seconds": sums["seconds"] + time.perf_counter() - val_started,
                    "perf/samples_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
                    "hparam/best_val_accuracy": best["val"]["accuracy"],
                }
                for tag, value in row.items():
                    writer.add_scalar(tag, value, epoch)
                writer.flush()
                epoch, batch = epoch + 1, 0
                save_last(epoch, 0, None)
                summary = write_summary("finished" if epoch > config.epochs else "running", epoch - 1)
                print(f"epoch {epoch - 1}/{config.epochs}  train loss {row['train/loss']:.4f} "
                      f"acc {row['train/accuracy']:.3f}  val loss {val.loss:.4f} acc {val.accuracy:.3f}  "
                      f"lr {row['lr']:.2e}  {row['perf/samples_per_second']:.0f} samples/s", flush=True)
                if on_epoch_end:
                    on_epoch_end({"epoch": epoch - 1, **row})
            if status == "stopped":
                save_last(epoch, batch, perm if batch else None)
                print(f"stopped at epoch {epoch}, batch {batch}; last.pt saved: resume with --resume",
                      flush=True)
            summary = write_summary(status, epoch - 1)
            reported = summary["evaluation"]["reported_accuracy"]
            if status == "finished" and reported is not None and trained:
                writer.add_scalar("hparam/reported_accuracy", reported, config.epochs)
    except BaseException as err:
        write_summary("stopped", epoch - 1, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        writer.close()
    if on_epoch_end and status == "stopped":
        on_epoch_end({"epoch": epoch - 1, "stopped": True})
    return TrainResult(run_dir, status, epoch - 1, summary["best_epoch"], summary["best_val_accuracy"],
                       summary["evaluation"]["reported_accuracy"], summary)


def cross_validate(config: TrainConfig, resume: bool = False, stop: threading.Event | None = None,
                   on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """ESC-50's 5-fold protocol: runs <run_name>/fold-1 .. fold-5, each validated on its own fold.

    Finished folds are skipped on a rerun with resume=True. Writes and returns
    <runs_dir>/<run_name>/cv_summary.json: every fold's final accuracy and their mean.
    """
    if not config.run_name:
        config = replace(config, run_name=time.strftime("cv-%Y%m%d-%H%M%S"))
    parent = Path(config.runs_dir) / config.run_name
    folds: dict[str, float | None] = {}
    status = "finished"
    for split in cross_validation_splits():
        fold_config = replace(config, run_name=f"{config.run_name}/fold-{split.val_fold}",
                              train_folds=split.train_folds, val_fold=split.val_fold, test_fold=None)
        fold_dir = parent / f"fold-{split.val_fold}"
        summary = read_json(fold_dir / "summary.json")
        if summary.get("status") != "finished":
            resumable = resume and (fold_dir / "last.pt").exists()
            summary = train(fold_config, resume=resumable, stop=stop, on_epoch_end=on_epoch_end, cv=True).summary
        folds[f"fold-{split.val_fold}"] = summary["evaluation"]["reported_accuracy"]
        if summary["status"] != "finished":
            status = "stopped"
            break
    result = cv_summary(status, folds, config.to_dict())
    parent.mkdir(parents=True, exist_ok=True)
    write_json(parent / "cv_summary.json", result)
    return result


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGINT/SIGTERM set `stop` (the loop saves last.pt and returns); a second Ctrl-C interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{signal.Signals(signum).name}: finishing this batch, then saving last.pt", flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
