"""The /stream protocol: its messages and limits, as both ends (server and client) read them.

    StreamStart / parse_start   the first message, validated; BadStartError says what is wrong
    StreamError and subclasses  every refusal, with a `code` and the websocket close code the server
                                sends (4400 + the HTTP status it resembles)
    WindowResult                one analysed window; window_to_wire / window_from_wire

The protocol itself is described in core/streaming.py and the README ("Live").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.audio import MIN_SOURCE_RATE, SAMPLE_RATE
from core.results import Prediction
from core.schema import decode_array, encode_array

MAX_STREAM_RATE = 192_000   # the highest rate a live source (an audio interface) sends
MAX_CHUNK_SECONDS = 1.0     # one binary message holds at most this much audio


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


class ModelBusyStreamError(StreamError):
    """The model did not answer a window in time (core.microbatcher.ForwardTimeout)."""

    code, close_code = "model_busy", 4504


ERRORS_BY_CLOSE_CODE = {cls.close_code: cls for cls in (
    BadFrameError, UnauthorizedStreamError, IdleStreamError, ChunkTooLargeError, BadStartError,
    TooFastError, TooManyStreamsError, ModelBusyStreamError)}


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
