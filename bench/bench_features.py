"""LogMel (torch.stft + librosa filterbank) vs librosa's melspectrogram + power_to_db.

    python bench/bench_features.py [--clips 20] [--repeats 3]

Same clips, same parameters; prints the median time per clip of each and the
ratio (target: LogMel >= 5x faster). librosa is warmed up first so that its
one-time numba compilation is not counted against it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import librosa
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from core.features import FeatureConfig, LogMel  # noqa: E402


def librosa_logmel(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None, power=2.0, center=True, pad_mode="reflect")
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)


def per_clip_seconds(fn, clips, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for clip in clips:
            fn(clip)
        runs.append((time.perf_counter() - t0) / len(clips))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(5 * cfg.sample_rate) * 0.1).astype(np.float32) for _ in range(args.clips)]
    logmel = LogMel(cfg)
    librosa_logmel(clips[0], cfg)  # warm-up: numba compiles here
    with torch.inference_mode():
        logmel(torch.from_numpy(clips[0]))

        base = per_clip_seconds(lambda c: librosa_logmel(c, cfg), clips, args.repeats)
        ours = per_clip_seconds(lambda c: logmel(torch.from_numpy(c)), clips, args.repeats)
        batch = torch.from_numpy(np.stack(clips))
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            logmel(batch)
        batched = (time.perf_counter() - t0) / args.repeats / len(clips)

    print(f"machine: {describe()}")
    print(f"{args.clips} clips of 5 s, 44.1 kHz; n_fft 2048, hop 512, 128 mels; median of {args.repeats}")
    print(f"baseline  librosa melspectrogram+power_to_db : {base * 1000:8.2f} ms/clip")
    print(f"candidate LogMel, one clip at a time         : {ours * 1000:8.2f} ms/clip   ratio {base / ours:5.1f}x (target >= 5x)")
    print(f"candidate LogMel, batch of {args.clips:<3}               : {batched * 1000:8.2f} ms/clip   ratio {base / batched:5.1f}x")


if __name__ == "__main__":
    main()
