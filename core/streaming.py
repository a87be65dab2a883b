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

    StreamStart     the start message, validated; BadStartError says what is wrong
    PcmDecoder      chunk bytes -> mono float32 at 44.1 kHz; channels are averaged and the
                    rate converted by soxr's streaming resampler, which gives exactly the
                    samples core.audio's whole-clip resampling gives
    WindowBuffer    a ring buffer of one window: samples in, (start, window) out every hop
    StreamAnalyzer  the three above and a classifier: feed(bytes) -> [WindowResult], finish()
    LocalStream     the same stream in process (LocalBackend.stream); core.stream_client is the remote one

Every problem is a StreamError subclass with a message for humans, a stable
`code` and the websocket close code the server sends (4400 + the HTTP status
it resembles).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import soxr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.audio import MIN_SOURCE_RATE, SAMPLE_RATE
from core.results import Prediction, top_k_predictions
from core.schema import decode_array, encode_array, model_info_to_wire

MAX_STREAM_RATE = 192_000   # the highest rate a live source (an audio interface) sends
MAX_CHUNK_SECONDS = 1.0     # one binary message holds at most this much audio
DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}

# (batch, samples) float32 at 44.1 kHz -> spectrograms (batch, n_mels, frames), probabilities (batch, classes)
Classifier = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


# -- errors --------------------------------------------------------------------------------------


class StreamError(Exception):
    """A stream that cannot go on; `str(err)` is for humans, `code` for programs, `close_code` for the socket."""

    code = "stream_error"
    close_code = 4400

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code:
            self.code = code


class BadFrameError(StreamError):
    code, close_code = "bad_frame", 4400


class UnauthorizedStreamError(StreamError):
    code, close_code = "unauthorized", 4401


class IdleStreamError(StreamError):
    code, close_code = "idle_timeout", 4408


class ChunkTooLargeError(StreamError):
    code, close_code = "chunk_too_large", 4413


class BadStartError(StreamError):
    code, close_code = "bad_start", 4422


class TooFastError(StreamError):
    code, close_code = "too_fast", 4429


class TooManyStreamsError(StreamError):
    code, close_code = "too_many_streams", 4503


ERRORS_BY_CLOSE_CODE = {cls.close_code: cls for cls in (
    BadFrameError, UnauthorizedStreamError, IdleStreamError, ChunkTooLargeError, BadStartError,
    TooFastError, TooManyStreamsError)}


# -- the start message -----------------------------------------------------------------------------


class StreamStart(BaseModel):
    """What the first message of a stream says (JSON text)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    format: Literal["s16le", "f32le"] = Field(description="16-bit integer or 32-bit float PCM, little-endian.")
    sample_rate: int = Field(ge=MIN_SOURCE_RATE, le=MAX_STREAM_RATE, description="Frames per second of the PCM.")
    channels: int = Field(1, ge=1, le=8, description="Interleaved channels; they are averaged to mono.")
    top_k: int = Field(3, ge=1, le=50, description="Classes per window, best first.")
    hop: float | None = Field(None, ge=0.1, le=30, description="Seconds between windows (default: the server's).")
    spectrogram: Literal["new", "window", "none"] = Field(
        "new", description="Log-mel columns per window: those not sent before, all of the window's, or none.")
    watch: list[str] = Field(default_factory=list, max_length=64,
                             description="Classes whose probability every window reports, whatever their rank.")


def parse_start(text: str | None, classes: list[str], window_s: float) -> StreamStart:
    """The first message's text -> StreamStart; BadStartError naming what is wrong."""
    example = '{"type": "start", "format": "s16le", "sample_rate": 48000, "channels": 1}'
    if text is None:
        raise BadStartError(f"The first message must be a JSON start message (text), such as {example}.")
    try:
        start = StreamStart.model_validate_json(text)
    except ValidationError as err:
        raise BadStartError(f"Bad start message: {_describe(err)} Example: {example}.") from None
    unknown = [c for c in start.watch if c not in classes]
    if unknown:
        raise BadStartError(f"Unknown classes in 'watch': {', '.join(unknown[:5])}. See GET /classes.")
    if start.hop is not None and start.hop > window_s:
        raise BadStartError(f"'hop' ({start.hop:g} s) may not exceed the window ({window_s:g} s).")
    return start


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:4]:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        if e.get("type") == "json_invalid":
            parts.append("it is not valid JSON.")
        elif e.get("type") == "missing":
            parts.append(f"missing field '{loc}'.")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"unknown field '{loc}'.")
        else:
            parts.append(f"{loc or 'message'}: {e.get('msg', 'invalid value')}.")
    return " ".join(parts)


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


@dataclass(frozen=True)
class WindowResult:
    """One analysed window of a stream. Times are seconds of stream audio."""

    index: int
    start: float
    end: float
    predictions: list[Prediction]
    watched: dict[str, float] = field(default_factory=dict)   # class -> probability, for StreamStart.watch
    spectrogram: np.ndarray | None = None                     # (n_mels, k) dB columns, or None
    spectrogram_start: float = 0.0                            # time of the first column's centre
    seconds_per_column: float = 512 / SAMPLE_RATE
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def top(self) -> Prediction:
        return self.predictions[0]


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


# -- the wire ----------------------------------------------------------------------------------------


def _predictions(preds: list[Prediction]) -> list[dict]:
    return [{"class": p.label, "confidence": p.confidence, "category": p.category} for p in preds]


def window_to_wire(r: WindowResult) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "window", "index": r.index, "start": r.start, "end": r.end,
                            "predictions": _predictions(r.predictions), "watched": r.watched,
                            "timing_ms": {k: round(v, 3) for k, v in r.timing_ms.items()}}
    if r.spectrogram is not None:
        body["spectrogram"] = {**encode_array(r.spectrogram, "f16"), "start": r.spectrogram_start,
                               "seconds_per_column": r.seconds_per_column}
    return body


def window_from_wire(d: dict[str, Any]) -> WindowResult:
    spec = d.get("spectrogram")
    return WindowResult(
        index=int(d["index"]), start=float(d["start"]), end=float(d["end"]),
        predictions=[Prediction(p["class"], float(p["confidence"])) for p in d["predictions"]],
        watched={k: float(v) for k, v in d.get("watched", {}).items()},
        spectrogram=decode_array(spec) if spec else None,
        spectrogram_start=float(spec["start"]) if spec else 0.0,
        seconds_per_column=float(spec["seconds_per_column"]) if spec else 512 / SAMPLE_RATE,
        timing_ms={k: float(v) for k, v in d.get("timing_ms", {}).items()})


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
