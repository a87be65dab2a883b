"""Figures of one analysed clip: analysis data -> Altair charts. Pure functions.

Nothing here imports Streamlit or torch; pages pass in what a Backend
returned and place the figure. Inputs are plain arrays and dicts:

    predictions_chart     top-k objects with .label/.confidence -> bar chart, coloured by ESC-50 category
    waveform_chart        peak envelope (min, max interleaved)   -> min/max band over time in s
    spectrogram_chart     (n_mels, frames) dB + mel centres Hz   -> heatmap, time s x frequency Hz (mel-spaced axis)
    timeline_chart        per-window top-k of a long clip        -> one bar per 5 s window
    feature_map_grid      {name: (h, w)} channel means           -> grid of heatmaps with hover stats
    channel_grid          (k, h, w) single channels              -> grid of heatmaps

The network itself (3-D view, layer table) is core/network_charts.py; training
runs are core/run_charts.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from core.labels import CATEGORIES, category_of, is_esc50, pretty

SCHEMES = ("viridis", "magma", "inferno", "plasma", "cividis", "blueorange", "greys")
_CATEGORY_SCALE = alt.Scale(domain=list(CATEGORIES), scheme="tableau10")
AXIS_WIDTH = 64  # fixed y-axis width, so charts stacked on a page share one time axis
_HZ_LABEL = "datum.value >= 1000 ? format(datum.value / 1000, '~g') + ' kHz' : format(datum.value, '~g') + ' Hz'"


def _time_axis(duration: float, title: str | None = "Time (s)") -> alt.X:
    return alt.X("t0:Q", title=title, scale=alt.Scale(domain=[0, max(duration, 1e-3)], nice=False))


def predictions_chart(predictions: Sequence[Any], trained: bool = True) -> alt.Chart:
    """Top-k bar chart: one bar per prediction (confidence 0-1, in the label too), coloured by ESC-50 category.

    An untrained model's chart says so in its title: its bars are noise.
    """
    df = pd.DataFrame({
        "label": [f"{pretty(p.label)}  {p.confidence:.1%}" for p in predictions],
        "confidence": [float(p.confidence) for p in predictions],
        "category": [category_of(p.label) for p in predictions],
    })
    title = "Top predictions" if trained else "Top predictions: UNTRAINED model, these are meaningless"
    return alt.Chart(df, title=title).mark_bar(cornerRadiusEnd=3).encode(
        x=alt.X("confidence:Q", title="Confidence", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=220)),
        color=_category_colour([p.label for p in predictions],
                               legend=alt.Legend(orient="bottom", columns=2, labelLimit=260)),
        tooltip=[alt.Tooltip("label:N", title="class"), alt.Tooltip("confidence:Q", format=".1%"),
                 alt.Tooltip("category:N")],
    ).properties(height=alt.Step(34))  # a height per row: a fixed total would be squeezed by the legend


def _category_colour(labels: Sequence[str], legend) -> alt.Color | alt.ColorValue:
    """ESC-50's category colours when any label is an ESC-50 class; one plain colour for your own classes."""
    if not any(is_esc50(label) for label in labels):
        return alt.value("#4c78a8")
    return alt.Color("category:N", title="ESC-50 category", scale=_CATEGORY_SCALE, legend=legend)


def envelope_frame(envelope: np.ndarray, duration: float) -> pd.DataFrame:
    """Envelope -> DataFrame(t0, t1 s, lo, hi) with one row per bucket.

    The backend always sends (min, max) pairs of equal time buckets spanning
    the clip, interleaved (`core.results.waveform_envelope`).
    """
    values = np.asarray(envelope, dtype=np.float32)
    lo, hi = values[0::2], values[1::2]
    edges = np.linspace(0.0, duration, len(lo) + 1)
    return pd.DataFrame({"t0": edges[:-1], "t1": edges[1:], "lo": np.minimum(lo, hi), "hi": np.maximum(lo, hi)})


def waveform_chart(envelope: np.ndarray, duration: float, height: int = 110) -> alt.Chart:
    """The clip's amplitude over time: a band between each bucket's min and max (peaks never aliased)."""
    df = envelope_frame(envelope, duration)
    return alt.Chart(df).mark_area(color="#4c78a8", opacity=0.9, interpolate="step-after").encode(
        x=_time_axis(duration, title=None),
        y=alt.Y("lo:Q", title="Amplitude", scale=alt.Scale(domain=[-1, 1]),
                axis=alt.Axis(minExtent=AXIS_WIDTH, maxExtent=AXIS_WIDTH, values=[-1, 0, 1])),
        y2="hi:Q",
        tooltip=[alt.Tooltip("t0:Q", title="time (s)", format=".3f"),
                 alt.Tooltip("lo:Q", title="min", format=".3f"), alt.Tooltip("hi:Q", title="max", format=".3f")],
    ).properties(height=height)


def mel_band_edges(mel_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre frequencies (n_mels,) Hz -> (lower, upper) Hz of each row, halfway between neighbours in mel.

    Uses the HTK mel formula, 2595 log10(1 + f/700), which the signal chain's filterbank uses too.
    """
    m = 2595.0 * np.log10(1.0 + np.asarray(mel_hz, dtype=np.float64) / 700.0)
    half = np.diff(m) / 2 if len(m) > 1 else np.array([1.0])
    edges = np.concatenate([[max(m[0] - half[0], 0.0)], m[:-1] + half, [m[-1] + half[-1]]])
    hz = 700.0 * (10.0 ** (edges / 2595.0) - 1.0)
    return hz[:-1], hz[1:]


def pool_columns(values: np.ndarray, max_columns: int) -> tuple[np.ndarray, int]:
    """(h, w) -> (h, ceil(w / g)) column means over groups of g columns, with g chosen so <= max_columns remain.

    Display only: the browser then draws at most h * max_columns rectangles
    however long the clip (a 30 s clip has 2584 spectrogram frames).
    """
    values = np.asarray(values, dtype=np.float32)
    h, w = values.shape
    group = max(1, math.ceil(w / max_columns))
    cols = math.ceil(w / group)
    if group == 1:
        return values, 1
    padded = np.full((h, cols * group), np.nan, dtype=np.float32)
    padded[:, :w] = values
    return np.nanmean(padded.reshape(h, cols, group), axis=2), group


def _long_frame(values: np.ndarray, name: str) -> pd.DataFrame:
    """(h, w) -> DataFrame(row, col, name) with one row per cell (int16 indices keep it small)."""
    h, w = values.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.int16), np.arange(w, dtype=np.int16), indexing="ij")
    return pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(), name: values.ravel()})


def spectrogram_chart(spec: np.ndarray, mel_hz: np.ndarray, seconds_per_frame: float, duration: float,
                      scheme: str = "magma", height: int = 340, max_columns: int = 400) -> alt.Chart:
    """Log-mel heatmap: time in s across, frequency in Hz up on a mel-spaced axis, colour in dB.

    `spec` (n_mels, frames) dB, `mel_hz` (n_mels,) centre of each row in Hz,
    `seconds_per_frame` = hop / sample rate. The y scale is symlog with
    constant 700, which is exactly the HTK mel scale (2595 log10(1 + f/700))
    up to a factor: rows come out evenly spaced, as the model sees them,
    while the axis reads in Hz. Only (row, col, dB) travel per cell; band
    edges come from a 128-row lookup table and times from the column index.
    """
    frames = np.asarray(spec).shape[1]
    pooled, group = pool_columns(spec, max_columns)
    df = _long_frame(pooled, "db")
    f_lo, f_hi = mel_band_edges(mel_hz)
    bands = pd.DataFrame({"row": np.arange(len(mel_hz), dtype=np.int16), "f0": f_lo, "f1": f_hi,
                          "hz": np.asarray(mel_hz, dtype=np.float64)})
    col_s, end_s = group * seconds_per_frame, frames * seconds_per_frame
    top = float(f_hi[-1])
    # Each cell reaches halfway into the next row and column; later cells are drawn on top, so
    # the picture is exact and the hairline seams between adjacent rectangles disappear.
    bands["f1"] = np.append(f_hi[:-1] + (f_hi[1:] - f_lo[1:]) / 2, top)
    ticks = [t for t in (0, 500, 1000, 2000, 4000, 8000, 16000) if t <= top]
    return alt.Chart(df).mark_rect(clip=True).encode(
        x=_time_axis(duration), x2="t1:Q",
        y=alt.Y("f0:Q", title="Frequency (Hz, mel scale)",
                scale=alt.Scale(type="symlog", constant=700, domain=[0, top], nice=False),
                axis=alt.Axis(values=ticks, labelExpr=_HZ_LABEL, minExtent=AXIS_WIDTH, maxExtent=AXIS_WIDTH)),
        y2="f1:Q",
        color=alt.Color("db:Q", title="dB", scale=alt.Scale(scheme=scheme),
                        legend=alt.Legend(orient="bottom", gradientLength=300)),
        tooltip=[alt.Tooltip("t0:Q", title="time (s)", format=".2f"),
                 alt.Tooltip("hz:Q", title="mel bin centre (Hz)", format=",.0f"),
                 alt.Tooltip("db:Q", title="dB", format=".1f")],
    ).transform_lookup(
        lookup="row", from_=alt.LookupData(bands, "row", ["f0", "f1", "hz"]),
    ).transform_calculate(
        t0=f"datum.col * {col_s!r}", t1=f"min((datum.col + 1.5) * {col_s!r}, {end_s!r})",
    ).properties(height=height)


def timeline_chart(windows: Sequence[Any], duration: float, trained: bool = True) -> alt.Chart:
    """One bar per analysed 5 s window of a long clip, labelled with its top class (windows overlap)."""
    df = pd.DataFrame([{
        "window": f"{w.start:.1f}-{w.end:.1f} s", "t0": w.start, "t1": w.end,
        "top": pretty(w.predictions[0].label), "category": category_of(w.predictions[0].label),
        "confidence": w.predictions[0].confidence,
        "top_k": ", ".join(f"{pretty(p.label)} {p.confidence:.0%}" for p in w.predictions),
    } for w in windows])
    title = "Top class per 5 s window" + ("" if trained else " (untrained model: meaningless)")
    base = alt.Chart(df, title=title).encode(
        y=alt.Y("window:N", sort=None, title=None, axis=alt.Axis(minExtent=AXIS_WIDTH)),
        tooltip=["window:N", alt.Tooltip("top_k:N", title="top-k")],
    )
    bars = base.mark_bar(cornerRadius=3).encode(
        x=_time_axis(duration), x2="t1:Q",
        color=_category_colour([w.predictions[0].label for w in windows], legend=None),
    )
    text = base.mark_text(align="left", dx=6, color="white").encode(
        x="t0:Q", text=alt.Text("label:N"),
    ).transform_calculate(label="datum.top + ' ' + format(datum.confidence, '.0%')")
    return (bars + text).properties(height=alt.Step(30))


def _heatmap(values: np.ndarray, title: str, scheme: str, width: int, height: int, label: str,
             max_columns: int = 128) -> alt.Chart:
    """One (h, w) map as a heatmap; row 0 (lowest frequency) at the bottom, like the spectrogram.

    Long maps are pooled to `max_columns` columns; the hover shows the true shape.

    Only (row, col, value) travel to the browser; the hover statistics are
    computed there (joinaggregate), so a grid of 37 maps stays a few hundred kB.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    h, w_full = values.shape
    pooled, _ = pool_columns(values, max_columns)  # long clips: stats below are of the pooled map
    w = pooled.shape[1]
    df = _long_frame(pooled, "value")
    return alt.Chart(df, title=alt.TitleParams(title, fontSize=11)).mark_rect(clip=True).encode(
        x=alt.X("col:Q", axis=None, scale=alt.Scale(domain=[0, w], nice=False)), x2="col2:Q",
        y=alt.Y("row:Q", axis=None, scale=alt.Scale(domain=[0, h], nice=False)), y2="row2:Q",
        color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), legend=None),
        tooltip=[alt.Tooltip("layer:N"), alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("min:Q", format=".3f"), alt.Tooltip("max:Q", format=".3f"),
                 alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("shape:N"),
                 alt.Tooltip("row:Q"), alt.Tooltip("col:Q")],
    ).transform_joinaggregate(
        min="min(value)", max="max(value)", mean="mean(value)",
    ).transform_calculate(
        # cells overlap their neighbours by half a cell: no seams (see spectrogram_chart)
        col2="datum.col + 1.5", row2="datum.row + 1.5",
        layer=json.dumps(label), shape=json.dumps(f"{h} x {w_full}"),
    ).properties(width=width, height=height)


def feature_map_grid(maps: Mapping[str, np.ndarray], scheme: str = "viridis", columns: int = 4,
                     width: int = 200, height: int = 64) -> alt.ConcatChart:
    """Channel-mean maps {name: (h, w)} -> a grid of heatmaps, one colour scale per map, hover stats."""
    charts = [_heatmap(v, name, scheme, width, height, name) for name, v in maps.items()]
    return alt.concat(*charts, columns=columns).resolve_scale(color="independent")


def channel_grid(layer: str, channels: Sequence[int], activation: Sequence[float], maps: np.ndarray,
                 scheme: str = "viridis", columns: int = 4, width: int = 200, height: int = 64) -> alt.ConcatChart:
    """A layer's strongest single channels, maps (k, h, w) strongest first, titled by channel and mean."""
    charts = [
        _heatmap(m, f"channel {c} (mean {a:.2f})", scheme, width, height, f"{layer} channel {c}")
        for c, a, m in zip(channels, activation, maps, strict=True)
    ]
    return alt.concat(*charts, columns=columns).resolve_scale(color="independent")
