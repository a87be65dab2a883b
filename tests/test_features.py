"""core.features: LogMel is librosa's chain, on batches and any length; masks and mixup behave."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from core.features import FeatureConfig, LogMel, mixup, spec_augment


@pytest.fixture(scope="module")
def logmel():
    return LogMel(FeatureConfig())


def librosa_logmel(x: np.ndarray, cfg: FeatureConfig = FeatureConfig()) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None, power=2.0, center=True, pad_mode="reflect",
    )
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


@pytest.mark.parametrize("kind", ["noise", "tone", "quiet"])
def test_logmel_matches_librosa(logmel, kind):
    rng = np.random.default_rng(0)
    n = 5 * 44100
    x = {
        "noise": rng.standard_normal(n) * 0.1,
        "tone": np.sin(2 * np.pi * 1000 * np.arange(n) / 44100) * 0.5,
        "quiet": rng.standard_normal(n) * 1e-4,
    }[kind].astype(np.float32)
    ours = logmel(torch.from_numpy(x))[0].numpy()
    ref = librosa_logmel(x)
    assert ours.shape == ref.shape == (128, 431)
    # Both chains run in float32 with different FFTs and summation orders, so they
    # differ by round-off: about 1e-7 of the loudest power in the clip. In dB that
    # is invisible where there is energy, and large only in bins 70+ dB below the
    # peak (a pure tone's empty bins), where the value is round-off in both.
    # So: within 2e-3 dB (0.05% of power) wherever the power is within 50 dB of
    # the clip's peak, and within 1e-6 of the peak power everywhere.
    loud = ref > ref.max() - 50
    assert loud.sum() > 1000  # a pure tone fills few bins, but never this few
    np.testing.assert_allclose(ours[loud], ref[loud], atol=2e-3, rtol=0)
    peak = 10 ** (ref.max() / 10)
    np.testing.assert_allclose(10 ** (ours / 10), 10 ** (ref / 10), atol=1e-6 * peak, rtol=0)


def test_logmel_works_on_batches_like_one_clip_at_a_time(logmel):
    x = torch.randn(3, 44100) * 0.1
    batch = logmel(x)
    for i in range(3):
        torch.testing.assert_close(batch[i], logmel(x[i])[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 100, 1024, 1025, 2047])
def test_clips_shorter_than_one_window_are_zero_padded_not_a_crash(logmel, n):
    spec = logmel(torch.ones(n) * 0.5)
    assert spec.shape == (1, 128, FeatureConfig().frames(n)) == (1, 128, 5)
    assert torch.isfinite(spec).all()


def test_silence_is_the_clamp_floor(logmel):
    spec = logmel(torch.zeros(44100))
    assert torch.all(spec == -100.0)  # 10 * log10(1e-10)


def test_normalisation_from_the_config_is_applied():
    x = torch.randn(4410) * 0.1
    raw = LogMel(FeatureConfig())(x)
    norm = LogMel(FeatureConfig(norm_mean=-20.0, norm_std=10.0))(x)
    torch.testing.assert_close(norm, (raw + 20.0) / 10.0)


def test_frames_formula_matches_the_transform():
    cfg = FeatureConfig()
    lm = LogMel(cfg)
    for n in (44100, 220500, 300000):
        assert lm(torch.zeros(n)).shape[-1] == cfg.frames(n)


def test_mel_centre_frequencies_rise_from_0_to_nyquist():
    f = FeatureConfig().mel_frequencies()
    assert f.shape == (128,) and np.all(np.diff(f) > 0) and 0 < f[0] < 200 and 20000 < f[-1] < 22050


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_logmel_on_cuda_matches_cpu(logmel):
    x = torch.randn(2, 44100) * 0.1
    torch.testing.assert_close(logmel.cuda()(x.cuda()).cpu(), LogMel()(x), atol=1e-3, rtol=0)


# -- SpecAugment and mixup ------------------------------------------------------------


def test_spec_augment_masks_one_band_and_one_span_per_example():
    spec = torch.arange(128 * 200, dtype=torch.float32).reshape(1, 128, 200).repeat(8, 1, 1)
    out = spec_augment(spec, freq_mask=30, time_mask=80, generator=torch.Generator().manual_seed(3))
    for b in range(8):
        changed = out[b] != spec[b]
        rows = changed.all(dim=1).nonzero().flatten()
        cols = changed.all(dim=0).nonzero().flatten()
        # masked rows/columns are contiguous and no wider than the parameter
        assert len(rows) < 30 and len(cols) < 80
        if len(rows):
            assert rows.max() - rows.min() + 1 == len(rows)
        if len(cols):
            assert cols.max() - cols.min() + 1 == len(cols)
        # masked cells hold the example's mean, the rest is untouched
        assert torch.allclose(out[b][changed], spec[b].mean().expand(int(changed.sum())))
    assert (out != spec).any()


def test_spec_augment_is_reproducible_with_a_seeded_generator():
    spec = torch.randn(4, 128, 100)
    a = spec_augment(spec, generator=torch.Generator().manual_seed(7))
    b = spec_augment(spec, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_mixup_mixes_with_a_permutation_and_returns_both_targets():
    x = torch.eye(6)
    y = torch.arange(6)
    mixed, y_a, y_b, lam = mixup(x, y, alpha=0.2, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= lam <= 1.0
    assert torch.equal(y_a, y) and sorted(y_b.tolist()) == list(range(6))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[y_b])


def test_mixup_lambda_follows_beta_02():
    g = torch.Generator().manual_seed(1)
    lams = np.array([mixup(torch.zeros(2, 1), torch.arange(2), 0.2, g)[3] for _ in range(2000)])
    # Beta(0.2, 0.2) is U-shaped: mean 0.5, most mass near 0 and 1
    assert abs(lams.mean() - 0.5) < 0.05
    assert ((lams < 0.1) | (lams > 0.9)).mean() > 0.5
