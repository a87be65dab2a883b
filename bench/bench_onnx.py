"""The ONNX export's size and CPU latency per 5 s clip, against PyTorch running the same checkpoint.

    python bench/bench_onnx.py [--preset seed-resnet34] [--repeats 20] [--threads 1]

    baseline   PyTorch (eval, inference_mode) on the spectrogram of one 5 s clip (1, 1, 128, 431)
    candidate  onnxruntime's CPU provider on the exported graph, same input

Both run with the same thread count. Also printed: the .onnx file's size next
to the checkpoint's, and the largest probability difference between the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from core.checkpoint import save_checkpoint  # noqa: E402
from core.features import FeatureConfig  # noqa: E402
from core.model import AudioCNN  # noqa: E402
from core.model_variants import PRESETS  # noqa: E402
from core.onnx_export import export_onnx  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed-resnet34", choices=sorted(PRESETS))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())
    config = PRESETS[args.preset]
    torch.manual_seed(0)
    model = AudioCNN(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, onnx_path = Path(tmp) / "best.pt", Path(tmp) / "model.onnx"
        save_checkpoint(ckpt, model, FeatureConfig(), [f"c{i}" for i in range(config.num_classes)])
        t0 = time.perf_counter()
        export_onnx(ckpt, onnx_path)
        export_s = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        x = torch.randn(1, 1, 128, 431) * 20 - 40
        with torch.inference_mode():
            base = median_ms(lambda: model(x), args.repeats)
            torch_probs = torch.softmax(model(x), dim=1).numpy()
        feed = {"logmel": x.numpy()}
        cand = median_ms(lambda: session.run(["probabilities"], feed), args.repeats)
        onnx_probs = session.run(["probabilities"], feed)[0]
        print(f"preset {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
              f"{args.threads} thread(s), median of {args.repeats}")
        print(f"checkpoint {ckpt.stat().st_size / 1e6:7.1f} MB   onnx {onnx_path.stat().st_size / 1e6:7.1f} MB   "
              f"(export took {export_s:.1f} s)")
        print(f"baseline  PyTorch      : {base:8.2f} ms per 5 s clip")
        print(f"candidate onnxruntime  : {cand:8.2f} ms per 5 s clip   ratio {base / cand:5.2f}x")
        print(f"largest probability difference: {float(np.abs(onnx_probs - torch_probs).max()):.2e}")


if __name__ == "__main__":
    main()
