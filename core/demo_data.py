"""A small synthetic dataset in the exact ESC-50 layout, with sounds a small CNN can learn.

    make_dataset(root, num_classes=5, clips_per_fold=4, seconds=1.0, folds=5, seed=0) -> root
    class_sound(target, num_classes, seconds, rng) -> (seconds * 44100,) float32

    <root>/meta/esc50.csv    filename,fold,target,category,esc10,src_file,take
    <root>/audio/{fold}-{src_file}-{take}-{target}.wav   44.1 kHz mono 16-bit

Class `c` is one of four kinds of sound (steady tone with harmonics, rising
chirp, click train, band of noise), chosen by c % 4, at a base frequency on a
log grid over 200 Hz-10 kHz. Every clip varies its frequency (+-4%), level,
onset and length and sits on a little background noise, so folds differ but
the classes stay clearly apart. The class names are ESC-50's first ones
("dog", "rooster", ...), but the sounds are synthetic: `python -m core.demo`
trains on it, and the tests build their datasets with it (tests/esc50_factory.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from core.labels import CLASSES

RATE = 44100
KINDS = ("tone", "chirp", "clicks", "noise")


def class_sound(target: int, num_classes: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clip of class `target`: (seconds * 44100,) float32 in [-1, 1]."""
    n = int(round(seconds * RATE))
    base = 200.0 * (10_000 / 200.0) ** (target / max(num_classes - 1, 1))
    f = base * rng.uniform(0.96, 1.04)
    length = int(n * rng.uniform(0.6, 0.9))
    t = np.arange(length) / RATE
    kind = KINDS[target % len(KINDS)]
    if kind == "tone":
        event = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3))
    elif kind == "chirp":
        rise = f * 2 ** (t / max(t[-1], 1e-9))                   # one octave up over the event
        event = np.sin(2 * np.pi * np.cumsum(rise) / RATE)
    elif kind == "clicks":
        rate = 6 + 10 * (target / max(num_classes - 1, 1))       # clicks per second
        event = np.zeros(length)
        decay = np.exp(-np.arange(int(0.01 * RATE)) / (0.002 * RATE))
        burst = np.sin(2 * np.pi * f * np.arange(len(decay)) / RATE) * decay
        for start in (np.arange(0, t[-1], 1 / rate) * RATE).astype(int):
            end = min(start + len(burst), length)
            event[start:end] += burst[: end - start]
    else:
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1 / RATE)
        spectrum[(freqs < f / 1.3) | (freqs > f * 1.3)] = 0     # a band around f
        event = np.fft.irfft(spectrum, length)
    event = event / (np.abs(event).max() + 1e-9) * rng.uniform(0.2, 0.6)
    ramp = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.005 * RATE))
    clip = 0.003 * rng.standard_normal(n)
    onset = int(rng.integers(0, n - length + 1))
    clip[onset : onset + length] += event * ramp
    return np.clip(clip, -1, 1).astype(np.float32)


def make_dataset(root: str | Path, num_classes: int = 5, clips_per_fold: int = 4,
                 seconds: float = 1.0, folds: int = 5, seed: int = 0) -> Path:
    """Write the dataset under `root` (created); returns root. clips_per_fold is per class."""
    root = Path(root)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(1, folds + 1):
        for target in range(num_classes):
            for k in range(clips_per_fold):
                src = 100000 + target * 1000 + fold * 100 + k
                take = "ABC"[k % 3]
                name = f"{fold}-{src}-{take}-{target}.wav"
                sf.write(root / "audio" / name, class_sound(target, num_classes, seconds, rng), RATE,
                         subtype="PCM_16")
                category = CLASSES[target] if target < len(CLASSES) else f"class_{target}"
                rows.append([name, fold, target, category, str(target < 2), src, take])
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root
