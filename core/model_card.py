"""Which model made a prediction, in words, and when not to trust it: for every screen with predictions.

    model_card(info) -> ModelCard
        summary   one line: run, number of classes, its accuracy and what that number means
        warnings  "trained on only 5 classes", "scored 31%": what a user must know first

The facts come from the checkpoint's `meta` (core.training writes run_name,
epoch, val_accuracy, val_fold, protocol, test_accuracy into best.pt), which the
server passes on in every response's `model`: the same card for the local
model and a deployed endpoint. An untrained model has its own warning
(pages/ui.untrained_warning) and no card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.results import ModelInfo

FEW_CLASSES = 10      # ESC-50 has 50; fewer than this is a demo or a toy run
LOW_ACCURACY = 0.5    # below this the top class is wrong more often than right


@dataclass(frozen=True)
class ModelCard:
    summary: str
    warnings: list[str] = field(default_factory=list)


def _fraction(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok and 0 <= value <= 1 else None


def _text(value, limit: int = 80) -> str | None:
    """Short text of a str/int, without backticks (the card shows it in a Markdown code span)."""
    ok = isinstance(value, (str, int)) and not isinstance(value, bool)
    return str(value).replace("`", "'")[:limit] if ok else None


def model_card(info: ModelInfo) -> ModelCard:
    """The card of a trained model (meta is hostile: it came over HTTP; odd values are left out)."""
    meta = info.meta or {}
    run = _text(meta.get("run_name")) or info.name
    test, val = _fraction(meta.get("test_accuracy")), _fraction(meta.get("val_accuracy"))
    protocol, fold = _text(meta.get("protocol"), 40), _text(meta.get("val_fold"), 10)
    epoch = _text(meta.get("epoch"), 10)
    parts = [f"run `{run}`", f"{info.num_classes} classes"]
    if epoch:
        parts.append(f"epoch {epoch}")
    if test is not None:
        parts.append(f"test accuracy {test:.1%} ({protocol or 'held-out fold'})")
        score = test
    elif val is not None:
        parts.append(f"validation accuracy {val:.1%} on fold {fold or '?'}"
                     f"{f', {protocol}' if protocol else ''} (chosen on that fold: optimistic)")
        score = val
    else:
        parts.append("no recorded accuracy")
        score = None
    if info.checkpoint_id:
        parts.append(f"checkpoint `{str(info.checkpoint_id)[:12]}`")
    warnings = []
    if info.num_classes < FEW_CLASSES:
        warnings.append(f"This model was trained on only {info.num_classes} classes: every clip is called "
                        f"one of them, however unlike they sound (ESC-50 has 50).")
    if score is not None and score < LOW_ACCURACY:
        warnings.append(f"This model scored {score:.0%}: its top class is wrong more often than right.")
    return ModelCard("Model: " + ", ".join(parts) + ".", warnings)
