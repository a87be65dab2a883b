"""A model that has learned where its evidence is: the fixture for saliency's sanity checks.

Three classes of 2 s clips on faint white noise: "low" has a burst of noise
in 200-1500 Hz, "high" one in 5-12 kHz, "none" nothing. Each burst lasts
0.6 s at a random onset, so the only evidence of a class is a box in the
spectrogram, at a frequency band the test knows and a time it chooses.
A small AudioCNN learns them on the CPU in a few seconds (BOX_CLIP places a
burst where the test says).
"""

from __future__ import annotations

import numpy as np
import torch

from core.features import FeatureConfig, LogMel
from core.inference import Predictor
from core.model import AudioCNN, ModelConfig
from core.results import ModelInfo

RATE = 44100
SECONDS = 2.0
BURST_S = 0.6
BANDS = {"low": (200.0, 1500.0), "high": (5000.0, 12000.0), "distractor": (2000.0, 3500.0)}
CLASSES = ["low", "high", "none"]
NOISE = 0.0  # digital silence around the bursts: the only structure is the evidence and the distractor
FEATURES = FeatureConfig(norm_mean=-60.0, norm_std=20.0)
SMALL = ModelConfig(num_classes=3, stem_channels=8, widths=(8, 16, 32, 32), depths=(1, 1, 1, 1), dropout=0.0)


def band_noise(n: int, band: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    x = np.fft.irfft(spectrum, n)
    return x / (np.abs(x).max() + 1e-9)


def burst(x: np.ndarray, band: str, onset: float, rng: np.random.Generator) -> None:
    start, length = int(onset * RATE), int(BURST_S * RATE)
    x[start : start + length] += rng.uniform(0.3, 0.6) * band_noise(length, BANDS[band], rng)


def clip(label: str, onset: float, rng: np.random.Generator, distractor: float | None = None) -> np.ndarray:
    """(SECONDS * RATE,) float32: faint noise, `label`'s burst from `onset` s (none for "none"), and
    a distractor burst (every class has one, at a random time unless `distractor` says when)."""
    n = int(SECONDS * RATE)
    x = NOISE * rng.standard_normal(n)
    if label in BANDS:
        burst(x, label, onset, rng)
    burst(x, "distractor", rng.uniform(0.0, SECONDS - BURST_S) if distractor is None else distractor, rng)
    return x.astype(np.float32)


def box(label: str, onset: float, config: FeatureConfig = FEATURES) -> tuple[slice, slice]:
    """The (mel rows, frames) where `label`'s burst from `onset` s lies in the spectrogram."""
    lo, hi = BANDS[label]
    centres = config.mel_frequencies()
    rows = np.flatnonzero((centres >= lo) & (centres <= hi))
    per_frame = config.hop_length / config.sample_rate
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(onset / per_frame), int((onset + BURST_S) / per_frame) + 1)


def trained_predictor(seed: int = 0, clips_per_class: int = 24, steps: int = 80) -> Predictor:
    """A Predictor over SMALL trained on generated clips (CPU, seconds): it classifies them all."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    labels = [c for c in range(len(CLASSES)) for _ in range(clips_per_class)]
    waves = np.stack([clip(CLASSES[c], rng.uniform(0.0, SECONDS - BURST_S), rng) for c in labels])
    with torch.no_grad():
        specs = LogMel(FEATURES)(torch.from_numpy(waves)).unsqueeze(1)
    targets = torch.tensor(labels)
    model = AudioCNN(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (16,))
        loss = torch.nn.functional.cross_entropy(model(specs[idx]), targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    info = ModelInfo(name="AudioCNN (saliency fixture)", checkpoint_id=None, trained=True, num_classes=3)
    return Predictor(model.eval(), FEATURES, CLASSES, info, device="cpu")


def randomized(predictor: Predictor, seed: int = 1) -> Predictor:
    """The same architecture and signal chain with freshly initialised weights (Adebayo et al.'s test)."""
    torch.manual_seed(seed)
    info = ModelInfo(name="AudioCNN (randomized)", checkpoint_id=None, trained=False, num_classes=3)
    return Predictor(AudioCNN(SMALL).eval(), FEATURES, CLASSES, info, device="cpu")
