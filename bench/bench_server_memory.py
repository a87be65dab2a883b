"""Server memory over rounds of heavy requests: this tree's server against an older commit's.

    python bench/bench_server_memory.py [--baseline-ref acf2964] [--rounds 6]

Both servers (`python serve_modal.py --local`, batching on) get the same rounds, in turns: a 30 s
44.1 kHz clip and a 20 MB body (20.3 s of 48 kHz stereo float64 WAV), with stage feature maps.
Prints each server's resident set (VmRSS) after every round and its peak (VmHWM), both above the
warmed-up server. The default baseline is the commit before core.server pinned glibc's mmap
threshold (core.server.pin_mmap_threshold).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
from audio_factory import encode, tone, wav_bytes  # noqa: E402
from bench_serving import checkout, start_server  # noqa: E402
from conftest import stop_process  # noqa: E402

from bench.machine import describe  # noqa: E402


def memory_mb(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="acf2964", help="git commit whose server is the baseline")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    limit_wav = encode(tone(20.3, 48000, channels=2), 48000, "WAV", "DOUBLE")
    bodies = [{"audio_data": base64.b64encode(wav).decode(), "options": {"feature_maps": "stages"}}
              for wav in (wav_bytes(30.0), limit_wav)]
    warm = {"audio_data": base64.b64encode(wav_bytes(5.0)).decode()}
    with tempfile.TemporaryDirectory() as runs, checkout(args.baseline_ref) as old_tree:
        servers = {"baseline": start_server(16, runs, old_tree), "candidate": start_server(16, runs)}
        try:
            base = {}
            for name, (proc, url) in servers.items():
                assert requests.post(f"{url}/evaluate", json=warm, timeout=600).status_code == 200
                base[name] = memory_mb(proc.pid)
            print(f"warmed up: baseline RSS {base['baseline']['VmRSS']:.0f} MB, "
                  f"candidate {base['candidate']['VmRSS']:.0f} MB\n")
            print(f"{'round':>5} | {'baseline RSS':>12} {'peak':>6} | {'candidate RSS':>13} {'peak':>6}   (MB above warm)")
            for r in range(1, args.rounds + 1):
                row = {}
                for name, (proc, url) in servers.items():
                    for body in bodies:
                        assert requests.post(f"{url}/evaluate", json=body, timeout=600).status_code == 200
                    m = memory_mb(proc.pid)
                    row[name] = (m["VmRSS"] - base[name]["VmRSS"], m["VmHWM"] - base[name]["VmHWM"])
                (b, bp), (c, cp) = row["baseline"], row["candidate"]
                print(f"{r:>5} | {b:>+12.0f} {bp:>+6.0f} | {c:>+13.0f} {cp:>+6.0f}", flush=True)
        finally:
            for proc, _ in servers.values():
                stop_process(proc)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
