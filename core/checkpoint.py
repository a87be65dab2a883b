"""Checkpoints that carry everything needed to use them.

A checkpoint is a plain dict saved with `torch.save` and read back with
`weights_only=True` (no pickled code runs on load):

    format          "audio-cnn/1"
    id              content hash of the weights and configs (12 hex digits)
    model_state     the AudioCNN state_dict
    model_config    ModelConfig as a dict
    feature_config  FeatureConfig as a dict
    classes         class names, index = output unit
    meta            training metadata (run name, epoch, val accuracy, ...)
    extra           optional training state (optimizer, scheduler, RNG) for resume

The seed's `best_model.pth` ({"model_state_dict", "classes", "accuracy", "epoch"})
loads too, converted on the way in (core.seed_checkpoint).

Writes are atomic (core.atomic_write, with fsync), so a reader
never sees half a checkpoint, even when training is killed mid-save.

Which checkpoint an entry point loads is decided here, once, for all of them:
`resolve_checkpoint(runs_dir, checkpoint, run)` over a folder, `choose_run`
over any list of RunCheckpoint (a Modal Volume's, at deploy time). The rule
is spelled out above `RunCheckpoint` below.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.atomic_write import atomic_open
from core.features import FeatureConfig
from core.model import AudioCNN, ModelConfig

FORMAT = "audio-cnn/1"


class CheckpointError(ValueError):
    """A file that is not a usable audio-cnn checkpoint (message names the file)."""


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    model_config: ModelConfig
    feature_config: FeatureConfig
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def build_model(self) -> AudioCNN:
        """A fresh AudioCNN with these weights, in eval mode."""
        model = AudioCNN(self.model_config)
        model.load_state_dict(self.model_state)
        return model.eval()


def content_id(model_state: dict[str, torch.Tensor], model_config: ModelConfig,
               feature_config: FeatureConfig, classes: list[str]) -> str:
    """Hash of what determines predictions: the same weights and configs give the same id."""
    h = hashlib.sha256()
    h.update(json.dumps([model_config.to_dict(), feature_config.to_dict(), list(classes)],
                        sort_keys=True).encode())
    for name in sorted(model_state):
        tensor = model_state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def save_checkpoint(path: str | Path, model: AudioCNN, feature_config: FeatureConfig,
                    classes: list[str] | tuple[str, ...], meta: dict | None = None,
                    extra: dict | None = None) -> str:
    """Write a checkpoint atomically; returns its id."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt_id = content_id(state, model.config, feature_config, list(classes))
    payload = {
        "format": FORMAT,
        "id": ckpt_id,
        "model_state": state,
        "model_config": model.config.to_dict(),
        "feature_config": feature_config.to_dict(),
        "classes": list(classes),
        "meta": dict(meta or {}),
        "extra": dict(extra or {}),
    }
    with atomic_open(path, "wb", fsync=True) as f:
        torch.save(payload, f)
    return ckpt_id


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`, or the seed's best_model.pth (core.seed_checkpoint,
    detected by its keys); CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        code = re.findall(r"GLOBAL ([\w.]+)", str(err)) or _pickle_globals(path)
        if code:
            raise CheckpointError(_refused(path, code)) from None
        reason = _first_reason(err)
        raise CheckpointError(
            f"{path} is not a readable audio-cnn checkpoint (damaged, truncated or "
            f"another program's file): {reason}"
        ) from None
    if isinstance(payload, dict) and "format" not in payload:  # the seed's best_model.pth, or a refusal
        from core.seed_checkpoint import from_payload

        return from_payload(payload, path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not an audio-cnn checkpoint (format {found!r}, expected {FORMAT!r})."
        )
    try:
        ckpt = Checkpoint(
            model_state=payload["model_state"],
            model_config=ModelConfig.from_dict(payload["model_config"]),
            feature_config=FeatureConfig.from_dict(payload["feature_config"]),
            classes=list(payload["classes"]),
            meta=dict(payload.get("meta") or {}),
            extra=dict(payload.get("extra") or {}),
            id=str(payload["id"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is an incomplete audio-cnn checkpoint: {err}") from None
    if len(ckpt.classes) != ckpt.model_config.num_classes:
        raise CheckpointError(
            f"{path} names {len(ckpt.classes)} classes but its model has "
            f"{ckpt.model_config.num_classes} outputs."
        )
    return ckpt


def _refused(path: Path, globals_: list[str]) -> str:
    """Why a file whose unpickling would call `globals_` (e.g. ["posix.system"]) was refused.

    torch's own message opens with "Re-running `torch.load` with `weights_only`
    set to `False` will likely succeed": for a file from a stranger that is the
    one thing not to do, so it is never repeated.
    """
    return (f"{path} was refused: loading it would run code ({', '.join(dict.fromkeys(globals_))}), which "
            "a checkpoint never needs. It was not loaded and nothing in it ran. An audio-cnn "
            "checkpoint holds only tensors, numbers and text: use one written by this project's training.")


def _first_reason(err: Exception) -> str:
    """A short reason from torch's error, never its weights_only advice."""
    text = str(err).strip()
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
    if detail:  # weights_only's refusal of bytes it cannot parse (random bytes look like this too)
        return detail.group(1)[:200]
    if "weights_only" in text:
        return "it cannot be read without running code"
    return text.splitlines()[0][:200] if text else type(err).__name__


def _pickle_globals(path: Path) -> list[str]:
    """"module.name" of every global a bare pickle file imports ([] if it is not one).

    torch stops reading a bare protocol-4 pickle at its first opcode, before
    the global it names; pickletools lists the opcodes without running any.
    """
    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _pos in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle, or one cut short: whatever was found so far
        pass
    return names



# -- which checkpoint is served: the one policy -----------------------------------------
#
# Every entry point (core.server, the dashboard's local model, classify_folder,
# serve_modal locally and at deploy time) resolves its checkpoint here:
#   1. an explicit checkpoint file (AUDIO_CNN_CHECKPOINT, --checkpoint);
#   2. else a named run (AUDIO_CNN_RUN, --run): runs_dir/<run>/best.pt, or, when
#      <run> is a folder of runs (a cross-validation NAME with fold-1..5), its best
#      member by rule 3;
#   3. else the best run under runs_dir, nested runs (CV folds) included: finished
#      runs before unfinished ones, then the highest summary.json best_val_accuracy,
#      then the newest best.pt (runs without a readable number come last).
# Picking the best of several runs by validation accuracy is itself a selection on
# the validation fold: report accuracy on a fold none of them selected on.


@dataclass(frozen=True)
class RunCheckpoint:
    """A run folder that holds a best.pt: what the policy chooses between."""

    run: str        # the folder relative to the runs root, "/"-separated: "baseline", "cv/fold-2"
    summary: dict   # its summary.json; {} when missing or unreadable
    mtime: float    # best.pt's modification time, unix seconds

    @property
    def finished(self) -> bool:
        return self.summary.get("status") == "finished"

    @property
    def accuracy(self) -> float | None:
        try:
            value = float(self.summary["best_val_accuracy"])
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    @property
    def checkpoint_id(self) -> str | None:
        """best.pt's content id as summary.json records it (None for runs trained before it did)."""
        value = self.summary.get("best_checkpoint_id")
        return value if isinstance(value, str) else None


def choose_run(runs: list[RunCheckpoint], run: str | None = None) -> RunCheckpoint | None:
    """Rules 2 and 3 above over `runs`; None when there is none. CheckpointError for a named run without one."""
    if run:
        run = run.strip("/")
        runs_named = [r for r in runs if r.run == run or r.run.startswith(run + "/")]
        if not runs_named:
            have = ", ".join(sorted(r.run for r in runs)) or "none"
            raise CheckpointError(f"Run {run!r} has no best.pt. Runs with a checkpoint: {have}.")
        runs = runs_named
    if not runs:
        return None
    return max(runs, key=lambda r: (r.finished, r.accuracy is not None, r.accuracy or 0.0, r.mtime, r.run))


def list_run_checkpoints(runs_dir: str | Path) -> list[RunCheckpoint]:
    """Every runs_dir/**/best.pt as a RunCheckpoint (a missing folder has none)."""
    runs_dir = Path(runs_dir)
    found = []
    for best in runs_dir.glob("**/best.pt"):
        if best.parent == runs_dir:  # a loose best.pt is no run; name it with AUDIO_CNN_CHECKPOINT
            continue
        found.append(RunCheckpoint(best.parent.relative_to(runs_dir).as_posix(),
                                   parse_summary(_read(best.parent / "summary.json")), _mtime(best)))
    return found


def parse_summary(data: bytes | None) -> dict:
    """summary.json's bytes -> its dict; {} when missing (None), not JSON or not an object."""
    try:
        summary = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def resolve_checkpoint(runs_dir: str | Path, checkpoint: str | Path | None = None,
                       run: str | None = None) -> Path | None:
    """The checkpoint file the policy above picks, or None (nothing to load: the caller goes untrained)."""
    if checkpoint:
        return Path(checkpoint)
    chosen = choose_run(list_run_checkpoints(runs_dir), run)
    return Path(runs_dir) / chosen.run / "best.pt" if chosen else None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
