"""Training runs on disk as core.training writes them, without training: events, config.json, summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from core.labels import CLASSES

TAGS = ("train/loss", "val/loss", "val/accuracy", "lr")


def curve(tag: str, epoch: int, seed: int) -> float:
    """A plausible, slightly noisy learning curve per tag (epoch from 1)."""
    wobble = 0.03 * math.sin(1.7 * epoch + seed)
    if tag == "val/accuracy":
        return min(0.95, 0.3 + 0.5 * (1 - math.exp(-epoch / (4 + seed))) + wobble)
    if tag == "lr":
        return 2e-3 * (1 + math.cos(math.pi * epoch / 40)) / 2 + 1e-5
    base = 3.9 * math.exp(-epoch / (5 + seed)) + 0.4
    return base + (0.25 if tag == "val/loss" else 0.0) + wobble


def write_run(runs_dir: Path, name: str, *, epochs: int = 12, seed: int = 0, status: str = "finished",
              config: dict | None = None) -> dict[str, list[tuple[int, float]]]:
    """Write run `name` under `runs_dir`; returns {tag: [(epoch, value as stored, float32)]}."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(runs_dir) / name
    written: dict[str, list[tuple[int, float]]] = {tag: [] for tag in TAGS}
    with SummaryWriter(str(folder)) as writer:
        for epoch in range(1, epochs + 1):
            for tag in TAGS:
                value = curve(tag, epoch, seed)
                writer.add_scalar(tag, value, epoch)
                written[tag].append((epoch, float(np.float32(value))))
    accuracy = written["val/accuracy"]
    best_epoch, best = max(accuracy, key=lambda point: point[1])
    rng = np.random.default_rng(seed)
    matrix = rng.poisson(0.3, (len(CLASSES), len(CLASSES))) + np.diag(rng.integers(2, 9, len(CLASSES)))
    config = {"run_name": name, "epochs": epochs, "batch_size": 32, "max_lr": 2e-3, "weight_decay": 0.01,
              "model": {"widths": [64, 128, 256, 512]}} | (config or {})
    summary = {"status": status, "run_name": name, "epochs_completed": epochs, "best_epoch": best_epoch,
               "best_val_accuracy": best, "classes": list(CLASSES),
               "evaluation": {"selection_fold": 5, "reported_accuracy": accuracy[-1][1]},
               "per_class_accuracy": dict(zip(CLASSES, (np.diag(matrix) / matrix.sum(axis=1)).tolist(), strict=True)),
               "confusion_matrix": matrix.tolist()}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps(summary))
    return written
