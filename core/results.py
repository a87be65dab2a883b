"""What an analysis returns: plain dataclasses and numpy arrays, no torch.

Both backends hand these to the dashboard: the in-process Predictor builds
them, and the HTTP client decodes them from the wire (`core.schema`). Keeping
them free of torch lets a dashboard that talks to an endpoint run without
loading the model code at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from core.labels import category_of

FeatureMapMode = Literal["stages", "blocks", "none"]
WINDOW_SECONDS = 5.0
WAVEFORM_POINTS = 8000


class OptionError(ValueError):
    """An analysis option that does not fit this model (e.g. an unknown layer name)."""


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float

    @property
    def category(self) -> str:
        return category_of(self.label)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    checkpoint_id: str | None
    trained: bool
    num_classes: int
    device: str = "cpu"
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """Top-k for the 5 s window [start, end) seconds of a longer clip."""

    start: float
    end: float
    predictions: list[Prediction]


@dataclass
class ChannelMaps:
    """The most active individual channels of one layer: maps (k, h, w), strongest first."""

    layer: str
    channels: list[int]
    activation: list[float]  # mean activation of each listed channel
    maps: np.ndarray


@dataclass
class Saliency:
    """Where the spectrogram matters for `target`: values (n_mels, frames) in [0, 1] (core.saliency)."""

    method: str            # "gradcam" or "integrated_gradients"
    target: str            # the class explained
    layer: str             # the stage Grad-CAM looked at, or "input"
    values: np.ndarray


@dataclass
class Analysis:
    predictions: list[Prediction]
    spectrogram: np.ndarray                  # (n_mels, frames) model input, dB
    feature_maps: dict[str, np.ndarray]      # name -> (h, w) channel mean, network order
    waveform: np.ndarray                     # peak-preserving envelope (min, max per bucket)
    sample_rate: int                         # rate of the analysed signal
    duration: float                          # seconds
    model: ModelInfo
    windows: list[Window] = field(default_factory=list)
    channel_maps: ChannelMaps | None = None
    saliency: Saliency | None = None
    embedding: np.ndarray | None = None      # (D,) pooled features before the classifier, when asked
    timing_ms: dict[str, float] = field(default_factory=dict)


def top_k_predictions(probs: np.ndarray, classes: list[str], k: int) -> list[Prediction]:
    """(classes,) probabilities -> the k best as Predictions, best first (ties keep class order)."""
    k = max(1, min(k, len(probs)))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(classes[i], float(probs[i])) for i in order]


def waveform_envelope(samples: np.ndarray, points: int = WAVEFORM_POINTS) -> np.ndarray:
    """(n,) -> (2 * buckets,): min and max of each of `buckets` equal spans, interleaved.

    buckets = min(points // 2, n), so the layout is the same for every clip:
    pairs (min, max) covering the clip's duration in order. Keeps every peak
    visible, where striding would alias them away; a clip shorter than the
    bucket count gets one sample per bucket (min == max).
    """
    n = len(samples)
    buckets = max(1, min(points // 2, n))
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    lo = np.minimum.reduceat(samples, edges[:-1])
    hi = np.maximum.reduceat(samples, edges[:-1])
    return np.stack([lo, hi], axis=1).reshape(-1).astype(np.float32)


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Starts of `window`-sample windows every `hop` samples; the last one ends at the clip's end."""
    if num_samples <= window:
        return []
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


