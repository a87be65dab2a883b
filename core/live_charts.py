"""Figures of a live stream: window results -> Altair charts. Pure functions (no Streamlit, no torch).

    timeline_chart      the top-k classes of the recent windows: one row per class, one cell per hop,
                        darker for higher confidence (the newest window at the right)
    spectrogram_image   (n_mels, columns) dB -> an RGB image (magma), low frequencies at the bottom
    events_frame        events (closed and ongoing) -> a table for st.dataframe

The live spectrogram is an image, not a Vega chart: redrawn every hop, a
heatmap of 128 x hundreds of cells keeps a browser busy re-laying out SVG,
while one small PNG a second costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from core.clip_charts import AXIS_WIDTH
from core.labels import category_of, pretty


def timeline_chart(windows: Sequence[Any], hop: float, trained: bool = True, span_s: float = 60.0) -> alt.Chart:
    """`windows` (WindowResult, oldest first) -> a class x time grid over the last `span_s` seconds.

    Each window fills the hop that ended it, [end - hop, end) s of stream
    time, in the rows of its top-k classes.
    """
    newest = windows[-1].end if windows else 0.0
    rows = [{"t0": w.end - hop, "t1": w.end, "class": pretty(p.label), "category": category_of(p.label),
             "confidence": p.confidence, "rank": rank, "window": f"{w.start:.1f}-{w.end:.1f} s"}
            for w in windows if w.end > newest - span_s for rank, p in enumerate(w.predictions, 1)]
    df = pd.DataFrame(rows, columns=["t0", "t1", "class", "category", "confidence", "rank", "window"])
    title = "Top classes per window" + ("" if trained else " (untrained model: meaningless)")
    domain = [max(0.0, newest - span_s), max(newest, span_s)]
    return alt.Chart(df, title=title).mark_rect().encode(
        x=alt.X("t0:Q", title="Stream time (s)", scale=alt.Scale(domain=domain, nice=False)), x2="t1:Q",
        y=alt.Y("class:N", title=None, sort=alt.EncodingSortField("confidence", op="max", order="descending"),
                axis=alt.Axis(minExtent=AXIS_WIDTH)),
        color=alt.Color("confidence:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="confidence"),
        tooltip=["window:N", "class:N", "category:N", alt.Tooltip("confidence:Q", format=".1%"), "rank:Q"],
    ).properties(height=alt.Step(18))  # one row per class; a fixed height collapses in Streamlit


# Matplotlib's magma at 9 evenly spaced points (the Spectrogram page's default Vega scheme).
_MAGMA = np.array([(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
                   (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)], dtype=np.float32)


def spectrogram_image(spec: np.ndarray, db_range: tuple[float, float] | None = None,
                      row_scale: int = 2) -> np.ndarray:
    """(n_mels, columns) dB -> (n_mels * row_scale, columns, 3) uint8 RGB, highest mel band at the top.

    Colours span `db_range` (default: the 2nd to the 99th percentile of
    `spec`, so one loud click does not wash out the rest).
    """
    spec = np.asarray(spec, dtype=np.float32)
    lo, hi = db_range or (float(np.percentile(spec, 2)), float(np.percentile(spec, 99)))
    level = np.clip((spec[::-1] - lo) / max(hi - lo, 1e-6), 0, 1) * (len(_MAGMA) - 1)
    i = np.minimum(level.astype(np.int64), len(_MAGMA) - 2)
    frac = (level - i)[..., None]
    rgb = _MAGMA[i] * (1 - frac) + _MAGMA[i + 1] * frac
    return np.repeat(rgb.round().astype(np.uint8), row_scale, axis=0)


def events_frame(closed: Sequence[Any], ongoing: Sequence[Any] = ()) -> pd.DataFrame:
    """Events (core.live_events.Event) -> one row each, newest first; ongoing ones say so."""
    rows = [{**e.row(), "class": pretty(e.label), "status": "ongoing"} for e in ongoing]
    rows += [{**e.row(), "class": pretty(e.label), "status": "ended"} for e in reversed(closed)]
    return pd.DataFrame(rows, columns=["time", "class", "peak", "threshold", "from_s", "to_s", "windows", "status"])
