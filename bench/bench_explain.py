"""What explaining costs: saliency per clip as a ratio of one plain forward, and projection times.

    python bench/bench_explain.py [--repeats 3] [--steps 32] [--device cpu|cuda] [--points 400 2000]

Saliency: the default AudioCNN (21.3 M parameters, untrained: the cost does
not depend on the weights) on one 5 s clip. The baseline is the plain
forward of the same spectrogram in the same run; Grad-CAM adds one backward
pass, Integrated Gradients `steps` forward+backward passes in chunks of
core.saliency.PATH_BUDGET_FRAMES frames.

Projection: PCA, t-SNE and (when installed) UMAP of N points of 512 features
(10 classes of Gaussian clusters), after one warm-up run each (UMAP's numba
compiles then), as seconds and as a ratio of PCA's time for the same N.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import describe  # noqa: E402
from core import embeddings  # noqa: E402
from core.features import FeatureConfig, LogMel  # noqa: E402
from core.model import AudioCNN  # noqa: E402
from core.saliency import saliency_map  # noqa: E402


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def saliency_costs(device: str, steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = AudioCNN().to(device).eval()
    wave = torch.from_numpy((np.random.default_rng(0).standard_normal(5 * 44100) * 0.1).astype(np.float32))
    spec = LogMel(FeatureConfig()).to(device)(wave.to(device))[0]

    def forward():
        with torch.inference_mode():
            model(spec.reshape(1, 1, *spec.shape))

    base = seconds(forward, repeats)
    print(f"forward, 5 s clip ({tuple(spec.shape)}): {base * 1000:.1f} ms (baseline)")
    for method, kwargs in (("gradcam", {}), ("integrated_gradients", {"steps": steps})):
        t = seconds(lambda m=method, k=kwargs: saliency_map(model, spec, m, 0, **k), repeats)
        label = method + (f" ({steps} steps)" if kwargs else "")
        print(f"{label:<34} {t * 1000:9.1f} ms   {t / base:6.1f}x a forward")


def projection_times(points: list[int], repeats: int) -> None:
    rng = np.random.default_rng(0)
    for n in points:
        centres = rng.normal(0, 4, (10, 512))
        x = (centres[np.arange(n) % 10] + rng.normal(0, 1, (n, 512))).astype(np.float32)
        times = {m: seconds(lambda m=m, x=x: embeddings.project(x, m), repeats) for m in embeddings.methods()}
        row = "   ".join(f"{m} {t:7.2f} s ({t / times['pca']:5.0f}x PCA)" for m, t in times.items())
        print(f"{n:>5} points x 512: {row}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--points", type=int, nargs="*", default=[400, 2000])
    parser.add_argument("--no-projection", action="store_true")
    args = parser.parse_args()
    print(describe())
    saliency_costs(args.device, args.steps, args.repeats)
    if not args.no_projection:
        projection_times(args.points, args.repeats)


if __name__ == "__main__":
    main()
