"""Datasets of your own, in the two layouts core.custom_datasets reads, with real audio (soundfile).

    make_folders(root, {"drill": 6, "saw": 6})      root/<class>/<class>-<k>.<ext>
    make_labels_csv(root, {"a": 6}, folds=None)      root/clips/*.wav + root/labels.csv (filename,label[,fold])
    write_checkpoint_run(runs, "tools", [...], 0.9)  runs/tools/best.pt (a real tiny model) + summary/config JSON

Each class gets its own synthetic sound (tests/esc50_factory.class_sound), so
a small CNN learns them in a few epochs. Files rotate through WAV, FLAC, OGG
and MP3 at 44.1, 22.05 and 48 kHz, and lengths vary, to exercise resampling and
the crop/pad to the configured duration.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
from esc50_factory import class_sound

FORMATS = ((".wav", 44100, "PCM_16"), (".flac", 22050, "PCM_16"), (".ogg", 48000, "VORBIS"),
           (".mp3", 44100, "MPEG_LAYER_III"))


def _clip(index: int, n_classes: int, k: int, seconds: float, rng, rate: int) -> np.ndarray:
    length = seconds * (0.75 + 0.5 * (k % 3) / 2)  # 0.75x, 1x, 1.25x the nominal length
    x = class_sound(index, n_classes, length, rng)
    if rate != 44100:  # resample by interpolation: what matters is a real file at another rate
        t = np.arange(int(len(x) * rate / 44100)) / rate
        x = np.interp(t, np.arange(len(x)) / 44100, x).astype(np.float32)
    return x


def make_folders(root: str | Path, counts: dict[str, int], seconds: float = 0.5, seed: int = 0,
                 formats=FORMATS) -> Path:
    """root/<class>/<class>-<k>.<ext> for each class and count; returns root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = sorted(counts)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(counts[name]):
            ext, rate, subtype = formats[k % len(formats)]
            sf.write(root / name / f"{name}-{k}{ext}", _clip(names.index(name), len(names), k, seconds, rng, rate),
                     rate, subtype=subtype)
    return root


def make_labels_csv(root: str | Path, counts: dict[str, int], folds: int | None = None, seconds: float = 0.5,
                    seed: int = 0) -> Path:
    """root/clips/<class>_<k>.wav and root/labels.csv; a fold column (k % folds + 1) when `folds`."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(counts)
    rows = []
    for name in names:
        for k in range(counts[name]):
            filename = f"clips/{name}_{k}.wav"
            sf.write(root / filename, _clip(names.index(name), len(names), k, seconds, rng, 44100), 44100,
                     subtype="PCM_16")
            rows.append([filename, name] + ([k % folds + 1] if folds else []))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label"] + (["fold"] if folds else []))
        writer.writerows(rows)
    return root


def write_checkpoint_run(runs: Path, name: str, classes: list[str], accuracy: float, seed: int = 0) -> str:
    """A finished run folder with a real (seeded, BatchNorm-calibrated) tiny best.pt; returns its checkpoint id."""
    import json

    import torch

    from core.checkpoint import save_checkpoint
    from core.features import FeatureConfig, LogMel
    from core.inference import calibrate_batchnorm
    from core.model import AudioCNN, ModelConfig

    torch.manual_seed(seed)
    model = AudioCNN(ModelConfig(num_classes=len(classes), stem_channels=16, widths=(16, 32, 64, 128),
                                 depths=(1, 1, 1, 1)))
    calibrate_batchnorm(model, LogMel(FeatureConfig()))
    folder = Path(runs) / name
    ckpt_id = save_checkpoint(folder / "best.pt", model, FeatureConfig(), classes, {"run_name": name})
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "best_val_accuracy": accuracy,
                                                     "best_checkpoint_id": ckpt_id}))
    (folder / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    return ckpt_id
