"""Peak RSS per request: the old whole-file decoder (baseline) vs the budgeted block decoder (candidate).

    python bench/bench_hostile_decode.py [--repeats 3]

Two real servers on loopback run the same code except the decoder: the
baseline replaces `core.inference.decode_audio` with the decoder this project
had before issue 10 (`whole_file_decode` below: every channel decoded to
float32 at once, any rate up to 768 kHz, librosa.resample, no sample budget);
the candidate runs as shipped. Each clip is posted `repeats` times to each
server, the two taking turns. Before every request the server's RSS
high-water mark is reset (`echo 5 > /proc/PID/clear_refs`); afterwards
VmHWM minus the RSS it started from is that request's peak growth, C
allocations (libsndfile, soxr, torch) included. Prints the median growth,
the status and the latency per clip and server, and the baseline/candidate
ratio of the growth.

Clips: 5 s of 44.1 kHz mono (an ESC-50 clip), 30 s of 48 kHz stereo FLAC (the
longest the default budget accepts), and the FLAC bomb from issue 10 (29.9 s
of silence, 8 channels at 655,350 Hz, ~170 KB on the wire). Linux only.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


# -- the baseline: the decoder as it was before the budget ------------------------------------------


def whole_file_decode(data: bytes, max_seconds: float | None = 30.0, max_samples: int | None = None):
    """The old core.audio.decode_audio, in substance: all channels at once, no sample budget."""
    import librosa
    import numpy as np
    import soundfile as sf

    from core.audio import (
        SAMPLE_RATE,
        AudioTooLongError,
        DecodedAudio,
        EmptyAudioError,
        SampleRateError,
        _classify_libsndfile_error,
    )

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames, fmt = f.samplerate, f.channels, f.frames, f.format
            if not 1_000 <= rate <= 768_000:
                raise SampleRateError(f"The file says its sample rate is {rate} Hz.")
            if max_seconds is not None and frames > 0 and frames / rate > max_seconds:
                raise AudioTooLongError(f"The clip is {frames / rate:.1f} s long.")
            samples = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise _classify_libsndfile_error(err) from None
    if samples.shape[0] == 0:
        raise EmptyAudioError("The file contains no audio samples.")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return DecodedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), int(channels), str(fmt))


def serve(decoder: str, port: int) -> None:
    """Run the real server (untrained model) with the chosen decoder; used as a subprocess."""
    import uvicorn

    import core.inference
    from core.inference import Predictor
    from core.server import create_app
    from core.settings import Settings

    if decoder == "old":
        core.inference.decode_audio = whole_file_decode
    uvicorn.run(create_app(Predictor.untrained(), settings=Settings.from_env()),
                host="127.0.0.1", port=port, log_level="warning")


# -- clips ----------------------------------------------------------------------------------------


def clips() -> dict[str, bytes]:
    import numpy as np
    import soundfile as sf

    def write(seconds: float, rate: int, channels: int, fmt: str, tone: bool) -> bytes:
        buf, step = io.BytesIO(), max(1, (1 << 20) // channels)
        t = np.arange(step) / rate
        block = (0.3 * np.sin(2 * np.pi * 440 * t) if tone else 0 * t).astype(np.float32)
        block = np.repeat(block[:, None], channels, axis=1)
        with sf.SoundFile(buf, "w", rate, channels, format=fmt, subtype="PCM_16") as f:
            left = int(round(seconds * rate))
            while left > 0:
                f.write(block[: min(left, step)])
                left -= step
        return buf.getvalue()

    return {
        "5 s 44.1 kHz mono WAV": write(5.0, 44_100, 1, "WAV", True),
        "30 s 48 kHz stereo FLAC": write(30.0, 48_000, 2, "FLAC", True),
        "FLAC bomb (8 ch, 655 kHz)": write(29.9, 655_350, 8, "FLAC", False),
    }


# -- measuring ----------------------------------------------------------------------------------


def rss_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def start(decoder: str) -> tuple[subprocess.Popen, str]:
    sock_port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", decoder, "--port", str(sock_port)], cwd=ROOT,
                            env={**os.environ, "AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_RUNS_DIR": "/nonexistent"})
    url = f"http://127.0.0.1:{sock_port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {decoder} server exited with {proc.returncode}")
        try:
            with opener.open(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(proc: subprocess.Popen, url: str, data: bytes) -> tuple[int, float, float]:
    """(status, peak RSS growth in MB, seconds) of one POST /evaluate."""
    import requests

    body = {"audio_data": base64.b64encode(data).decode(), "options": {"feature_maps": "stages"}}
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    before = rss_kb(proc.pid, "VmRSS")
    t0 = time.perf_counter()
    r = requests.post(f"{url}/evaluate", json=body, timeout=600)
    seconds = time.perf_counter() - t0
    return r.status_code, (rss_kb(proc.pid, "VmHWM") - before) / 1024, seconds


def _ratio(baseline: float, candidate: float, floor: float = 1.0) -> str:
    """baseline/candidate, with the candidate floored at `floor` (a 0 MB growth is "at least")."""
    if candidate < floor:
        return f">= {baseline / floor:.0f}x"
    return f"{baseline / candidate:.1f}x"


def decode_only(data: dict[str, bytes]) -> None:
    """The decoders alone, in this process: peak traced (numpy) memory of one decode each."""
    import tracemalloc

    from core.audio import AudioError, decode_audio

    print(f"\n{'decode only (tracemalloc)':28} {'baseline':>12} {'candidate':>12} ratio")
    for clip, payload in data.items():
        peaks = []
        for decoder in (whole_file_decode, decode_audio):
            tracemalloc.start()
            try:
                decoder(payload)
            except AudioError:
                pass
            peaks.append(tracemalloc.get_traced_memory()[1] / MB)
            tracemalloc.stop()
        print(f"{clip:28} {peaks[0]:>9.1f} MB {peaks[1]:>9.1f} MB {_ratio(*peaks, floor=0.1)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port)

    from bench.machine import describe

    print(describe())
    data = clips()
    servers = {name: start(name) for name in ("old", "new")}
    try:
        for proc, url in servers.values():  # warm-up: first-request allocations are not charged
            one_request(proc, url, data["5 s 44.1 kHz mono WAV"])
        print(f"\n{'clip':28} {'KB':>6} | {'baseline: status, peak RSS growth, s':>38} | "
              f"{'candidate: status, peak RSS growth, s':>38} | growth ratio")
        for clip, payload in data.items():
            results = {"old": [], "new": []}
            for _ in range(args.repeats):
                for name, (proc, url) in servers.items():
                    results[name].append(one_request(proc, url, payload))
            cells, growth = [], {}
            for name in ("old", "new"):
                statuses = sorted({r[0] for r in results[name]})
                growth[name] = statistics.median(r[1] for r in results[name])
                seconds = statistics.median(r[2] for r in results[name])
                cells.append(f"{'/'.join(map(str, statuses)):>7} {growth[name]:>9.1f} MB {seconds:>8.2f} s")
            print(f"{clip:28} {len(payload) // 1024:>6} | {cells[0]:>38} | {cells[1]:>38} | "
                  f"{_ratio(growth['old'], growth['new'])}")
        print("\nPeak RSS growth: VmHWM after the request minus VmRSS before it (high-water mark reset "
              "before each request); median of", args.repeats)
        decode_only(data)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
