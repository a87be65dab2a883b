"""Live classification for a caller that receives audio frames: the Live page's session.

    LiveSession     audio frames in from any thread (WebRTC's), a backend stream in a worker thread,
                    a consistent snapshot out for the page to draw every hop, events (core.live_events)

Torch-free: the stream comes from a Backend (`backend.stream(start)`: in
process for LocalBackend, the websocket for HttpBackend).

Memory per session is bounded whatever the stream's length: at most
`MAX_QUEUED_SECONDS` of frames waiting (older frames are dropped and
counted when the analysis falls behind), `history_s` of window results,
`spectrogram_s` of spectrogram columns and `MAX_EVENTS` events.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from core.live_events import Event, EventDetector, events_csv
from core.stream_protocol import StreamError, WindowResult
from core.streaming import WindowStream

log = logging.getLogger("audio_cnn.live")

MAX_QUEUED_SECONDS = 5.0   # a backlog beyond one window: drop the oldest (latency over completeness)
MAX_EVENTS = 1000
SEND_SECONDS = 0.5   # frames are gathered into messages of about this much audio


# -- a live session -------------------------------------------------------------------------------


@dataclass
class LiveSnapshot:
    """What the page draws: a consistent copy, safe to read while the session goes on."""

    running: bool
    ready: dict | None
    windows: list[WindowResult]           # newest last, without spectrogram blocks
    spectrogram: np.ndarray | None        # (n_mels, columns) dB, the last spectrogram_s seconds
    spectrogram_start: float              # stream time of its first column
    seconds_per_column: float
    events: list[Event]                   # closed events, oldest first
    open_events: list[Event]
    error: str | None
    received_s: float                     # audio sent to the analysis
    dropped_s: float                      # audio dropped because the analysis fell behind
    started_at: datetime | None

    @property
    def current(self) -> WindowResult | None:
        return self.windows[-1] if self.windows else None


@dataclass
class _Run:
    """One start-to-stop of the microphone."""

    fmt: tuple[str, int, int]
    started_at: datetime
    detector: EventDetector
    stream: WindowStream | None = None
    windows: deque = field(default_factory=deque)
    columns: deque = field(default_factory=deque)   # (start s, (n_mels, k) block)
    seconds_per_column: float = 512 / 44100
    received_s: float = 0.0


class LiveSession:
    """Frames in from any thread (`push`, never blocks), analysis in one worker thread, `snapshot()` out.

    A run starts with the first frame after a stop and lasts until `stop()`
    or `idle_s` without frames; each run opens one stream with
    `open_stream(start)` (Backend.stream). Events accumulate across runs.
    """

    def __init__(self, open_stream: Callable[[dict], WindowStream], top_k: int = 3,
                 thresholds: dict[str, float] | None = None, history_s: float = 60.0,
                 spectrogram_s: float = 20.0, idle_s: float = 5.0):
        self.open_stream, self.top_k = open_stream, top_k
        self.thresholds = dict(thresholds or {})
        self.history_s, self.spectrogram_s, self.idle_s = history_s, spectrogram_s, idle_s
        self._queue: queue.Queue[tuple[bytes, tuple[str, int, int]] | None] = queue.Queue()
        self._queued_s = 0.0
        self._lock = threading.Lock()
        self._run: _Run | None = None      # the run in progress
        self._shown: _Run | None = None    # what the page shows: the current run, else the last one
        self._ready: dict | None = None
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._error: str | None = None
        self._dropped_s = 0.0
        self._worker: threading.Thread | None = None

    # -- called from the audio thread ------------------------------------------------------------

    def push(self, pcm: bytes, sample_rate: int, channels: int, fmt: str = "s16le") -> None:
        """Queue interleaved PCM for analysis; drops the oldest queued audio beyond MAX_QUEUED_SECONDS."""
        seconds = _pcm_seconds(len(pcm), (fmt, sample_rate, channels))
        with self._lock:
            self._queued_s += seconds
            while self._queued_s > MAX_QUEUED_SECONDS:
                try:
                    old = self._queue.get_nowait()
                except queue.Empty:
                    break
                if old is not None:
                    lost = _pcm_seconds(len(old[0]), old[1])
                    self._queued_s -= lost
                    self._dropped_s += lost
            self._queue.put((pcm, (fmt, sample_rate, channels)))
            if self._worker is None:  # decided under the lock, as the worker's exit is: no lost wake-up
                self._worker = threading.Thread(target=self._work, name="live-session", daemon=True)
                self._worker.start()

    def push_frame(self, frame: Any) -> None:
        """An av.AudioFrame (what streamlit-webrtc delivers: usually 20 ms of s16 at 48 kHz) -> push."""
        samples = frame.to_ndarray()
        channels = len(frame.layout.channels)
        samples = samples.T if frame.format.is_planar else samples.reshape(-1, channels)
        fmt = "s16le" if samples.dtype == np.int16 else "f32le"
        dtype = "<i2" if fmt == "s16le" else "<f4"
        self.push(np.ascontiguousarray(samples, dtype=dtype).tobytes(), frame.sample_rate, channels, fmt)

    # -- called from the page ---------------------------------------------------------------------

    def stop(self) -> None:
        """End the current run (its last window is analysed); the next `push` starts a new one."""
        with self._lock:
            if self._worker is not None:
                self._queue.put(None)

    def close(self, timeout: float = 60.0) -> None:
        """Stop and wait for the worker to finish the last window (for callers that may wait)."""
        self.stop()
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """New per-class thresholds, from the next window on."""
        with self._lock:
            self.thresholds = dict(thresholds)
            if self._run is not None:
                self._run.detector.thresholds = dict(thresholds)

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            run = self._shown
            spec, spec_start = self._spectrogram(run)
            return LiveSnapshot(
                running=self._run is not None, ready=self._ready,
                windows=list(run.windows) if run else [],
                spectrogram=spec, spectrogram_start=spec_start,
                seconds_per_column=run.seconds_per_column if run else 512 / 44100,
                events=list(self._events), open_events=list(self._run.detector.open.values()) if self._run else [],
                error=self._error, received_s=run.received_s if run else 0.0, dropped_s=self._dropped_s,
                started_at=run.started_at if run else None)

    def csv(self) -> str:
        with self._lock:
            return events_csv(list(self._events))

    # -- the worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        last_audio = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._run is not None and time.monotonic() - last_audio > self.idle_s:
                    self._end_run()
                elif self._run is not None:
                    self._collect()  # a remote stream's windows arrive after the audio that completed them
                with self._lock:
                    if self._run is None and self._queue.empty():
                        self._worker = None  # nothing to do: the next `push` starts a new worker
                        return
                continue
            if item is None:
                self._end_run()
                continue
            last_audio = time.monotonic()
            pcm, fmt = self._gather(item)
            try:
                self._send(pcm, fmt)
            except StreamError as err:
                self._fail(err)

    def _gather(self, first: tuple[bytes, tuple]) -> tuple[bytes, tuple]:
        """The first queued frame plus those after it, up to SEND_SECONDS of audio of the same format."""
        parts, fmt = [first[0]], first[1]
        seconds = _pcm_seconds(len(first[0]), fmt)
        while seconds < SEND_SECONDS:
            try:
                item = self._queue.queue[0]  # peek: a stop or another format must wait its turn
            except IndexError:
                break
            if item is None or item[1] != fmt:
                break
            self._queue.get_nowait()
            parts.append(item[0])
            seconds += _pcm_seconds(len(item[0]), fmt)
        with self._lock:
            self._queued_s = max(0.0, self._queued_s - seconds)
        return b"".join(parts), fmt

    def _send(self, pcm: bytes, fmt: tuple[str, int, int]) -> None:
        if self._run is not None and self._run.fmt != fmt:
            self._end_run()  # the browser changed device or rate: a new stream for the new format
        if self._run is None:
            self._start_run(fmt)
        run = self._run
        run.stream.send(pcm)
        results = run.stream.receive()
        with self._lock:
            run.received_s += _pcm_seconds(len(pcm), fmt)
        self._add(run, results)

    def _collect(self) -> None:
        try:
            self._add(self._run, self._run.stream.receive())
        except StreamError as err:
            self._fail(err)

    def _start_run(self, fmt: tuple[str, int, int]) -> None:
        start = {"format": fmt[0], "sample_rate": fmt[1], "channels": fmt[2], "top_k": self.top_k,
                 "spectrogram": "new", "watch": sorted(self.thresholds)}
        stream = self.open_stream(start)
        with self._lock:
            self._error = None
            self._ready = stream.ready
            now = datetime.now()
            self._run = self._shown = _Run(fmt, now, EventDetector(self.thresholds, now), stream)

    def _end_run(self) -> None:
        run = self._run
        if run is None:
            return
        try:
            self._add(run, run.stream.finish())
        except StreamError as err:
            log.info("live stream ended with %s", err)
        finally:
            run.stream.close()
        with self._lock:
            self._events.extend(run.detector.close())
            self._run = None

    def _fail(self, err: StreamError) -> None:
        run = self._run
        with self._lock:
            self._error = str(err)
            if run is not None:
                self._events.extend(run.detector.close())
            self._run = None
        if run is not None:
            run.stream.close()

    def _add(self, run: _Run, results: list[WindowResult]) -> None:
        with self._lock:
            for r in results:
                run.seconds_per_column = r.seconds_per_column
                if r.spectrogram is not None and r.spectrogram.shape[1]:
                    run.columns.append((r.spectrogram_start, r.spectrogram))
                run.windows.append(replace(r, spectrogram=None))
                self._events.extend(run.detector.add(r))
            if run.windows:
                newest = run.windows[-1].end
                while run.windows and run.windows[0].end < newest - self.history_s:
                    run.windows.popleft()
                while len(run.columns) > 1 and run.columns[1][0] < newest - self.spectrogram_s:
                    run.columns.popleft()

    def _spectrogram(self, run: _Run | None) -> tuple[np.ndarray | None, float]:
        if run is None or not run.columns:
            return None, 0.0
        spec = np.concatenate([block for _, block in run.columns], axis=1)
        drop = max(0, spec.shape[1] - int(self.spectrogram_s / run.seconds_per_column))
        return spec[:, drop:], run.columns[0][0] + drop * run.seconds_per_column


def _pcm_seconds(nbytes: int, fmt: tuple[str, int, int]) -> float:
    """Seconds of audio in `nbytes` of PCM of format (encoding, rate, channels)."""
    encoding, rate, channels = fmt
    return nbytes / (2 if encoding == "s16le" else 4) / channels / rate
