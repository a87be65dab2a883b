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
      predictions.csv         per-clip results of the reported fold, embeddings.npz its pooled
                              features (core/clip_results.py), written when the run finishes

`train(config)` runs the seed's recipe (TrainConfig's defaults): AdamW, OneCycleLR
stepped per batch, label smoothing, SpecAugment on every batch and mixup on
some. The data order and every augmentation draw come from one seeded
generator, dropout from torch's global RNG; both are saved in last.pt with the
optimizer, scheduler, scaler and the position inside the epoch, so
`train(config, resume=True)` ends bit-identical to an uninterrupted run on CPU.
SIGINT/SIGTERM (or `stop.set()`) finish the current batch, save last.pt and
return with status "stopped". CUDA gets mixed precision and channels-last.
`cross_validate(config)` runs ESC-50's 5-fold protocol as runs <name>/fold-k.

Rerunning a run name is safe (it is what a Modal retry does): an unfinished
run continues from its last.pt, or starts again when it has none (killed in
its first epoch); only a finished run is refused, unless `overwrite=True`
trains it again from scratch. summary.json says "finished" only once every
file of the run is complete.

How it reads: `train` is the loop, top to bottom. `Job` holds what the loop
works with (data, model, optimizer, writer) and `Progress` what it has done
(epoch, batch, running sums, best); each step is one method: `train_epoch`,
`evaluate`, `save_best`, `save_last`, `log_epoch`, `write_summary`.

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
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm

from core.atomic_write import atomic_write
from core.audio import SAMPLE_RATE
from core.checkpoint import CheckpointError, content_id, load_checkpoint, save_checkpoint
from core.clip_results import EMBEDDINGS, PREDICTIONS, clip_table, logits_and_embeddings, write_clip_results
from core.custom_datasets import open_dataset, split_csv
from core.datasets import Dataset, DatasetError, Split, cross_validation_splits
from core.evaluation import config_json, cv_summary, evaluate, read_json, summary_json, write_json
from core.feature_cache import AudioFeatures, CachedFeatures
from core.features import mixup, spec_augment
from core.fine_tune import FineTuneError, describe, freeze_stages, hold_frozen, load_parent, start_from
from core.model import AudioCNN, count_parameters
from core.runs import flatten
from core.train_config import RUNTIME_FIELDS, TrainConfig

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "cross_validate", "pick_device", "train"]


class TrainingError(RuntimeError):
    """A run that cannot start or resume (the message says what to do)."""


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


def _fresh_sums() -> dict:
    return {"loss": 0.0, "correct": 0.0, "seen": 0, "seconds": 0.0}


@dataclass
class Progress:
    """Where the run is: everything besides weights and optimizer that last.pt saves to resume."""

    epoch: int = 1                        # the epoch being trained (1-based)
    batch: int = 0                        # batches of it done; 0 = it has not started
    permutation: torch.Tensor | None = None  # this epoch's data order, once it started
    sums: dict = field(default_factory=_fresh_sums)  # running train loss/accuracy/seconds of this epoch
    best: dict | None = None              # {"epoch", "val", "test"} of best.pt
    last_val: dict | None = None          # the latest validation result

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "permutation": self.permutation,
                "sums": dict(self.sums), "best": self.best, "last_val": self.last_val}

    @classmethod
    def from_dict(cls, d: dict) -> Progress:
        return cls(d["epoch"], d["batch"], d.get("permutation"), dict(d["sums"]), d.get("best"), d.get("last_val"))


def open_data(config: TrainConfig, report=print) -> Dataset:
    """The run's dataset, any layout (core.custom_datasets), checked; `report` gets the check's table."""
    return open_dataset(config.data_dir, folds=config.folds, split_seed=config.split_seed,
                        clip_seconds=config.clip_seconds, num_classes=config.model.num_classes or None,
                        url=config.data_url, sha256=config.data_sha256, download=config.download,
                        progress=config.progress, report=report)


def run_split(config: TrainConfig, data: Dataset) -> Split:
    """The folds config names, checked against the folds the data has."""
    k = max(data.folds)
    try:
        return Split(tuple(config.train_folds), config.val_fold, config.test_fold or None, folds=k)
    except DatasetError as err:
        raise DatasetError(f"{err} This dataset has folds 1-{k}: pass e.g. --train-folds "
                           f"{','.join(map(str, range(1, k)))} --val-fold {k}.") from None


class Job:
    """One run's working parts; built (and the data checked) before any run folder exists."""

    def __init__(self, config: TrainConfig, cv: bool = False):
        self.data = open_data(config)
        self.parent = None
        if config.init_from:  # fine-tuning: the parent's architecture with this data's classes
            try:
                self.parent, model = load_parent(config.init_from, self.data.classes, config.model.dropout)
            except FineTuneError as err:
                raise TrainingError(str(err)) from None
            config = replace(config, model=model)
        elif config.model.num_classes == 0:  # as many outputs as the data has classes
            config = replace(config, model=replace(config.model, num_classes=len(self.data.classes)))
        self.config, self.cv = config, cv
        self.run_dir = Path(config.runs_dir) / config.run_name
        self.split = run_split(config, self.data)
        self.device = pick_device(config.device)
        cuda = self.device.type == "cuda"
        self.use_amp, self.channels_last = config.amp and cuda, config.channels_last and cuda
        self.source = (CachedFeatures(self.data, config.features, config.cache_dir, self.device, config.progress)
                       if config.feature_cache else AudioFeatures(self.data, config.features, self.device))
        self.targets = self.data.targets()
        self.train_idx = torch.tensor(self.data.indices(self.split.train_folds))
        self.val_idx = torch.tensor(self.data.indices([self.split.val_fold]))
        self.test_idx = torch.tensor(self.data.indices([self.split.test_fold])) if self.split.test_fold else None
        self.steps_per_epoch = math.ceil(len(self.train_idx) / config.batch_size)
        if config.pct_start * config.epochs * self.steps_per_epoch <= 1:  # OneCycleLR divides by zero at 1
            raise TrainingError(f"{config.epochs} epochs of {self.steps_per_epoch} batches are too few steps for "
                                f"OneCycleLR's warm-up (pct_start {config.pct_start} of them must exceed 1 "
                                "step): train for more epochs.")
        self._build_model()
        self.progress = Progress()
        self.saved_at: tuple[int, int] | None = None  # (epoch, batch) last.pt was saved at by this process
        self.writer: SummaryWriter | None = None

    def _build_model(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = AudioCNN(config.model)
        self.lineage = None  # a resumed run's weights then come from last.pt; the lineage from config.json
        if self.parent is not None:
            self.lineage = start_from(self.model, self.parent, self.data.classes, config.init_from)
        try:
            self.frozen = freeze_stages(self.model, config.freeze_stages)
        except FineTuneError as err:
            raise TrainingError(str(err)) from None
        if self.lineage is not None:
            self.lineage["frozen_stages"] = self.frozen
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=config.max_lr, epochs=config.epochs, steps_per_epoch=self.steps_per_epoch,
            pct_start=config.pct_start)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    # -- resume ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What last.pt's `extra` holds besides the weights: config, progress, optimizer, RNGs."""
        cuda = self.device.type == "cuda"
        return {
            "train_config": self.config.to_dict(), **self.progress.to_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if cuda else []},
        }

    def restore(self, weights: dict, state: dict) -> None:
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.progress = Progress.from_dict(state)
        self.saved_at = (self.progress.epoch, self.progress.batch)

    # -- the run folder -------------------------------------------------------------------

    def open_run(self, resumed: bool) -> None:
        """config.json, the event writer with the hparams session, and a "running" summary."""
        p = self.progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        previous = read_json(self.run_dir / "config.json") if resumed else {}
        environment = {"device": str(self.device), "amp": self.use_amp, "channels_last": self.channels_last,
                       "model_parameters": count_parameters(self.model)}
        write_json(self.run_dir / "config.json",
                   config_json(self.config.to_dict(), self.data, self.split, environment, previous,
                               resumed_at=(p.epoch, p.batch) if resumed else None, parent=self.lineage))
        if self.data.layout != "esc50":  # the folds this run trained on, reproducible from the file
            atomic_write(self.run_dir / "split.csv", split_csv(self.data))
        # purge_step: should a previous process have logged epochs after its last.pt, TensorBoard drops them.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=p.epoch if resumed else None)
        hp = {k: (str(v) if isinstance(v, (list, tuple)) or v is None else v)
              for k, v in flatten(self.config.to_dict()).items()}
        for proto in hparams_summary(hp, {"hparam/best_val_accuracy": 0.0, "hparam/reported_accuracy": 0.0}):
            self.writer.file_writer.add_summary(proto)
        self.write_summary("running")

    def build_summary(self, status: str, error: str | None = None) -> dict:
        p = self.progress
        return summary_json(status=status, run_name=self.config.run_name, classes=self.data.classes,
                            split=self.split, epochs_completed=p.epoch - 1, epochs_total=self.config.epochs,
                            best=p.best, last_val=p.last_val, cv=self.cv, error=error)

    def write_summary(self, status: str, error: str | None = None) -> dict:
        summary = self.build_summary(status, error)
        write_json(self.run_dir / "summary.json", summary)
        return summary

    def announce(self, resumed: bool) -> None:
        """Say on the console what starts: a continued run, or a new one (and a fine-tune's parent)."""
        name, p = self.config.run_name, self.progress
        if resumed:
            print(f"continuing run {name!r} from last.pt: epoch {p.epoch}, batch {p.batch}", flush=True)
            return
        if self.lineage is not None:
            print(describe(self.lineage, self.data.classes), flush=True)
        print(f"starting run {name!r}: {self.config.epochs} epochs", flush=True)

    # -- the steps ------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) features -> (batch, classes) logits, in the run's precision and layout."""
        x = x.unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext():
            return self.model(x)

    def train_epoch(self, stop: threading.Event) -> bool:
        """Train the rest of the current epoch; False when `stop` cut it short (state saved by the caller)."""
        p, config = self.progress, self.config
        if p.batch == 0:
            p.permutation = torch.randperm(len(self.train_idx), generator=self.generator)
            p.sums = _fresh_sums()
        self.model.train()
        hold_frozen(self.model, self.frozen)
        bar = tqdm(total=self.steps_per_epoch, initial=p.batch, desc=f"epoch {p.epoch}/{config.epochs}",
                   leave=False, disable=not config.progress, file=sys.stderr)
        started = time.perf_counter()
        while p.batch < self.steps_per_epoch and not (p.batch > 0 and stop.is_set()):
            self.train_step(self.train_idx[p.permutation[p.batch * config.batch_size:
                                                         (p.batch + 1) * config.batch_size]])
            p.batch += 1
            bar.set_postfix(loss=f"{p.sums['loss'] / p.sums['seen']:.3f}", refresh=False)
            bar.update()
        bar.close()
        p.sums["seconds"] += time.perf_counter() - started
        return p.batch == self.steps_per_epoch

    def train_step(self, idx: torch.Tensor) -> None:
        """One batch: augment (SpecAugment, sometimes mixup), forward, backward, step the optimizer and schedule."""
        config, sums = self.config, self.progress.sums
        x, y = self.source.batch(idx), self.targets[idx].to(self.device)
        x = spec_augment(x, config.freq_mask, config.time_mask, generator=self.generator)
        if float(torch.rand((), generator=self.generator)) < config.mixup_prob:
            x, y_a, y_b, lam = mixup(x, y, config.mixup_alpha, generator=self.generator)
        else:
            y_a, y_b, lam = y, y, 1.0
        logits = self.forward(x).float()
        loss = lam * self.criterion(logits, y_a) + (1 - lam) * self.criterion(logits, y_b)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        sums["lr"] = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        self.scheduler.step()
        pred = logits.argmax(dim=1)
        sums["loss"] += float(loss.detach()) * len(idx)
        sums["correct"] += float(lam * (pred == y_a).sum() + (1 - lam) * (pred == y_b).sum())
        sums["seen"] += len(idx)

    def evaluate(self, indices: torch.Tensor):
        self.model.eval()
        return evaluate(self.forward, self.source.batch, indices, self.targets, len(self.data.classes),
                        self.criterion, self.config.eval_batch_size)

    def save_best(self, val) -> None:
        """best.pt when this epoch's validation accuracy beats every earlier one (and its test result)."""
        p, split, classes = self.progress, self.split, self.data.classes
        if p.best is not None and val.accuracy <= p.best["val"]["accuracy"]:
            return
        test = self.evaluate(self.test_idx).to_dict(classes) if self.test_idx is not None else None
        meta = {"run_name": self.config.run_name, "epoch": p.epoch, "val_accuracy": val.accuracy,
                "val_fold": split.val_fold, "protocol": split.protocol,
                "test_accuracy": test["accuracy"] if test else None, **self.checkpoint_meta()}
        checkpoint_id = save_checkpoint(self.run_dir / "best.pt", self.model, self.config.features, classes, meta)
        p.best = {"epoch": p.epoch, "val": p.last_val, "test": test, "checkpoint_id": checkpoint_id}

    def checkpoint_meta(self) -> dict:
        """What every checkpoint of the run carries for serving and lineage: its clip length, its parent."""
        parent = read_json(self.run_dir / "config.json").get("parent") or self.lineage or {}
        return {"clip_seconds": self.data.clip_samples / SAMPLE_RATE,
                "parent_checkpoint_id": parent.get("checkpoint_id")}

    def save_last(self) -> None:
        """last.pt: the weights and everything `restore` needs to continue from exactly here."""
        p = self.progress
        meta = {"run_name": self.config.run_name, "epoch": p.epoch - 1, "val_fold": self.split.val_fold,
                **self.checkpoint_meta()}
        extra = self.state_dict()
        if p.batch == 0:
            extra["permutation"] = None  # a new epoch draws its order when it starts
        save_checkpoint(self.run_dir / "last.pt", self.model, self.config.features, self.data.classes, meta, extra)
        self.saved_at = (p.epoch, p.batch)

    def log_epoch(self, val, eval_started: float) -> dict:
        """This epoch's scalars into TensorBoard (flushed: a Volume commit publishes them); returns them."""
        p, sums = self.progress, self.progress.sums
        row = {
            "train/loss": sums["loss"] / sums["seen"], "train/accuracy": sums["correct"] / sums["seen"],
            "val/loss": val.loss, "val/accuracy": val.accuracy, "lr": sums["lr"],
            # train time (summed over a resume) + this epoch's evaluation and best.pt
            "perf/epoch_seconds": sums["seconds"] + time.perf_counter() - eval_started,
            "perf/samples_per_second": sums["seen"] / max(sums["seconds"], 1e-9),
            "hparam/best_val_accuracy": p.best["val"]["accuracy"],
        }
        for tag, value in row.items():
            self.writer.add_scalar(tag, value, p.epoch)
        self.writer.flush()
        print(f"epoch {p.epoch}/{self.config.epochs}  train loss {row['train/loss']:.4f} "
              f"acc {row['train/accuracy']:.3f}  val loss {val.loss:.4f} acc {val.accuracy:.3f}  "
              f"lr {row['lr']:.2e}  {row['perf/samples_per_second']:.0f} samples/s", flush=True)
        return {"epoch": p.epoch, **row}

    def write_clip_results(self) -> None:
        """predictions.csv and embeddings.npz of the reported fold, by the model that number is of
        (holdout: best.pt on the test fold; otherwise the last epoch's weights on the validation fold)."""
        fold = self.split.test_fold or self.split.val_fold
        if self.split.test_fold:  # training is over: the live model may take best.pt's weights
            self.model.load_state_dict(load_checkpoint(self.run_dir / "best.pt").model_state)
        self.model.eval()
        indices = self.data.indices([fold])
        logits, embeddings = logits_and_embeddings(self.model, self.forward, self.source.batch, indices,
                                                   self.config.eval_batch_size)
        clips = [self.data.clips[i] for i in indices]
        table = clip_table(logits, [c.target for c in clips], [c.filename for c in clips], [c.fold for c in clips],
                           self.data.classes, self.data.classes)
        weights = content_id(self.model.state_dict(), self.config.model, self.config.features, list(self.data.classes))
        write_clip_results(self.run_dir, table, embeddings, weights)

    def end_epoch(self) -> dict:
        """Evaluate, keep the best, log, then move on to the next epoch and save last.pt there.

        The summary stays "running": train() writes "finished" once the last scalars are flushed.
        """
        p = self.progress
        started = time.perf_counter()
        val = self.evaluate(self.val_idx)
        p.last_val = val.to_dict(self.data.classes)
        self.save_best(val)
        row = self.log_epoch(val, started)
        p.epoch, p.batch = p.epoch + 1, 0
        self.save_last()
        self.write_summary("running")
        return row


def train(config: TrainConfig, resume: bool = False, stop: threading.Event | None = None,
          on_epoch_end: Callable[[dict], None] | None = None, cv: bool = False,
          overwrite: bool = False) -> TrainResult:
    """Train the run `config.runs_dir/config.run_name`, or continue it when it exists unfinished.

    An unfinished run with a last.pt continues from it, with the recipe saved
    there; one without (killed in its first epoch) starts again. A finished
    run raises TrainingError unless `overwrite` (train it again from scratch).
    `resume=True` insists on continuing: TrainingError when there is no last.pt.
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
    last = _continue_from(run_dir, config.run_name, resume, overwrite)
    if last is not None:  # the saved recipe wins; where it runs is the caller's
        saved = TrainConfig.from_dict(last.extra["train_config"])
        config = replace(saved, **{k: getattr(config, k) for k in RUNTIME_FIELDS})

    job = Job(config, cv)  # everything that can be wrong with the data fails here
    config = job.config     # with the class count (and a parent's architecture) filled in
    if last is not None:
        job.restore(last.model_state, last.extra)
    else:  # a new run, one that never saved a last.pt, or a finished one to overwrite: clean
        _clear_run(run_dir)
    job.open_run(resumed=last is not None)
    job.announce(resumed=last is not None)
    status = "finished"
    try:
        with _stop_on_signals(stop or threading.Event()) as stop:
            while job.progress.epoch <= config.epochs:
                if job.progress.batch == 0 and stop.is_set():
                    status = "stopped"
                    break
                if not job.train_epoch(stop):  # stopped part-way: last.pt resumes at this batch
                    status = "stopped"
                    break
                row = job.end_epoch()
                if on_epoch_end:
                    on_epoch_end(row)
            if status == "finished":
                job.write_clip_results()
            summary = job.build_summary(status)
            reported = summary["evaluation"]["reported_accuracy"]
            if status == "stopped":
                if job.saved_at != (job.progress.epoch, job.progress.batch):  # not at an epoch end: save here
                    job.save_last()
                print(f"stopped at epoch {job.progress.epoch}, batch {job.progress.batch}; "
                      "last.pt saved: the same command continues it", flush=True)
            elif reported is not None:
                job.writer.add_scalar("hparam/reported_accuracy", reported, config.epochs)
            job.writer.flush()
            write_json(run_dir / "summary.json", summary)  # "finished" only now: every file is complete
    except BaseException as err:
        job.write_summary("stopped", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        job.writer.close()
    if on_epoch_end and status == "stopped":
        on_epoch_end({"epoch": job.progress.epoch - 1, "stopped": True})
    return TrainResult(run_dir, status, job.progress.epoch - 1, summary["best_epoch"], summary["best_val_accuracy"],
                       reported, summary)


# The files a run writes; clearing a run removes these and nothing else a user may have put there.
RUN_FILES = ("last.pt", "best.pt", "config.json", "split.csv", "events.out.tfevents.*", PREDICTIONS, EMBEDDINGS,
             "summary.json")  # summary.json last


def run_status(run_dir: Path) -> str | None:
    """summary.json's status ("running", "stopped", "finished"), or None when there is none."""
    return read_json(run_dir / "summary.json").get("status")


def _continue_from(run_dir: Path, name: str, resume: bool, overwrite: bool):
    """The last.pt to continue from, or None to start fresh; TrainingError for a finished run."""
    if run_status(run_dir) == "finished":
        if not overwrite:
            raise TrainingError(f"Run {name!r} in {run_dir.parent} is finished: pass --overwrite to train it "
                                "again from scratch, or pick another --run-name.")
        return None  # cleared by train() once the data checked out
    if (run_dir / "last.pt").exists():
        try:
            return load_checkpoint(run_dir / "last.pt")
        except CheckpointError as err:
            raise TrainingError(f"Cannot continue run {name!r}: {err} Delete that file to start the run "
                                "again.") from None
    if resume:
        raise TrainingError(f"Cannot resume run {name!r}: {run_dir / 'last.pt'} does not exist.")
    return None


def _clear_run(run_dir: Path) -> None:
    """Remove a run's own files (summary.json last, so that an interrupted clear is redone)."""
    for pattern in RUN_FILES:
        for path in sorted(run_dir.glob(pattern)):
            path.unlink(missing_ok=True)


def cross_validate(config: TrainConfig, resume: bool = False, stop: threading.Event | None = None,
                   on_epoch_end: Callable[[dict], None] | None = None, overwrite: bool = False) -> dict:
    """ESC-50's 5-fold protocol: runs <run_name>/fold-1 .. fold-5, each validated on its own fold.

    A rerun continues like train(): finished folds are skipped, an unfinished
    one continues or starts again. A finished CV run (cv_summary.json says so)
    raises TrainingError unless `overwrite`: all five folds again, from scratch.
    `resume=True` insists that some fold has a last.pt. Writes and returns
    <runs_dir>/<run_name>/cv_summary.json: every fold's final accuracy and their mean.
    """
    if not config.run_name:
        config = replace(config, run_name=time.strftime("cv-%Y%m%d-%H%M%S"))
    parent = Path(config.runs_dir) / config.run_name
    if read_json(parent / "cv_summary.json").get("status") == "finished":
        if not overwrite:
            raise TrainingError(f"Cross-validation run {config.run_name!r} in {parent.parent} is finished: pass "
                                "--overwrite to train its five folds again from scratch, or pick another --run-name.")
        open_data(config, report=None)  # the data checks out before a finished run is deleted
        for fold_dir in sorted(parent.glob("fold-*")):
            _clear_run(fold_dir)
        (parent / "cv_summary.json").unlink()
    elif resume and not any(parent.glob("fold-*/last.pt")):
        raise TrainingError(f"Cannot resume cross-validation run {config.run_name!r}: no fold in {parent} "
                            "has a last.pt.")
    folds: dict[str, float | None] = {}
    status = "finished"
    for split in cross_validation_splits(max(open_data(config, report=None).folds)):
        fold_config = replace(config, run_name=f"{config.run_name}/fold-{split.val_fold}",
                              train_folds=split.train_folds, val_fold=split.val_fold, test_fold=None)
        summary = read_json(parent / f"fold-{split.val_fold}" / "summary.json")
        if summary.get("status") != "finished":
            summary = train(fold_config, stop=stop, on_epoch_end=on_epoch_end, cv=True).summary
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
