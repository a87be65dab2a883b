"""How long a last.pt save takes, against writing the same bytes raw: does it fit Modal's grace period?

    python bench/bench_checkpoint.py [--dir /path/on/the/disk/to/test] [--repeats 5]

A preempted container has a short grace period (Modal: about 30 s) between
SIGTERM and SIGKILL, in which core.training finishes the batch, saves last.pt
and the Volume is committed. last.pt holds the full AudioCNN (21.3 M
parameters) plus AdamW's two moments and the training state, so it is about
three times the weights. Both sides write to the same folder with fsync:

    baseline   the same number of bytes, written raw (os.write + fsync): the disk's own cost
    candidate  core.checkpoint.save_checkpoint (torch.save into an atomic temp file, fsync, rename)

It also prints the write volume of saving last.pt every epoch of a 100-epoch run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from core.features import FeatureConfig  # noqa: E402
from core.labels import CLASSES  # noqa: E402
from core.model import AudioCNN, ModelConfig  # noqa: E402


def training_state(model: AudioCNN) -> dict:
    """What core.training puts in last.pt's extra: AdamW's state after one step, schedule, RNGs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    model(torch.randn(2, 1, 128, 431)).sum().backward()
    optimizer.step()
    return {"optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "epoch": 42, "batch": 0, "permutation": torch.randperm(1600)}


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="folder to write in (default: a temp folder)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe())
    torch.manual_seed(0)
    model = AudioCNN(ModelConfig())
    extra = training_state(model)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-checkpoint-"))
    target = folder / "last.pt"

    def save() -> None:
        save_checkpoint(target, model, FeatureConfig(), list(CLASSES), {"run_name": "bench"}, extra)

    save()
    size = target.stat().st_size
    load_checkpoint(target)  # it reads back
    payload = os.urandom(size)

    def raw() -> None:
        fd = os.open(folder / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)

    baseline, candidate = [], []
    for _ in range(args.repeats):  # alternate, so that both see the same disk weather
        baseline += timed(raw, 1)
        candidate += timed(save, 1)
    b, c = statistics.median(baseline), statistics.median(candidate)
    print(f"last.pt: {size / 1e6:.0f} MB in {folder}")
    print(f"baseline  raw write + fsync        median {b:.2f} s  (min {min(baseline):.2f})")
    print(f"candidate save_checkpoint (atomic) median {c:.2f} s  (min {min(candidate):.2f})")
    print(f"ratio {c / b:.2f}x the raw write; {c / 30 * 100:.0f}% of a 30 s grace period")
    print(f"100 epochs: {100 * size / 1e9:.1f} GB written to last.pt (one file on disk, replaced each epoch)")
    (folder / "raw.bin").unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    if args.dir is None:
        folder.rmdir()


if __name__ == "__main__":
    main()
