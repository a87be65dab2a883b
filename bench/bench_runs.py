"""Benchmark core.runs.load_runs against a plain sequential EventAccumulator loop.

50 runs x 5 tags x 200 steps are written with torch's SummaryWriter into a
temporary folder, then timed (median of REPEATS, interleaved so background load
hits every variant alike):

    baseline   one EventAccumulator per event file, one after another, into a frame,
               with TensorBoard as installed (its pure-Python CRC-32C)
    threads    core.runs.parse_event_file over a thread pool (for the record)
    cold       load_runs with an empty cache (C CRC-32C, one file after another)
    warm       load_runs again, nothing changed (every file a cache hit)

Targets: cold / baseline <= 1x, cold / warm >= 20x. Run: python bench/bench_runs.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # noqa: E402

from bench.machine import describe  # noqa: E402
from core import runs  # noqa: E402
from core.event_files import use_fast_crc32c  # noqa: E402

PURE_PYTHON_CRC32C = pywrap_tensorflow.crc32c

RUNS, TAGS, STEPS, REPEATS = 50, ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"), 200, 5


def write_runs(root: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for r in range(RUNS):
        with SummaryWriter(str(root / f"run{r:02d}")) as writer:
            for step in range(STEPS):
                for t, tag in enumerate(TAGS):
                    writer.add_scalar(tag, 1.0 / (1 + step) + 0.01 * t + 0.001 * r, step)


def baseline(root: Path) -> pd.DataFrame:
    pywrap_tensorflow.crc32c = PURE_PYTHON_CRC32C  # the reader as installed, not as core.runs tunes it
    rows = []
    for path in sorted(root.glob("*/events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            rows += [(path.parent.name, tag, e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
    use_fast_crc32c()
    return pd.DataFrame(rows, columns=runs.COLUMNS)


def threads(root: Path) -> list:
    jobs = [(str(p), p.stat().st_size) for p in sorted(root.glob("*/events.out.tfevents.*"))]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(lambda job: runs.parse_event_file(*job), jobs))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    # Load from other processes slows every variant, and parallel ones most: say how much there was.
    print(f"machine: {describe()}; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_runs(root)
        size = sum(p.stat().st_size for p in root.rglob("events.out.tfevents.*"))
        print(f"data: {RUNS} runs x {len(TAGS)} tags x {STEPS} steps, {size / 1e6:.1f} MB of event files")

        first = timed(lambda: runs.load_runs(root, cache=runs.EventCache()))
        times: dict[str, list[float]] = {"baseline": [], "threads": [], "cold": [], "warm": []}
        for _ in range(REPEATS):
            cache = runs.EventCache()
            times["baseline"].append(timed(lambda: baseline(root)))
            times["threads"].append(timed(lambda: threads(root)))
            times["cold"].append(timed(lambda cache=cache: runs.load_runs(root, cache=cache)))
            times["warm"].append(timed(lambda cache=cache: runs.load_runs(root, cache=cache)))
            assert cache.parses == RUNS, "the warm load parsed files again"
        check = runs.load_runs(root, cache=runs.EventCache()).scalars
        assert len(check) == len(baseline(root)) == RUNS * len(TAGS) * STEPS

    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:>9}: median {med[name] * 1000:8.1f} ms   "
              f"(runs: {', '.join(f'{v * 1000:.0f}' for v in values)})")
    print(f"first load_runs in this process (imports included): {first * 1000:.0f} ms")
    print(f"cold / baseline    = {med['cold'] / med['baseline']:.2f}x   (target <= 1x)")
    print(f"threads / baseline = {med['threads'] / med['baseline']:.2f}x")
    print(f"first / baseline   = {first / med['baseline']:.2f}x")
    print(f"cold / warm        = {med['cold'] / med['warm']:.0f}x faster warm   (target >= 20x)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
