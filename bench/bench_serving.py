"""Serving throughput and latency, without (baseline) and with (candidate) micro-batching.

    python bench/bench_serving.py [--clients 1,4,16,32] [--per-client 2] [--seconds 5] [--maps none]
    python bench/bench_serving.py --baseline-ref HEAD~1      # this tree's server against an older one

Two real servers (`python serve_modal.py --local`) on loopback, one with
AUDIO_CNN_BATCH_MAX=1 and one with 16 (or, with --baseline-ref, the server of
that git commit, checked out in a temporary worktree, against this tree's, both
batching); for each number of concurrent clients,
each client thread sends requests back to back (a closed loop) and the two
servers take turns, so background load on a shared machine hits both alike.
Prints p50/p99 latency, throughput and the candidate/baseline ratio, the
clips per forward pass the batcher achieved, and the p99 of a /health probe
sent every 50 ms during the load: what CPU work on the event loop costs
everyone else.

Then the same question without HTTP: forward passes of batch 1 vs batch 16
in this process, which bounds what batching can gain on this machine.

What to expect: on a small CPU one 5 s clip's forward already keeps every
core busy (on 2 cores batch 16 was only 1.1-1.25x faster per clip than
batch 1), so batching gains there mostly by ending lock hand-offs and core
contention between request threads (about 1.3x at 4-32 clients, with the
batched server at the forward's own limit). Large gains need a GPU, where a
batch of one leaves most of the device idle. On a shared machine, run it
twice: background load moves single runs by tens of percent.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from audio_factory import wav_bytes  # noqa: E402
from conftest import free_port, start_process, stop_process  # noqa: E402

from bench.machine import describe  # noqa: E402


def start_server(batch_max: int, runs_dir: str, tree: Path = ROOT) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {"AUDIO_CNN_RUNS_DIR": runs_dir, "AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_TOKEN": "",
           "AUDIO_CNN_BATCH_MAX": str(batch_max), "AUDIO_CNN_BATCH_WAIT_MS": "5"}
    proc = start_process([sys.executable, "serve_modal.py", "--local", "--port", str(port)],
                         f"http://127.0.0.1:{port}/health", env, cwd=tree)
    return proc, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def checkout(ref: str):
    """A temporary git worktree of `ref` (detached), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), ref], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


class HealthProbe(threading.Thread):
    """GET /health every 50 ms until stopped; its latencies in ms (a stalled event loop shows here)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.ms, self.done = url, [], threading.Event()

    def run(self):
        session = requests.Session()
        while not self.done.wait(0.05):
            t0 = time.perf_counter()
            session.get(f"{self.url}/health", timeout=600)
            self.ms.append((time.perf_counter() - t0) * 1000)

    def stop(self) -> list[float]:
        self.done.set()
        self.join()
        return self.ms


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def batch_stats(url: str) -> dict:
    return requests.get(f"{url}/health", timeout=30).json()["batching"]


def run_level(url: str, body: dict, clients: int, per_client: int) -> dict:
    """`clients` threads each send `per_client` requests back to back; latencies in ms."""
    latencies: list[float] = []
    failures = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def client():
        session = requests.Session()
        session.post(f"{url}/evaluate", json=body, timeout=600)  # connection + a warm server, unmeasured
        start_gate.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            r = session.post(f"{url}/evaluate", json=body, timeout=600)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                (latencies if r.status_code == 200 else failures).append(ms if r.status_code == 200 else r.status_code)

    before = batch_stats(url)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait()
    probe = HealthProbe(url)
    probe.start()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    health_ms = probe.stop()
    after = batch_stats(url)
    clips_per_pass = None
    if after.get("enabled"):
        passes = after["batches"] - before["batches"]
        clips_per_pass = (after["clips"] - before["clips"]) / passes if passes else None
    return {"p50": statistics.median(latencies), "p99": p99(latencies), "rps": len(latencies) / wall,
            "failures": len(failures), "clips_per_pass": clips_per_pass,
            "health_p99": p99(health_ms) if health_ms else float("nan")}


def forward_throughput(seconds: float, batches=(1, 16), reps: int = 5) -> dict[int, tuple[float, float]]:
    """Clips per second of the model's forward alone (no HTTP, no decoding): (best, median) per batch size.

    Batch sizes take turns, `reps` passes each, so a burst of background load
    hits all of them; the best pass is the closest to an idle machine.
    """
    import torch

    from core.inference import Predictor

    p = Predictor.untrained()
    wave = torch.from_numpy(wav_to_samples(wav_bytes(seconds)))[None]
    per_clip: dict[int, list[float]] = {b: [] for b in batches}
    with torch.inference_mode():
        spec = p.features(wave).unsqueeze(1)
        xs = {b: spec.repeat(b, 1, 1, 1).contiguous() for b in batches}
        for x in xs.values():
            p.model(x)  # warm-up: oneDNN picks its kernels on the first call
        for _ in range(reps):
            for b, x in xs.items():
                t0 = time.perf_counter()
                p.model(x)
                per_clip[b].append((time.perf_counter() - t0) / b)
    return {b: (1 / min(ts), 1 / statistics.median(ts)) for b, ts in per_clip.items()}


def wav_to_samples(data: bytes):
    from core.audio import decode_audio

    return decode_audio(data).samples


def http_benchmark(body: dict, levels: list[int], per_client_min: int, baseline_ref: str | None = None) -> None:
    """One table row per number of clients; the two servers take turns at each level."""
    with tempfile.TemporaryDirectory() as runs, contextlib.ExitStack() as stack:
        if baseline_ref:
            old_tree = stack.enter_context(checkout(baseline_ref))
            servers = {"baseline": start_server(16, runs, old_tree), "candidate": start_server(16, runs)}
        else:
            servers = {name: start_server(n, runs) for name, n in (("baseline", 1), ("candidate", 16))}
        try:
            header = (f"{'clients':>7} | {'baseline p50/p99 ms':>20} {'req/s':>6} {'health p99':>10} | "
                      f"{'candidate p50/p99 ms':>21} {'req/s':>6} {'clips/pass':>10} {'health p99':>10} | "
                      f"{'ratio':>5}")
            print(header)
            print("-" * len(header))
            for clients in levels:
                per_client = max(per_client_min, -(-8 // clients))
                r = {name: run_level(url, body, clients, per_client) for name, (_, url) in servers.items()}
                b, c = r["baseline"], r["candidate"]
                cpp = f"{c['clips_per_pass']:.1f}" if c["clips_per_pass"] else "-"
                fails = f"  FAILURES: {b['failures']}/{c['failures']}" if b["failures"] or c["failures"] else ""
                print(f"{clients:>7} | {b['p50']:>9.0f} / {b['p99']:>8.0f} {b['rps']:>6.2f} {b['health_p99']:>10.0f} | "
                      f"{c['p50']:>10.0f} / {c['p99']:>8.0f} {c['rps']:>6.2f} {cpp:>10} {c['health_p99']:>10.0f} | "
                      f"{c['rps'] / b['rps']:>4.2f}x{fails}", flush=True)
        finally:
            for proc, _ in servers.values():
                stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16,32")
    parser.add_argument("--per-client", type=int, default=2, help="measured requests per client (min 8 per level)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length (ESC-50 clips are 5 s)")
    parser.add_argument("--maps", default="none", choices=["none", "stages", "blocks"],
                        help="feature maps in each response (none: classification only)")
    parser.add_argument("--no-forward", action="store_true", help="skip the in-process forward benchmark")
    parser.add_argument("--forward-only", action="store_true", help="only the in-process forward benchmark")
    parser.add_argument("--baseline-ref", help="git commit whose server is the baseline (both servers batch)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    print(f"machine: {describe()}")
    if not args.forward_only:
        compared = (f"baseline: the server at {args.baseline_ref}, candidate: this tree's, both AUDIO_CNN_BATCH_MAX=16"
                    if args.baseline_ref else "baseline: AUDIO_CNN_BATCH_MAX=1, candidate: AUDIO_CNN_BATCH_MAX=16")
        print(f"request: {args.seconds:g} s WAV clip, feature_maps={args.maps}, encoding=f16; {compared}, wait 5 ms\n")
        body = {"audio_data": base64.b64encode(wav_bytes(args.seconds)).decode(),
                "options": {"feature_maps": args.maps, "encoding": "f16"}}
        http_benchmark(body, levels, args.per_client, args.baseline_ref)

    if not args.no_forward or args.forward_only:
        fwd = forward_throughput(args.seconds)
        print(f"\nforward only ({args.seconds:g} s clips, in process, clips/s best / median of 5 passes):")
        for b, (best, median) in fwd.items():
            print(f"  batch {b:>2}: {best:6.2f} / {median:6.2f}")
        print(f"  ratio batch 16 / batch 1: best {fwd[16][0] / fwd[1][0]:.2f}x, "
              f"median {fwd[16][1] / fwd[1][1]:.2f}x")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
