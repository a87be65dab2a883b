"""The seed's checkpoints: `best_model.pth` from its train.py, loaded as ours, and converted to our format.

    from_payload(payload, path)   a torch.load'ed dict without our "format" key -> Checkpoint (or CheckpointError)
    convert(src, dst)             write a seed file as an audio-cnn checkpoint; returns its id

    python -m core.seed_checkpoint best_model.pth runs/seed/best.pt

The seed saved `torch.save({"model_state_dict", "classes", "accuracy", "epoch"})`.
Its layer names are ours except the stem, an `nn.Sequential` (`layer1.0.*` the
7x7 conv, `layer1.1.*` its BatchNorm; ours `layer1.conv.*`, `layer1.bn.*`), and
`classes` is ESC-50's names sorted alphabetically, the order of its `fc` rows.
Loading renames the stem, reads the architecture (stem width, stage widths
and depths, class count) off the tensor shapes, and, when the classes are
ESC-50's 50, reorders the fc rows into ESC-50's target order (ours): the same
class names get the same probabilities as in the seed. A state dict of any
other architecture is refused with the keys that differ. core.checkpoint's
load_checkpoint calls this, so every place that accepts a checkpoint
(AUDIO_CNN_CHECKPOINT, --checkpoint, --init-from) accepts the seed's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from core.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from core.features import FeatureConfig
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig

SEED_DROPOUT = 0.5
STEM_RENAMES = {"layer1.0.": "layer1.conv.", "layer1.1.": "layer1.bn."}
SHOWN_KEYS = 8


def from_payload(payload: dict, path: Path) -> Checkpoint:
    """A dict without our "format": the seed's file, or a refusal that says what it is instead."""
    if "model_state_dict" in payload:
        state, classes = payload["model_state_dict"], payload.get("classes")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: its model_state_dict is not a state dict of tensors.")
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
            raise CheckpointError(f"{path} looks like the seed's best_model.pth but has no list of class names "
                                  "under 'classes'.")
        return _seed_checkpoint(state, list(classes), payload, path)
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        _architecture(_renamed(payload), path)  # refuses another architecture, naming the keys
        raise CheckpointError(f"{path} is a bare state dict of this architecture without class names: save it "
                              "as the seed does, torch.save({'model_state_dict': ..., 'classes': [...]}, path).")
    raise CheckpointError(f"{path} is not an audio-cnn checkpoint (format None, expected 'audio-cnn/1') nor the "
                          "seed's best_model.pth (keys model_state_dict, classes): its keys are "
                          f"{', '.join(map(str, list(payload)[:SHOWN_KEYS]))}.")


def _seed_checkpoint(state: dict, classes: list[str], payload: dict, path: Path) -> Checkpoint:
    state = _renamed(state)
    config = _architecture(state, path)
    if len(classes) != config.num_classes:
        raise CheckpointError(f"{path} names {len(classes)} classes but its fc layer has {config.num_classes} rows.")
    if len(classes) == len(CLASSES) and set(classes) == set(CLASSES):  # ESC-50: into its target order
        order = torch.tensor([classes.index(name) for name in CLASSES])
        state = {**state, "fc.weight": state["fc.weight"][order], "fc.bias": state["fc.bias"][order]}
        classes = list(CLASSES)
    meta = {"run_name": path.stem, "source": "seed best_model.pth", "converted_from": path.name}
    for key in ("accuracy", "epoch"):
        if isinstance(payload.get(key), (int, float)):
            meta[f"seed_{key}"] = payload[key]
    ckpt = Checkpoint(state, config, FeatureConfig(), classes, meta)
    ckpt.id = _content_id(ckpt)
    return ckpt


def _renamed(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for old, new in STEM_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def _architecture(state: dict, path: Path) -> ModelConfig:
    """The ModelConfig whose AudioCNN has exactly these keys and shapes; CheckpointError naming the difference."""
    try:
        stem = int(state["layer1.conv.weight"].shape[0])
        widths, depths, s = [], [], 2
        while f"layer{s}.0.conv1.weight" in state:
            widths.append(int(state[f"layer{s}.0.conv1.weight"].shape[0]))
            depths.append(sum(1 for k in state if k.startswith(f"layer{s}.") and k.endswith(".conv1.weight")))
            s += 1
        config = ModelConfig(int(state["fc.weight"].shape[0]), stem, tuple(widths), tuple(depths), SEED_DROPOUT)
        expected = AudioCNN(config).state_dict() if widths else {}
    except (KeyError, IndexError, ValueError, RuntimeError):
        expected = AudioCNN(ModelConfig()).state_dict()
        config = None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if config is None or missing or unexpected or shapes:
        raise CheckpointError(f"{path} holds a state dict of another architecture than AudioCNN: "
                              + "; ".join(part for part in (
                                  _keys("missing", missing), _keys("unexpected", unexpected),
                                  _keys("shapes differ", shapes)) if part))
    return config


def _keys(what: str, keys: list[str]) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{what}: {', '.join(keys[:SHOWN_KEYS])}{more}"


def _content_id(ckpt: Checkpoint) -> str:
    from core.checkpoint import content_id

    return content_id(ckpt.model_state, ckpt.model_config, ckpt.feature_config, ckpt.classes)


def convert(src: str | Path, dst: str | Path) -> str:
    """Write the checkpoint at `src` (the seed's or ours) as an audio-cnn checkpoint at `dst`; its id."""
    ckpt = load_checkpoint(src)
    return save_checkpoint(dst, ckpt.build_model(), ckpt.feature_config, ckpt.classes, ckpt.meta)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.seed_checkpoint",
                                description="Convert the seed's best_model.pth into an audio-cnn checkpoint.")
    p.add_argument("source", help="the seed's best_model.pth")
    p.add_argument("destination", help="where the audio-cnn checkpoint goes, e.g. runs/seed/best.pt")
    args = p.parse_args(argv)
    try:
        ckpt_id = convert(args.source, args.destination)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.destination} (checkpoint {ckpt_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
