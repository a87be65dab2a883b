"""Training throughput: the feature cache vs decoding audio and computing log-mels every epoch.

    python bench/bench_training.py                 # small CPU model, 200 synthetic 5 s clips
    python bench/bench_training.py --full          # the full 21 M-parameter AudioCNN (slow on CPU)

Both sides run `core.training.train` on the same synthetic ESC-50-layout data
(5 s clips, 44.1 kHz, like ESC-50) with the same seed, model and recipe; the
only difference is TrainConfig.feature_cache. samples/s is the training loop's
own perf/samples_per_second (train clips / time in the batch loop). The two
sides alternate (`--repeats` runs each) and each side reports its best epoch
after the first (which warms up) and the median: on a shared machine the best
epoch is the one least disturbed by other work. The one-time cache build is
reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from esc50_factory import make_dataset  # noqa: E402

from core.model import ModelConfig  # noqa: E402
from core.training import TrainConfig, pick_device, train  # noqa: E402

SMALL = ModelConfig(num_classes=10, stem_channels=8, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


def samples_per_second(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars("perf/samples_per_second")]


def machine() -> str:
    device = pick_device()
    accel = torch.cuda.get_device_name(0) if device.type == "cuda" else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), {device} ({accel})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="the full AudioCNN instead of the small one")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--clips-per-fold", type=int, default=4, help="per class (10 classes x 5 folds)")
    p.add_argument("--repeats", type=int, default=2, help="runs per side, alternating")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = replace(ModelConfig(), num_classes=10) if args.full else SMALL
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "ESC-50-master", num_classes=10,
                            clips_per_fold=args.clips_per_fold, seconds=5.0)
        base = TrainConfig(data_dir=str(data), runs_dir=str(Path(tmp) / "runs"), epochs=args.epochs,
                           model=model, progress=False)
        sides = {False: "baseline: decode + log-mel every epoch", True: "candidate: feature cache"}
        rates: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for cached in (False, True):
                started = time.perf_counter()
                result = train(replace(base, run_name=f"{'cache' if cached else 'audio'}-{repeat}",
                                       feature_cache=cached))
                epochs = samples_per_second(result.run_dir)
                rates[cached] += epochs[1:] or epochs
                print(f"{sides[cached]:40s} run {repeat + 1}: "
                      f"{', '.join(f'{r:.1f}' for r in epochs)} samples/s per epoch "
                      f"(whole run incl. setup {time.perf_counter() - started:.1f} s)", flush=True)
        build = time.perf_counter()
        from core.datasets import load_dataset
        from core.feature_cache import CachedFeatures

        dataset = load_dataset(data, num_classes=10)
        fresh = CachedFeatures(dataset, base.features, Path(tmp) / "fresh-cache", progress=False)
        build = time.perf_counter() - build
    best = {side: max(r) for side, r in rates.items()}
    median = {side: statistics.median(r) for side, r in rates.items()}
    print(f"baseline  (decode + log-mel every epoch): best {best[False]:.1f}, median {median[False]:.1f} samples/s")
    print(f"candidate (feature cache):                best {best[True]:.1f}, median {median[True]:.1f} samples/s")
    print(f"ratio: best {best[True] / best[False]:.2f}x, median {median[True] / median[False]:.2f}x")
    print(json.dumps({
        "model": "full AudioCNN" if args.full else "small AudioCNN (8-64 channels, 1 block per stage)",
        "clips": len(dataset.clips), "train_clips": len(dataset.indices([1, 2, 3, 4])),
        "baseline_samples_per_s": {"best": round(best[False], 1), "median": round(median[False], 1)},
        "candidate_samples_per_s": {"best": round(best[True], 1), "median": round(median[True], 1)},
        "ratio_best": round(best[True] / best[False], 2),
        "ratio_median": round(median[True] / median[False], 2),
        "one_time_cache_build_s": round(build, 2), "cache_clips_built": fresh.built,
        "machine": machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
