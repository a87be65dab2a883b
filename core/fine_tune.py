"""Fine-tuning: start a run from a trained checkpoint, with a new head when the classes differ.

    load_parent(path, data_classes, dropout)  -> (Checkpoint, ModelConfig of the new run)
    start_from(model, parent, classes)        copy the parent's weights in; returns the lineage record
    freeze_stages(model, n)                   the first n stages stop learning (returns their names)
    hold_frozen(model, names)                 after model.train(): frozen stages' BatchNorm stays in eval

The run's architecture is the parent's (stem, widths, depths); only the
classifier (`fc`) follows the new data: kept when the class names are the
same, its rows reordered when they are the same names in another order, and
replaced (freshly initialised, the rest kept) when they differ. Stages are
counted as the API names them: 1 = `layer1` (the stem), 2 = `layer2`, ...
A frozen stage keeps its weights and its BatchNorm statistics.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from core.model import AudioCNN, ModelConfig


class FineTuneError(ValueError):
    """A parent checkpoint or freeze setting that cannot start this run (the message says why)."""


def load_parent(path: str | Path, data_classes: tuple[str, ...], dropout: float) -> tuple[Checkpoint, ModelConfig]:
    """The parent checkpoint (ours or the seed's) and the new run's ModelConfig: its shape, our classes."""
    try:
        parent = load_checkpoint(path)
    except CheckpointError as err:
        raise FineTuneError(f"--init-from: {err}") from None
    return parent, replace(parent.model_config, num_classes=len(data_classes), dropout=dropout)


def start_from(model: AudioCNN, parent: Checkpoint, classes: tuple[str, ...], path: str | Path) -> dict:
    """Load the parent's weights into `model` (built with load_parent's config); the lineage record."""
    state = dict(parent.model_state)
    if list(parent.classes) == list(classes):
        head = "kept"
    elif sorted(parent.classes) == sorted(classes):
        order = torch.tensor([list(parent.classes).index(c) for c in classes])
        state["fc.weight"], state["fc.bias"] = state["fc.weight"][order], state["fc.bias"][order]
        head = "reordered"
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        head = "replaced"
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("fc.")]:
        raise FineTuneError(f"--init-from {path}: weights do not fit (missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}).")
    return {"checkpoint": str(path), "checkpoint_id": parent.id, "run_name": parent.meta.get("run_name"),
            "source": parent.meta.get("source", "audio-cnn"), "classes": list(parent.classes), "head": head,
            "grandparent_checkpoint_id": parent.meta.get("parent_checkpoint_id")}


def describe(lineage: dict, classes: tuple[str, ...]) -> str:
    """One line for the console: where the run starts and what happened to the head."""
    parent = f"{lineage['checkpoint']} ({lineage['checkpoint_id']}, {len(lineage['classes'])} classes)"
    if lineage["head"] == "replaced":
        new = sorted(set(classes) - set(lineage["classes"]))
        return (f"fine-tuning from {parent}: the classes differ ({len(classes)} here, {len(new)} new, e.g. "
                f"{', '.join(new[:3]) or '-'}), so the classifier head is replaced; every other layer is kept")
    if lineage["head"] == "reordered":
        return f"fine-tuning from {parent}: the same classes in another order, the head's rows reordered"
    return f"fine-tuning from {parent}: the same classes, every layer kept"


def stage_names(model: AudioCNN) -> list[str]:
    return ["layer1", *model.stage_names]


def freeze_stages(model: AudioCNN, n: int) -> list[str]:
    """Stop gradients into the first `n` stages; their names. FineTuneError when n is out of range."""
    names = stage_names(model)
    if not 0 <= n <= len(names):
        raise FineTuneError(f"--freeze-stages {n}: this model has {len(names)} stages ({', '.join(names)}); "
                            f"choose 0-{len(names)}.")
    for name in names[:n]:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    return names[:n]


def hold_frozen(model: AudioCNN, names: list[str]) -> None:
    """Put frozen stages' BatchNorm layers back in eval mode (model.train() switched them on)."""
    for name in names:
        for m in getattr(model, name).modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
