"""Figures that explain: the saliency over the spectrogram, the per-clip table, a fold's embedding.

Pure functions of data -> Altair charts (no Streamlit, no torch), like core/clip_charts.py:

    saliency_overlay   spectrogram heatmap with the saliency (n_mels, frames) in [0, 1] on top,
                       as cyan whose opacity is value x `opacity`
    embedding_chart    2-D projection of a fold's clips: points coloured by class or by right/wrong,
                       hover file and classes, click selects a clip (selection name "clip")
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from core.clip_charts import _long_frame, mel_band_edges, pool_columns, spectrogram_chart

SALIENCY_COLOUR = "#00e5ff"  # the PNG export's cyan (core.exports.SALIENCY_RGB)


def saliency_layer(values: np.ndarray, mel_hz: np.ndarray, seconds_per_frame: float, duration: float,
                   opacity: float, max_columns: int = 400) -> alt.Chart:
    """The saliency on the spectrogram's geometry (the same cells, pooled the same way)."""
    frames = np.asarray(values).shape[1]
    pooled, group = pool_columns(values, max_columns)
    df = _long_frame(pooled, "saliency")
    f_lo, f_hi = mel_band_edges(mel_hz)
    bands = pd.DataFrame({"row": np.arange(len(mel_hz), dtype=np.int16), "f0": f_lo,
                          "f1": np.append(f_hi[:-1] + (f_hi[1:] - f_lo[1:]) / 2, float(f_hi[-1]))})
    col_s, end_s = group * seconds_per_frame, frames * seconds_per_frame
    return alt.Chart(df).mark_rect(clip=True, color=SALIENCY_COLOUR).encode(
        x="t0:Q", x2="t1:Q", y="f0:Q", y2="f1:Q",
        opacity=alt.Opacity("saliency:Q", scale=alt.Scale(domain=[0, 1], range=[0, float(opacity)]), legend=None),
        tooltip=[alt.Tooltip("t0:Q", title="time (s)", format=".2f"),
                 alt.Tooltip("saliency:Q", format=".2f")],
    ).transform_lookup(
        lookup="row", from_=alt.LookupData(bands, "row", ["f0", "f1"]),
    ).transform_calculate(
        t0=f"datum.col * {col_s!r}", t1=f"min((datum.col + 1.5) * {col_s!r}, {end_s!r})",
    )


def saliency_overlay(spec: np.ndarray, saliency: np.ndarray, mel_hz: np.ndarray, seconds_per_frame: float,
                     duration: float, opacity: float = 0.6, scheme: str = "magma", height: int = 440,
                     title: str | None = None) -> alt.LayerChart:
    """The spectrogram (n_mels, frames) dB with `saliency` (same shape, [0, 1]) blended on top."""
    if np.shape(saliency) != np.shape(spec):
        raise ValueError(f"saliency {np.shape(saliency)} is not on the spectrogram's grid {np.shape(spec)}")
    base = spectrogram_chart(spec, mel_hz, seconds_per_frame, duration, scheme=scheme, height=height)
    top = saliency_layer(saliency, mel_hz, seconds_per_frame, duration, opacity)
    chart = alt.layer(base, top).resolve_scale(color="independent", opacity="independent")
    return chart.properties(title=title) if title else chart


def embedding_chart(points: pd.DataFrame, colour: str = "class", height: int = 520) -> alt.Chart:
    """points: x, y, file, target, predicted, correct (and optionally `kind`: "fold" or "your clip").

    `colour` is "class" (the true class) or "correct". A click selects one
    point (selection "clip", field `file`); the page reads it back.
    """
    pick = alt.selection_point(name="clip", fields=["file"], on="click", clear="dblclick")
    field = alt.Color("target:N", title="class", legend=alt.Legend(columns=2, symbolLimit=50)) if colour == "class" \
        else alt.Color("correct:N", title="prediction", scale=alt.Scale(domain=["right", "wrong"],
                                                                         range=["#4c78a8", "#e45756"]))
    base = alt.Chart(points).encode(
        x=alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
        tooltip=["file:N", alt.Tooltip("target:N", title="true"), alt.Tooltip("predicted:N", title="predicted"),
                 alt.Tooltip("confidence:Q", format=".1%")],
    )
    dots = base.mark_circle(size=60).encode(
        color=field, opacity=alt.condition(pick, alt.value(0.9), alt.value(0.25)),
    ).add_params(pick)
    layers = [dots]
    if "kind" in points and (points["kind"] == "your clip").any():
        layers.append(base.transform_filter(alt.datum.kind == "your clip").mark_point(
            shape="diamond", size=400, filled=True, color="black", stroke="white", strokeWidth=2))
    return alt.layer(*layers).properties(height=height)


def clip_confusion_chart(table: pd.DataFrame, classes: list[str], size: int = 14) -> alt.Chart:
    """Confusion of a predictions table (rows: true `target`, columns: `predicted`, counts of clips).

    A click selects one cell (selection "cell", fields target and predicted):
    the page filters its per-clip table to it. Only non-empty cells are data.
    """
    cells = table.groupby(["target", "predicted"]).size().rename("clips").reset_index()
    totals = cells.groupby("target")["clips"].transform("sum")
    cells["share"] = cells["clips"] / totals
    pick = alt.selection_point(name="cell", fields=["target", "predicted"], on="click", clear="dblclick")
    return alt.Chart(cells).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("predicted:N", scale=alt.Scale(domain=classes), title="predicted", axis=alt.Axis(labelOverlap=False)),
        y=alt.Y("target:N", scale=alt.Scale(domain=classes), title="true class", axis=alt.Axis(labelOverlap=False)),
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="share of true class"),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.35)),
        tooltip=["target:N", "predicted:N", "clips:Q", alt.Tooltip("share:Q", format=".0%")],
    ).add_params(pick).properties(width=alt.Step(size), height=alt.Step(size))
