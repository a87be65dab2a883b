"""Real audio files for tests, written with soundfile (no fixtures from disk, no network)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def tone(seconds: float = 5.0, rate: int = 44100, freq: float = 440.0, channels: int = 1,
         amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A tone with a little noise: (frames,) or (frames, channels) float32 in [-1, 1]."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    x = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return x


def encode(samples: np.ndarray, rate: int = 44100, format: str = "WAV", subtype: str | None = None) -> bytes:
    """Write samples to an in-memory audio file and return its bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=format, subtype=subtype)
    return buf.getvalue()


def wav_bytes(seconds: float = 5.0, rate: int = 44100, freq: float = 440.0, channels: int = 1,
              subtype: str = "PCM_16", seed: int = 0) -> bytes:
    return encode(tone(seconds, rate, freq, channels, seed=seed), rate, "WAV", subtype)
