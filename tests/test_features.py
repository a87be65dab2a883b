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


# -- LogMel against librosa, within a round-off bound derived from float32 arithmetic ----------

U = 2.0**-24  # unit round-off of float32


def roundoff_bound_db(x: np.ndarray, ours: np.ndarray, ref: np.ndarray, cfg: FeatureConfig = FeatureConfig()):
    """Largest |ours - ref| in dB that float32 round-off alone can explain, per (mel, frame).

    Both chains compute M[m, t] = sum_k W[m, k] |X_t[k]|^2 in float32 (torch's FFT kernels on
    this CPU; numpy's pocketfft rounded to complex64 for librosa), then 10 log10(max(M, 1e-10)).
    For ONE chain, with n = n_fft and the frame's windowed samples xw:

    - FFT: the computed spectrum obeys ||dX||_2 <= eps ||X||_2 with
      eps = log2(n) * (u + g4 * (sqrt 2 + u)) + u   (Higham, Accuracy and Stability, Thm 24.2,
      radix-2 with twiddles good to u; a radix-4 stage is two radix-2 stages; the trailing u is
      the window product). Parseval: ||X||_2^2 = n * sum(xw^2) =: E[t], from float64 here.
    - Power and mel sum: |d(|X_k|^2)| <= 2 |X_k| |dX_k| + |dX_k|^2 + g2 |X_k|^2, and the mel
      weights lie in [0, 1], so by Cauchy-Schwarz
      |dM| <= 2 eps sqrt(M E) + eps^2 E + (g2 + gK) M, with K the filter's non-zero weights.
    - dB: d(dB) = 10 / ln 10 * dM / M, clamped at 1e-10 (clamping only shrinks a gap); then
      log10 and the product by 10 each round once, and log10 itself errs by <= 1 ulp: 3 u |dB|.

    The two chains err independently, so the bound on their difference is twice one chain's.
    M is taken as the larger of the two results (each is within its own bound of the truth).
    """
    n, hop = cfg.n_fft, cfg.hop_length
    g = lambda k: k * U / (1 - k * U)  # noqa: E731  (Higham's gamma_k)
    eps = np.log2(n) * (U + g(4) * (np.sqrt(2) + U)) + U
    padded = np.pad(x.astype(np.float64), n // 2, mode="reflect")
    frames = librosa.util.frame(padded, frame_length=n, hop_length=hop)[:, : ours.shape[1]]
    window = np.hanning(n + 1)[:-1]  # the periodic Hann window, as torch.hann_window
    energy = n * np.sum((frames * window[:, None]) ** 2, axis=0)  # (frames,)
    weights = librosa.filters.mel(sr=cfg.sample_rate, n_fft=n, n_mels=cfg.n_mels, fmin=cfg.f_min,
                                  fmax=cfg.f_max, htk=True, norm=None)
    k = np.count_nonzero(weights, axis=1)[:, None]  # (mels, 1)
    m = np.maximum(10 ** (np.maximum(ours, ref).astype(np.float64) / 10), 1e-10)
    dm = 2 * eps * np.sqrt(m * energy) + eps**2 * energy + (g(2) + g(k)) * m
    one_chain = 10 / np.log(10) * dm / m + 3 * U * np.abs(ref)
    return 2 * one_chain


def signal_of(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = 5 * 44100
    return {
        "noise": rng.standard_normal(n) * 0.1,
        "tone": np.sin(2 * np.pi * 1000 * np.arange(n) / 44100) * 0.5,
        "quiet": rng.standard_normal(n) * 1e-4,
    }[kind].astype(np.float32)


def roundoff_violations(ours: np.ndarray, ref: np.ndarray, x: np.ndarray) -> int:
    """How many (mel, frame) cells differ by more than round-off can explain."""
    assert ours.shape == ref.shape
    return int(np.sum(np.abs(ours.astype(np.float64) - ref) > roundoff_bound_db(x, ours, ref)))


@pytest.mark.parametrize("kind", ["noise", "tone", "quiet"])
def test_logmel_matches_librosa_within_float32_roundoff(logmel, kind):
    x = signal_of(kind)
    ours = logmel(torch.from_numpy(x))[0].numpy()
    ref = librosa_logmel(x)
    assert ours.shape == ref.shape == (128, 431)
    assert roundoff_violations(ours, ref, x) == 0
    # ...and the bound says something: where there is energy (within 50 dB of the clip's peak) it is
    # a few thousandths of a dB for a typical cell. It is loose only for the lowest mel bands, one
    # FFT bin wide, where a frame's total energy sits beside a sliver of it (up to ~0.1 dB).
    loud = ref > ref.max() - 50
    assert loud.sum() > 1000 and np.median(roundoff_bound_db(x, ours, ref)[loud]) < 5e-3


def hamming_window(logmel: LogMel) -> np.ndarray:
    wrong = LogMel(logmel.config)
    wrong.window = torch.hamming_window(logmel.config.n_fft)
    return wrong(torch.from_numpy(signal_of("noise")))[0].numpy()


def one_frame_late(logmel: LogMel) -> np.ndarray:
    x = signal_of("noise")
    late = np.concatenate([np.zeros(logmel.config.hop_length, np.float32), x[: -logmel.config.hop_length]])
    return logmel(torch.from_numpy(late))[0].numpy()


def slaney_mel_scale(logmel: LogMel) -> np.ndarray:
    cfg = logmel.config
    wrong = LogMel(cfg)
    fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min,
                             fmax=cfg.f_max, htk=False, norm=None)
    wrong._mel_fb_csr = torch.from_numpy(fb).to_sparse_csr()
    return wrong(torch.from_numpy(signal_of("noise")))[0].numpy()


@pytest.mark.parametrize("mutant", [hamming_window, one_frame_late, slaney_mel_scale])
def test_the_roundoff_bound_still_catches_a_real_error(logmel, mutant):
    x = signal_of("noise")
    wrong = mutant(logmel)
    # Most cells are off: a real error is not round-off anywhere near the bound.
    assert roundoff_violations(wrong, librosa_logmel(x), x) > wrong.size // 2


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
