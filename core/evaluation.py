"""Evaluation: metrics over a fold, what a run reports, and the run's JSON documents.

Honest evaluation on ESC-50 (see core.datasets.Split): the fold that picks the
best checkpoint is never the fold whose accuracy is reported as the result.

    holdout         train on some folds, select best.pt on `val_fold`, report
                    best.pt's accuracy on `test_fold` (e.g. select 4, report 5)
    fixed-schedule  train a fixed number of epochs and report `val_fold` accuracy
                    after the last one (no choice was made on that fold);
                    best_val_accuracy, picked on the same fold, is optimistic
    5-fold-cv       fixed-schedule once per fold (each fold validated once),
                    reported as the mean (core.training.cross_validate)

`summary_json`, `config_json` and `cv_summary` build summary.json, config.json
and cv_summary.json; summary.json's keys `status`, `epochs_completed`,
`best_epoch` and `best_val_accuracy` are the ones core.runs reads.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.atomic_write import atomic_write
from core.audio import SAMPLE_RATE
from core.datasets import Dataset, Split

STEP_MEANING = "one scalar point per epoch; step = epoch number, starting at 1"


@dataclass
class EvalResult:
    """Metrics over one set of clips; `targets` and `predictions` are (clips,) class indices."""

    loss: float
    accuracy: float
    targets: np.ndarray
    predictions: np.ndarray
    num_classes: int

    def confusion(self) -> np.ndarray:
        """(classes, classes) counts: row = true class, column = predicted class."""
        return confusion_matrix(self.targets, self.predictions, self.num_classes)

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; None for a class with no clips here."""
        m = self.confusion()
        totals = m.sum(axis=1)
        return [float(m[i, i] / totals[i]) if totals[i] else None for i in range(self.num_classes)]

    def to_dict(self, classes: Sequence[str]) -> dict:
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "clips": int(len(self.targets)),
            "per_class_accuracy": dict(zip(classes, self.per_class_accuracy(), strict=True)),
            "confusion_matrix": self.confusion().tolist(),
        }


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    flat = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.no_grad()
def evaluate(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    batch_of: Callable[[torch.Tensor], torch.Tensor],
    indices: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    criterion: nn.Module,
    batch_size: int = 64,
) -> EvalResult:
    """Run the model (in eval mode, set by the caller) over clips `indices`, in order.

    `batch_of(idx)` gives (batch, n_mels, frames) features on the model's device,
    `logits_of(x)` the (batch, classes) logits. Loss is the mean over clips.
    """
    loss_sum, preds = 0.0, []
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        logits = logits_of(batch_of(idx)).float()
        y = targets[idx].to(logits.device)
        loss_sum += float(criterion(logits, y)) * len(idx)
        preds.append(logits.argmax(dim=1).cpu())
    predictions = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    truth = targets[indices].numpy()
    n = max(len(indices), 1)
    return EvalResult(loss_sum / n, float((predictions == truth).sum() / n), truth, predictions, num_classes)


def protocol_description(split: Split, cv: bool = False) -> dict:
    """What the reported number means, in summary.json's `evaluation` section."""
    base = {"train_folds": list(split.train_folds), "selection_fold": split.val_fold}
    if split.test_fold:
        return base | {
            "protocol": "holdout",
            "report_fold": split.test_fold,
            "reported_metric": f"accuracy on fold {split.test_fold} of best.pt, "
                               f"which was selected on fold {split.val_fold}",
            "best_val_accuracy_is_optimistic": True,
        }
    return base | {
        "protocol": "5-fold-cv member" if cv else "fixed-schedule",
        "report_fold": split.val_fold,
        "reported_metric": f"accuracy on fold {split.val_fold} after the last epoch of a fixed "
                           f"schedule (nothing was chosen on fold {split.val_fold}); "
                           "best_val_accuracy was selected on that same fold and is optimistic",
        "best_val_accuracy_is_optimistic": True,
    }


def summary_json(
    *,
    status: str,
    run_name: str,
    classes: Sequence[str],
    split: Split,
    epochs_completed: int,
    epochs_total: int,
    best: dict | None,
    last_val: dict | None,
    cv: bool = False,
    error: str | None = None,
) -> dict:
    """The summary.json document. `best`: {"epoch", "val": EvalResult.to_dict, "test": ... or None}."""
    evaluation = protocol_description(split, cv)
    finished = status == "finished"
    if split.test_fold:
        test = (best or {}).get("test")
        reported = test["accuracy"] if test else None
    else:
        reported = last_val["accuracy"] if finished and last_val else None
    evaluation["reported_accuracy"] = reported
    summary = {
        "status": status,
        "run_name": run_name,
        "epochs_completed": epochs_completed,
        "epochs_total": epochs_total,
        "step": STEP_MEANING,
        "best_epoch": best["epoch"] if best else None,
        "best_val_accuracy": best["val"]["accuracy"] if best else None,
        "best_checkpoint_id": (best or {}).get("checkpoint_id"),  # best.pt's content id (core.checkpoint)
        "best_val_loss": best["val"]["loss"] if best else None,
        "final_val_accuracy": last_val["accuracy"] if last_val else None,
        "final_val_loss": last_val["loss"] if last_val else None,
        "evaluation": evaluation,
        "classes": list(classes),
        # Per-class accuracy and confusion matrix are best.pt's, on the selection fold.
        "per_class_accuracy": best["val"]["per_class_accuracy"] if best else None,
        "confusion_matrix": best["val"]["confusion_matrix"] if best else None,
        "test": (best or {}).get("test"),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if error:
        summary["error"] = error
    return summary


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically (a reader such as the dashboard never sees half a file)."""
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def config_json(config: dict, data: Dataset, split: Split, environment: dict, previous: dict,
                resumed_at: tuple[int, int] | None = None, parent: dict | None = None) -> dict:
    """config.json: every hyperparameter (TrainConfig.to_dict), the data and split, where it ran.

    `previous` is the config.json being replaced (on a resume): its creation
    time and resumes are kept and this resume (epoch, batch) is added. `parent`
    is a fine-tuned run's lineage record (core.fine_tune), kept across resumes.
    """
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    resumes = list(previous.get("resumes", []))
    if resumed_at:
        resumes.append({"at": now, "epoch": resumed_at[0], "batch": resumed_at[1],
                        "device": environment.get("device")})
    return config | {
        "step": STEP_MEANING,
        "protocol": split.protocol,
        "data": {
            "root": str(data.root), "layout": data.layout, "clips": len(data.clips),
            "classes": list(data.classes),  # sorted names for your own data; index = output unit
            "clip_seconds": data.clip_samples / SAMPLE_RATE,
            "split": data.split,            # where the folds came from (a stratified split: seed, k, file)
            "clips_per_fold": {f"fold-{f}": len(data.indices([f])) for f in data.folds},
            "train_clips": len(data.indices(split.train_folds)),
            "val_clips": len(data.indices([split.val_fold])),
            "test_clips": len(data.indices([split.test_fold])) if split.test_fold else 0,
        },
        "environment": environment | {"torch": torch.__version__, "python": sys.version.split()[0]},
        "created_at": previous.get("created_at", now),
        "resumes": resumes,
        "parent": parent or previous.get("parent"),
    }


def cv_summary(status: str, fold_accuracy: dict[str, float | None], config: dict) -> dict:
    """cv_summary.json of a 5-fold cross-validation: each fold's final accuracy and their mean."""
    done = [a for a in fold_accuracy.values() if a is not None]
    finished = status == "finished" and len(done) == len(fold_accuracy)
    return {
        "status": status,
        "protocol": "5-fold-cv",
        "reported_metric": "mean over the 5 folds of each fold's accuracy after the last epoch of a "
                           "fixed schedule trained on the other 4 folds (ESC-50's official protocol)",
        "fold_accuracy": fold_accuracy,
        "reported_accuracy": statistics.fmean(done) if finished else None,
        "std": statistics.pstdev(done) if finished else None,
        "config": {k: v for k, v in config.items() if k not in ("train_folds", "val_fold", "test_fold")},
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
