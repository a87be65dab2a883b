"""Events: per-class thresholds turn a stream's windows into events ("glass breaking at 12:03:41, 0.91").

    EventDetector   windows in, closed events out (consecutive windows over a threshold are one event)
    Event           one event: class, peak, where in the stream the sound lies, wall-clock time
    events_csv      events -> CSV text (the Live page's download; columns EVENT_COLUMNS)

Used by the Live page (core.live.LiveSession) and the CLI (core.stream_client --threshold).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from core.labels import category_of, pretty
from core.stream_protocol import WindowResult


@dataclass(frozen=True)
class Event:
    """A class at or above its threshold over consecutive windows. Times are seconds of stream audio.

    The sound lies in [t_from, t_to]: where all its windows overlap, else (a
    sound longer than a window) from the first window's start to the last one's end.
    """

    label: str
    threshold: float
    peak: float
    peak_window_start: float
    first_start: float
    first_end: float
    last_start: float
    last_end: float
    windows: int
    started_at: datetime

    @property
    def t_from(self) -> float:
        return self.last_start if self.last_start < self.first_end else self.first_start

    @property
    def t_to(self) -> float:
        return self.first_end if self.last_start < self.first_end else self.last_end

    @property
    def time(self) -> datetime:
        """Wall-clock time of `t_from`."""
        return self.started_at + timedelta(seconds=self.t_from)

    def describe(self) -> str:
        return (f"{pretty(self.label)} at {self.time:%H:%M:%S}, {self.peak:.2f} "
                f"(stream {self.t_from:.1f}-{self.t_to:.1f} s, {self.windows} window(s))")

    def row(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(timespec="seconds"), "class": self.label,
                "category": category_of(self.label), "peak": round(self.peak, 4), "threshold": self.threshold,
                "from_s": round(self.t_from, 3), "to_s": round(self.t_to, 3), "windows": self.windows}


EVENT_COLUMNS = ("time", "class", "category", "peak", "threshold", "from_s", "to_s", "windows")


class EventDetector:
    """Windows in, events out. An event opens when a class reaches its threshold and closes at the
    first window below it (or at `close()`, the end of the stream).

    A class's confidence is its `watched` probability when the stream reports
    it, else its top-k confidence, else 0 (then it is below every top-k class).
    """

    def __init__(self, thresholds: dict[str, float], started_at: datetime):
        self.thresholds, self.started_at = dict(thresholds), started_at
        self.open: dict[str, Event] = {}

    def add(self, w: WindowResult) -> list[Event]:
        """Feed one window; returns the events it closed."""
        top = {p.label: p.confidence for p in w.predictions}
        closed = []
        for label, threshold in self.thresholds.items():
            confidence = w.watched.get(label, top.get(label, 0.0))
            event = self.open.get(label)
            if confidence >= threshold:
                if event is None:
                    self.open[label] = Event(label, threshold, confidence, w.start, w.start, w.end, w.start, w.end,
                                             1, self.started_at)
                else:
                    peak = confidence > event.peak
                    self.open[label] = replace(event, last_start=w.start, last_end=w.end, windows=event.windows + 1,
                                               peak=max(event.peak, confidence),
                                               peak_window_start=w.start if peak else event.peak_window_start)
            elif event is not None:
                closed.append(self.open.pop(label))
        for label in [label for label in self.open if label not in self.thresholds]:
            closed.append(self.open.pop(label))  # its threshold was removed
        return closed

    def close(self) -> list[Event]:
        """End of stream: every open event closes."""
        closed, self.open = list(self.open.values()), {}
        return closed


def events_csv(events: list[Event]) -> str:
    """Events -> CSV text with a header row (EVENT_COLUMNS)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EVENT_COLUMNS)
    writer.writeheader()
    writer.writerows(e.row() for e in events)
    return out.getvalue()
