"""Model variants: named presets of AudioCNN's depths and widths, and what each costs and achieves.

    PRESETS                      "seed-resnet34" (the seed's layout, our default), "small-cpu", "tiny"
    parameters(config)           trainable parameters
    gflops(config, seconds=5)    GFLOP (2 x multiply-adds) of one forward pass on a clip of that length
    latency_ms(config, device)   median wall time of one forward pass on a 5 s clip
    best_accuracy(runs_dir)      {(stem, widths, depths): best val accuracy of the runs with that shape}
    compare(runs_dir, ...)       one row per preset: the four above (the Architecture page's table)

Train a preset with its flags, e.g. small-cpu:
`--stem-channels 32 --widths 32,64,128,256 --depths 2,2,2,2` (`preset_flags`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch

from core.audio import SAMPLE_RATE
from core.features import FeatureConfig
from core.model import AudioCNN, ModelConfig

PRESETS: dict[str, ModelConfig] = {
    "seed-resnet34": ModelConfig(),  # 7x7 stem 64, stages 3-4-6-3 at 64-128-256-512: the seed's network
    "small-cpu": ModelConfig(stem_channels=32, widths=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
    "tiny": ModelConfig(stem_channels=16, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
}


def shape_key(config: ModelConfig | dict) -> tuple:
    """What makes two models the same variant: stem, widths, depths (not classes or dropout)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return config.stem_channels, tuple(config.widths), tuple(config.depths)


def preset_flags(name: str) -> str:
    c = PRESETS[name]
    return (f"--stem-channels {c.stem_channels} --widths {','.join(map(str, c.widths))} "
            f"--depths {','.join(map(str, c.depths))}")


def parameters(config: ModelConfig) -> int:
    return sum(p.numel() for p in AudioCNN(config).parameters())


def _input(seconds: float, device: str | torch.device = "cpu") -> torch.Tensor:
    features = FeatureConfig()
    return torch.zeros(1, 1, features.n_mels, features.frames(round(seconds * SAMPLE_RATE)), device=device)


def gflops(config: ModelConfig, seconds: float = 5.0) -> float:
    """Forward-pass GFLOP for one clip, counted by torch's FlopCounterMode (convolutions and the linear head)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = AudioCNN(config).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(_input(seconds))
    return counter.get_total_flops() / 1e9


def latency_ms(config: ModelConfig, device: str | torch.device = "cpu", repeats: int = 5) -> float:
    """Median milliseconds of one forward pass on a 5 s clip on `device` (after one warm-up pass)."""
    model = AudioCNN(config).to(device).eval()
    x = _input(5.0, device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            model(x)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def best_accuracy(runs_dir: str | Path) -> dict[tuple, tuple[float, str]]:
    """{shape_key: (best val accuracy, run)} over runs_dir/**/config.json with a summary.json."""
    best: dict[tuple, tuple[float, str]] = {}
    runs_dir = Path(runs_dir)
    for config_path in runs_dir.glob("**/config.json"):
        try:
            model = json.loads(config_path.read_text())["model"]
            acc = float(json.loads((config_path.parent / "summary.json").read_text())["best_val_accuracy"])
            key = shape_key(model)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if math.isfinite(acc) and (key not in best or acc > best[key][0]):
            best[key] = (acc, config_path.parent.relative_to(runs_dir).as_posix())
    return best


def compare(runs_dir: str | Path | None = None, device: str | torch.device = "cpu",
            measure: bool = True, presets: dict[str, ModelConfig] = PRESETS) -> list[dict]:
    """One row per preset: parameters, GFLOP per 5 s clip, latency (when `measure`), best accuracy of its runs."""
    accuracy = best_accuracy(runs_dir) if runs_dir else {}
    rows = []
    for name, config in presets.items():
        acc, run = accuracy.get(shape_key(config), (None, None))
        rows.append({"preset": name, "stem": config.stem_channels, "widths": list(config.widths),
                     "depths": list(config.depths), "parameters": parameters(config),
                     "gflops_5s": round(gflops(config), 3),
                     "latency_ms": round(latency_ms(config, device), 1) if measure else None,
                     "best_val_accuracy": acc, "best_run": run, "flags": preset_flags(name)})
    return rows
