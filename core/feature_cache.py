"""The feature cache: every clip's log-mel spectrogram computed once, then read as arrays.

    CachedFeatures(dataset, config)   all clips' log-mels in memory, built once into a disk cache
    AudioFeatures(dataset, config)    decode and compute every batch (no cache): the slow path

The cache stores each clip's log-mel spectrogram once, float16, under
`<cache_dir>/logmel-<key>/`, where the key hashes the FeatureConfig (without
its normalisation, which is applied when a batch is read) and the clip length.
Later epochs (and later runs with the same features) read arrays, not audio.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.atomic_write import atomic_open, atomic_write
from core.datasets import Clip, Dataset
from core.features import FeatureConfig, LogMel


def _raw_db(config: FeatureConfig) -> FeatureConfig:
    return replace(config, norm_mean=0.0, norm_std=1.0)


def cache_key(config: FeatureConfig, clip_samples: int) -> str:
    text = json.dumps({"features": _raw_db(config).to_dict(), "clip_samples": clip_samples, "v": 1},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CachedFeatures:
    """All clips' log-mels in memory, (clips, n_mels, frames) float16, built once into a disk cache."""

    def __init__(self, dataset: Dataset, config: FeatureConfig, cache_dir: str | Path | None = None,
                 device: torch.device | str = "cpu", progress: bool = True, batch_size: int = 32):
        self.config = config
        cache_dir = Path(cache_dir) if cache_dir else dataset.root / ".feature-cache"
        self.folder = cache_dir / f"logmel-{cache_key(config, dataset.clip_samples)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / "features.json", json.dumps(
            {"features": _raw_db(config).to_dict(), "clip_samples": dataset.clip_samples}, indent=2))
        paths = [self.folder / cache_name(c) for c in dataset.clips]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        logmel = LogMel(_raw_db(config)).to(device)
        for start in tqdm(range(0, len(missing), batch_size), desc="feature cache",
                          disable=not progress or not missing):
            chunk = missing[start : start + batch_size]
            waves = torch.from_numpy(np.stack([dataset.load_samples(i) for i in chunk])).to(device)
            with torch.no_grad():
                specs = logmel(waves).to(torch.float16).cpu().numpy()
            for i, spec in zip(chunk, specs, strict=True):
                _save_npy(paths[i], spec)
        self.built = len(missing)
        self.features = torch.from_numpy(np.stack([np.load(p) for p in paths]))
        self.device = torch.device(device)
        if self.device.type == "cuda":  # ESC-50 is ~220 MB at float16: keep it next to the model
            self.features = self.features.to(self.device)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) float32 normalised dB on the device."""
        x = self.features[indices.to(self.features.device)].to(self.device).float()
        return (x - self.config.norm_mean) / self.config.norm_std


class AudioFeatures:
    """Decode and compute each batch from the audio files (no cache): the slow path, for comparison."""

    def __init__(self, dataset: Dataset, config: FeatureConfig, device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.device = torch.device(device)
        self.logmel = LogMel(config).to(self.device)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        waves = np.stack([self.dataset.load_samples(int(i)) for i in indices])
        with torch.no_grad():
            return self.logmel(torch.from_numpy(waves).to(self.device))


def cache_name(clip: Clip) -> str:
    """The cache file of a clip: ESC-50's flat names as before; "dog/1.wav" and "cat/1.wav" kept apart."""
    if "/" not in clip.filename:
        return Path(clip.filename).stem + ".npy"
    digest = hashlib.sha256(clip.filename.encode()).hexdigest()[:10]
    return f"{Path(clip.filename).stem[:80]}-{digest}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)
