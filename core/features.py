"""Log-mel features, SpecAugment masks and mixup (one definition for training and serving).

The chain is the seed's (torchaudio defaults): n_fft 2048, hop 512, Hann
window, centred STFT with reflect padding, power 2, 128 HTK mel bins over
0-22050 Hz without filter normalisation, then 10*log10 clamped at 1e-10.
It runs as a torch module, so it runs on whatever device the model runs on.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import nn


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 22050.0
    # Applied after dB: (db - norm_mean) / norm_std. The seed normalises nothing,
    # so the defaults are the identity; a checkpoint records what it was trained with.
    norm_mean: float = 0.0
    norm_std: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def frames(self, num_samples: int) -> int:
        """Number of STFT frames for a clip of `num_samples` (after short-clip padding)."""
        return max(num_samples, self.n_fft) // self.hop_length + 1

    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency in Hz of each mel bin, (n_mels,)."""
        edges = librosa.mel_frequencies(self.n_mels + 2, fmin=self.f_min, fmax=self.f_max, htk=True)
        return edges[1:-1]


class LogMel(nn.Module):
    """(batch, samples) or (samples,) float waveform -> (batch, n_mels, frames) normalised dB."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(
            sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
            fmin=config.f_min, fmax=config.f_max, htk=True, norm=None,
        )
        # Not persistent: both are functions of the config, which the checkpoint stores.
        self.register_buffer("mel_fb", torch.from_numpy(fb.astype(np.float32)), persistent=False)  # (n_mels, freqs)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        # Each mel filter covers a narrow band: 2k of the 131k filterbank entries are
        # non-zero, and a sparse product is ~10x faster than the dense one on a CPU.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self._mel_fb_csr = self.mel_fb.to_sparse_csr()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
        if x.shape[-1] < self.config.n_fft:
            # Reflect padding needs more than n_fft/2 samples; a click is still a sound.
            x = F.pad(x, (0, self.config.n_fft - x.shape[-1]))
        spec = torch.stft(
            x.float(), n_fft=self.config.n_fft, hop_length=self.config.hop_length,
            window=self.window, center=True, pad_mode="reflect", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()          # (batch, freqs, frames)
        db = self._mel(power)                                     # (batch, n_mels, frames)
        db = db.clamp_(min=1e-10).log10_().mul_(10.0)             # in place: no extra copies
        if (self.config.norm_mean, self.config.norm_std) != (0.0, 1.0):
            db = db.sub_(self.config.norm_mean).div_(self.config.norm_std)
        return db


    def _mel(self, power: torch.Tensor) -> torch.Tensor:
        if power.device.type != "cpu":  # dense is fastest on a GPU (and sparse CSR is CPU-only here)
            return torch.matmul(self.mel_fb, power)
        return torch.stack([torch.sparse.mm(self._mel_fb_csr, p) for p in power])


def spec_augment(
    spec: torch.Tensor,
    freq_mask: int = 30,
    time_mask: int = 80,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One frequency and one time mask per example, as torchaudio's masking transforms draw them.

    spec: (batch, n_mels, frames). A mask's width is uniform in [0, param) and
    its start uniform over the positions where it fits. Masked cells take the
    example's mean instead of 0: in dB, 0 is a loud value, not silence.
    """
    b, n_mels, frames = spec.shape
    out = spec.clone()
    fill = spec.mean(dim=(1, 2), keepdim=True).expand_as(spec)
    for axis, param, size in ((1, freq_mask, n_mels), (2, time_mask, frames)):
        if param <= 0:
            continue
        width = (torch.rand(b, generator=generator) * min(param, size)).long()
        start = (torch.rand(b, generator=generator) * (size - width + 1).float()).long()
        idx = torch.arange(size)
        mask = (idx[None, :] >= start[:, None]) & (idx[None, :] < (start + width)[:, None])
        mask = mask[:, :, None] if axis == 1 else mask[:, None, :]
        out = torch.where(mask.to(spec.device), fill, out)
    return out


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a shuffled copy of itself.

    Returns (mixed x, targets a, targets b, lam); the loss is
    lam * loss(out, a) + (1 - lam) * loss(out, b), lam ~ Beta(alpha, alpha).
    """
    # torch's Beta.sample takes no generator: invert the Beta CDF at a
    # generator-driven uniform instead, so that seeded runs reproduce exactly.
    u = float(torch.rand((), generator=generator))
    lam = float(betaincinv(alpha, alpha, u))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
