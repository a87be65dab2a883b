"""Inference benchmarks: wire formats end to end, serving overhead, forward vs FLOP bound, batching.

    python bench/bench_inference.py [--runs 20] [--threads 2]

Everything runs in this one invocation, baselines included:

1. A real uvicorn server (`python -m core.server`) on 127.0.0.1 analyses a
   generated 5 s clip. Client side, end to end (POST -> arrays in numpy):
   the seed-compatible JSON response (gzip on and off) vs `encoding=f16` +
   gzip. Bytes are what crossed the socket. For scale, the seed's own
   encoder (`.tolist()` + `json.dumps`, no gzip) is timed on the same data.
2. Serving overhead: decode + features + encode (server-side timings from
   the Server-Timing header) as a fraction of the model forward.
3. The model forward in-process vs its lower bound: FLOPs counted with
   torch.utils.flop_counter divided by this machine's measured fp32 matmul peak.
4. Throughput at batch 16 vs batch 1 (clips/s).
"""

from __future__ import annotations

import argparse
import base64
import gzip as gzip_lib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from audio_factory import wav_bytes  # noqa: E402
from conftest import free_port, start_process, stop_process  # noqa: E402

from bench.machine import describe  # noqa: E402
from core.inference import Predictor  # noqa: E402
from core.schema import analysis_from_wire, analysis_to_wire  # noqa: E402


def median_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def end_to_end(url: str, clip: bytes, encoding: str, gzip: bool, runs: int) -> dict:
    """POST the clip `runs` times; time until the arrays are numpy; count bytes on the wire."""
    session = requests.Session()
    session.headers["Accept-Encoding"] = "gzip" if gzip else "identity"
    body = {"audio_data": base64.b64encode(clip).decode(), "options": {"encoding": encoding}}
    times, wire, server = [], 0, []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        r = session.post(f"{url}/evaluate", json=body, stream=True, timeout=120)
        raw = r.raw.read(decode_content=False)
        content = gzip_lib.decompress(raw) if r.headers.get("Content-Encoding") == "gzip" else raw
        analysis = analysis_from_wire(json.loads(content))
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and analysis.spectrogram.shape == (128, 431)
        if i >= 3:  # warm-up runs are not counted
            times.append(elapsed)
            wire = len(raw)
            server.append(dict(part.split(";dur=") for part in r.headers["Server-Timing"].split(", ")))
    timing = {k: statistics.median(float(s[k]) for s in server) for k in server[0]}
    return {"times": times, "bytes": wire, "server": timing}


def matmul_peak_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best / 1e9


def forward_seconds(predictor: Predictor, batch: int, runs: int) -> float:
    x = torch.randn(batch, 1, 128, 431)
    with torch.inference_mode():
        for _ in range(2):
            predictor.model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            predictor.model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {describe()}")
    clip = wav_bytes(5.0)

    # -- 1. wire formats, end to end against a real server ---------------------------------
    port = free_port()
    with tempfile.TemporaryDirectory() as runs_dir:
        env = {"AUDIO_CNN_RUNS_DIR": runs_dir, "AUDIO_CNN_TOKEN": "", "OMP_NUM_THREADS": str(args.threads)}
        proc = start_process([sys.executable, "-m", "core.server", "--port", str(port)],
                             f"http://127.0.0.1:{port}/health", env)
        try:
            url = f"http://127.0.0.1:{port}"
            json_plain = end_to_end(url, clip, "json", gzip=False, runs=args.runs)
            json_gzip = end_to_end(url, clip, "json", gzip=True, runs=args.runs)
            f16_gzip = end_to_end(url, clip, "f16", gzip=True, runs=args.runs)
        finally:
            stop_process(proc)

    predictor = Predictor.untrained()
    analysis = predictor.analyze_bytes(clip)
    seed_dict = analysis_to_wire(analysis, "json")
    t0 = time.perf_counter()
    seed_text = json.dumps(_tolist(seed_dict))
    seed_encode_ms = (time.perf_counter() - t0) * 1000

    print(f"\n1. /evaluate end to end, 5 s clip, median/p95 of {args.runs} after warm-up "
          "(POST -> numpy arrays on the client)")
    print(f"   seed encoder for scale: .tolist()+json.dumps = {len(seed_text) / 1e6:.2f} MB, {seed_encode_ms:.0f} ms")
    rows = [("baseline  JSON (seed layout), no gzip", json_plain),
            ("baseline  JSON (seed layout), gzip", json_gzip),
            ("candidate f16 + gzip", f16_gzip)]
    for name, r in rows:
        med, p95 = median_p95(r["times"])
        print(f"   {name:<38} {r['bytes'] / 1e3:8.0f} KB  {med * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms")
    for name, base in rows[:2]:
        print(f"   f16+gzip vs {name.split('  ')[1]:<30} size {base['bytes'] / f16_gzip['bytes']:5.1f}x smaller, "
              f"latency {statistics.median(base['times']) / statistics.median(f16_gzip['times']):4.2f}x faster "
              "(targets: >= 10x, >= 3x)")
    print(f"   f16+gzip vs the seed encoder's {len(seed_text) / 1e6:.2f} MB: "
          f"{len(seed_text) / f16_gzip['bytes']:.1f}x smaller")

    # -- 2. serving overhead ---------------------------------------------------------------
    s = f16_gzip["server"]
    overhead = s["decode"] + s["features"] + s["postprocess"] + s["encode"]
    print("\n2. serving overhead (server-side medians, f16):")
    print(f"   decode {s['decode']:.1f} + features {s['features']:.1f} + postprocess {s['postprocess']:.1f} "
          f"+ encode {s['encode']:.1f} = {overhead:.1f} ms vs forward {s['forward']:.1f} ms "
          f"-> {overhead / s['forward']:.0%} (target <= 25%)")
    sj = json_plain["server"]
    print(f"   (JSON: encode {sj['encode']:.1f} ms -> overhead "
          f"{(sj['decode'] + sj['features'] + sj['postprocess'] + sj['encode']) / sj['forward']:.0%})")

    # -- 3. forward vs the FLOP bound -------------------------------------------------------
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        predictor.model(torch.zeros(1, 1, 128, 431))
    flops = counter.get_total_flops()
    peak = matmul_peak_gflops(args.threads)
    fwd1 = forward_seconds(predictor, 1, args.runs)
    bound = flops / (peak * 1e9)
    print(f"\n3. model forward, batch 1: {fwd1 * 1000:.1f} ms; {flops / 1e9:.2f} GFLOP / measured fp32 matmul "
          f"peak {peak:.0f} GFLOP/s = {bound * 1000:.1f} ms lower bound -> {bound / fwd1:.0%} of peak "
          f"({flops / fwd1 / 1e9:.0f} GFLOP/s achieved)")

    # -- 4. batching ----------------------------------------------------------------------
    fwd16 = forward_seconds(predictor, 16, max(3, args.runs // 4))
    print(f"\n4. throughput: batch 1 {1 / fwd1:.1f} clips/s, batch 16 {16 / fwd16:.1f} clips/s "
          f"-> {fwd1 * 16 / fwd16:.2f}x")


def _tolist(obj):
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float64).tolist()  # the seed converted float32 tensors like this
    if isinstance(obj, dict):
        return {k: _tolist(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tolist(v) for v in obj]
    return obj


if __name__ == "__main__":
    os.environ.setdefault("AUDIO_CNN_TOKEN", "")
    main()
