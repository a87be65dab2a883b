"""Live streams: raw PCM chunks in, one analysis per window out (the core of `/stream`).

The protocol (README "Live" has a runnable example):

    client: {"type": "start", "format": "s16le" | "f32le", "sample_rate": 48000, "channels": 2,
             "top_k": 3, "hop": 1.0, "spectrogram": "new" | "window" | "none", "watch": ["siren"]}
    server: {"type": "ready", "window", "hop", "sample_rate": 44100, "model", "limits", ...}
    client: binary messages of interleaved little-endian PCM, whole frames, at most 1 s each
    server: {"type": "window", "index", "start", "end", "predictions", "watched", "spectrogram", "timing_ms"}
            for every window, as soon as its last sample has arrived
    client: {"type": "stop"}   (optional) the last window ends where the stream ends, then
    server: {"type": "end", "windows", "seconds"} and a normal close (1000)

Windows are those of `/evaluate` on the same audio: `window` s long every
`hop` s (core.results.window_starts), a last one ending at the stream's end
on "stop", and one window of everything for a stream shorter than a window.
Times are seconds of audio since the first sample. `spectrogram` is the
window's log-mel block, f16 base64 like /evaluate's "f16" encoding
(core.schema.encode_array): "window" sends all of its columns, "new" (the
default) only the columns after those already sent, for a scrolling display.

Pieces, all torch-free (the Predictor's methods come in as arguments):

    PcmDecoder      chunk bytes -> mono float32 at 44.1 kHz; channels are averaged and the
                    rate converted by soxr's streaming resampler, which gives exactly the
                    samples core.audio's whole-clip resampling gives
    WindowBuffer    a ring buffer of one window: samples in, (start, window) out every hop
    StreamAnalyzer  the two above and a classifier: feed(bytes) -> [WindowResult], finish()
    WindowStream    a stream as its caller sees it; LocalStream is the in-process one
                    (LocalBackend.stream), core.stream_client.StreamClient the remote one

The messages, limits and errors (StreamStart, StreamError and its close
codes, WindowResult and its wire form) are core/stream_protocol.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import soxr

from core.audio import SAMPLE_RATE
from core.results import top_k_predictions
from core.schema import model_info_to_wire
from core.stream_protocol import (
    MAX_CHUNK_SECONDS,
    BadFrameError,
    ChunkTooLargeError,
    StreamStart,
    WindowResult,
    parse_start,
)

DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}

# (batch, samples) float32 at 44.1 kHz -> spectrograms (batch, n_mels, frames), probabilities (batch, classes)
Classifier = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


# -- PCM -> mono 44.1 kHz ----------------------------------------------------------------------------


class PcmDecoder:
    """Chunks of interleaved PCM -> mono float32 at 44.1 kHz, carrying the resampler's state across chunks.

    16-bit samples are scaled by 1/32768 and channels averaged in float32,
    exactly as soundfile and core.audio do for a file.
    """

    def __init__(self, fmt: str, sample_rate: int, channels: int):
        self.dtype, self.rate, self.channels = DTYPES[fmt], sample_rate, channels
        self.frame_bytes = self.dtype.itemsize * channels
        self.max_chunk_bytes = int(MAX_CHUNK_SECONDS * sample_rate) * self.frame_bytes
        self._resampler = (None if sample_rate == SAMPLE_RATE else
                           soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"))

    def seconds(self, nbytes: int) -> float:
        """Seconds of audio in `nbytes` of this PCM."""
        return nbytes / self.frame_bytes / self.rate

    def decode(self, chunk: bytes) -> np.ndarray:
        """One binary message -> (n,) float32 at 44.1 kHz (n may lag the input by the resampler's delay)."""
        if len(chunk) > self.max_chunk_bytes:
            raise ChunkTooLargeError(
                f"A message holds {self.seconds(len(chunk)):.2f} s of audio; the limit is "
                f"{MAX_CHUNK_SECONDS:g} s ({self.max_chunk_bytes:,} bytes at this format). Send smaller chunks.")
        if len(chunk) % self.frame_bytes:
            raise BadFrameError(
                f"A message of {len(chunk):,} bytes is not a whole number of {self.frame_bytes}-byte frames "
                f"({self.channels} channel(s) of {self.dtype.itemsize * 8}-bit samples, as the start message said).")
        frames = np.frombuffer(chunk, self.dtype).reshape(-1, self.channels)
        if self.dtype.kind == "i":
            frames = frames.astype(np.float32) / np.float32(32768)
        elif not np.isfinite(frames).all():
            raise BadFrameError("The audio contains NaN or infinite samples; a real recording has none.")
        mono = frames.mean(axis=1, dtype=np.float32) if self.channels > 1 else frames[:, 0].astype(np.float32)
        return self._resampler.resample_chunk(mono) if self._resampler else mono

    def flush(self) -> np.ndarray:
        """What the resampler still holds at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)


# -- windows ---------------------------------------------------------------------------------------


class WindowBuffer:
    """A ring buffer of one window: push samples, get every window that became complete.

    Memory is one window of float32 (5 s: 882 KB) however long the stream.
    Windows start at 0, hop, 2 hop, ... (samples); `finish` adds the
    /evaluate tail: a window ending at the last sample, or the whole stream
    when it is shorter than one window.
    """

    def __init__(self, size: int, hop: int):
        if not 0 < hop <= size:
            raise ValueError(f"need 0 < hop <= size, got hop {hop}, size {size}")
        self.size, self.hop = size, hop
        self._ring = np.zeros(size, np.float32)
        self.total = 0               # samples pushed so far
        self.next_start = 0          # start of the next window to emit
        self.last_end = 0            # end of the last emitted window

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Append samples; returns [(start sample, window (size,) float32)] for each window now complete."""
        out, pos = [], 0
        while pos < len(samples):
            due = self.next_start + self.size           # the sample count that completes the next window
            take = min(len(samples) - pos, max(1, due - self.total))
            self._write(samples[pos : pos + take])
            pos += take
            if self.total == due:
                out.append((self.next_start, self._latest(self.size)))
                self.last_end, self.next_start = due, self.next_start + self.hop
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """The tail window, if the stream did not end exactly on an emitted window."""
        if self.total == 0 or self.total == self.last_end:
            return []
        n = min(self.total, self.size)
        return [(self.total - n, self._latest(n))]

    def _write(self, x: np.ndarray) -> None:
        at = self.total % self.size
        first = min(len(x), self.size - at)
        self._ring[at : at + first] = x[:first]
        self._ring[: len(x) - first] = x[first:]
        self.total += len(x)

    def _latest(self, n: int) -> np.ndarray:
        """A copy of the last n samples, oldest first."""
        end = self.total % self.size
        if end >= n:
            return self._ring[end - n : end].copy()
        return np.concatenate([self._ring[self.size - (n - end):], self._ring[:end]])


class StreamAnalyzer:
    """PCM chunks -> analysed windows, for one stream. Not thread-safe: feed one chunk at a time.

    `classify` is Predictor.spectrograms_and_probabilities (through the
    micro-batcher when the server has one, so that streams share passes).
    """

    def __init__(self, start: StreamStart, classify: Classifier, classes: list[str], window_s: float,
                 hop_s: float, hop_length: int = 512):
        self.start = start
        self.classify, self.classes = classify, classes
        self.window_s, self.hop_s = window_s, start.hop or hop_s
        self.decoder = PcmDecoder(start.format, start.sample_rate, start.channels)
        self.buffer = WindowBuffer(round(window_s * SAMPLE_RATE), max(1, round(self.hop_s * SAMPLE_RATE)))
        self.hop_length = hop_length
        self.windows = 0
        self._sent_until = 0     # sample position after the last spectrogram column sent ("new")
        self._watch = [classes.index(c) for c in start.watch]

    @property
    def seconds(self) -> float:
        """Stream audio received so far, in seconds."""
        return self.buffer.total / SAMPLE_RATE

    def feed(self, chunk: bytes) -> list[WindowResult]:
        """One binary message -> the windows it completed (often none, at most chunk / hop + 1)."""
        return self._analyze(self.buffer.push(self.decoder.decode(chunk)))

    def finish(self) -> list[WindowResult]:
        """End of stream: the resampler's tail and the last window (see WindowBuffer.finish)."""
        due = self.buffer.push(self.decoder.flush())
        return self._analyze(due + self.buffer.finish())

    def _analyze(self, due: list[tuple[int, np.ndarray]]) -> list[WindowResult]:
        if not due:
            return []
        t0 = time.perf_counter()
        results = []
        # Windows of equal length (all but a short stream's only one) go through one forward pass.
        for length in sorted({len(w) for _, w in due}, reverse=True):
            group = [(s, w) for s, w in due if len(w) == length]
            specs, probs = self.classify(np.stack([w for _, w in group]))
            ms = (time.perf_counter() - t0) * 1000
            results += [self._result(s, length, spec, p, ms) for (s, _), spec, p in zip(group, specs, probs, strict=True)]
        return sorted(results, key=lambda r: r.start)

    def _result(self, start: int, length: int, spec: np.ndarray, probs: np.ndarray, ms: float) -> WindowResult:
        block, block_start = self._columns(start, spec)
        self.windows += 1
        return WindowResult(
            index=self.windows - 1, start=start / SAMPLE_RATE, end=(start + length) / SAMPLE_RATE,
            predictions=top_k_predictions(probs, self.classes, self.start.top_k),
            watched={self.classes[i]: float(probs[i]) for i in self._watch},
            spectrogram=block, spectrogram_start=block_start / SAMPLE_RATE,
            seconds_per_column=self.hop_length / SAMPLE_RATE, timing_ms={"analysis": ms})

    def _columns(self, start: int, spec: np.ndarray) -> tuple[np.ndarray | None, int]:
        """The window's spectrogram columns to send and the sample position of the first one's centre."""
        mode = self.start.spectrogram
        if mode == "none":
            return None, start
        if mode == "window":
            return spec, start
        # Column i is centred on sample start + i * hop_length: send those past the last one sent.
        first = max(0, -(-(self._sent_until - start) // self.hop_length))
        self._sent_until = max(self._sent_until, start + spec.shape[1] * self.hop_length)
        return spec[:, first:], start + first * self.hop_length


def ready_message(analyzer: StreamAnalyzer, model: dict, max_speed: float | None, idle_s: float | None) -> dict:
    """The server's answer to a good start message: what the stream will get, and its limits."""
    return {"type": "ready", "sample_rate": SAMPLE_RATE, "window": analyzer.window_s, "hop": analyzer.hop_s,
            "top_k": analyzer.start.top_k, "spectrogram": analyzer.start.spectrogram,
            "watch": analyzer.start.watch, "model": model,
            "limits": {"max_chunk_seconds": MAX_CHUNK_SECONDS, "max_chunk_bytes": analyzer.decoder.max_chunk_bytes,
                       "max_speed": max_speed, "idle_seconds": idle_s}}


# -- one interface, two places ------------------------------------------------------------------------


class WindowStream(Protocol):
    """A stream as a caller sees it, in process (LocalStream) or remote (core.stream_client.StreamClient)."""

    ready: dict

    def send(self, pcm: bytes) -> None: ...
    def receive(self, timeout: float = 0.0) -> list[WindowResult]: ...
    def finish(self) -> list[WindowResult]: ...
    def close(self) -> None: ...


class LocalStream:
    """A WindowStream analysed in this process by a Predictor (the dashboard's embedded backend).

    `send` analyses in the caller's thread; no speed or idle limits apply:
    the caller is this process.
    """

    def __init__(self, predictor: Any, start: dict, window_s: float, hop_s: float):
        parsed = parse_start(json.dumps({"type": "start", **start}), predictor.classes, window_s)
        self.analyzer = StreamAnalyzer(parsed, predictor.spectrograms_and_probabilities, predictor.classes,
                                       window_s, hop_s, predictor.feature_config.hop_length)
        self.ready = ready_message(self.analyzer, model_info_to_wire(predictor.info), None, None)
        self._pending: list[WindowResult] = []

    def send(self, pcm: bytes) -> None:
        self._pending += self.analyzer.feed(pcm)

    def receive(self, timeout: float = 0.0) -> list[WindowResult]:
        out, self._pending = self._pending, []
        return out

    def finish(self) -> list[WindowResult]:
        return self.receive() + self.analyzer.finish()

    def close(self) -> None:
        self._pending = []
