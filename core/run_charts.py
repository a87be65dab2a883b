"""Altair charts for the Training Runs page: pure functions of data, no Streamlit.

Public API
    scalar_chart(frame, tag, *, smoothing=0.6, x="step", log_y=False, best=None,
                 runs=None, max_points=1000, height=260) -> alt.LayerChart
        one tag, every run overlaid: faint raw line, smoothed line, best-epoch
        diamonds, and a hover rule whose tooltip lists every run at the nearest x
    confusion_chart(matrix, classes=CLASSES, *, normalize=True) -> alt.Chart
        true class (rows) x predicted class heatmap, row fractions as colour
    per_class_chart(accuracy, classes=CLASSES, *, descending=False) -> alt.Chart
        one bar per class, sorted by accuracy, coloured by ESC-50 category

Each chart carries its data inline (alt.InlineData), so it renders the same in
Streamlit, in a notebook or from `to_dict()`, without Altair's 5,000-row limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
from altair.utils.core import sanitize_pandas_dataframe

from core.labels import CATEGORIES, CLASSES, category_of, is_esc50, pretty
from core.runs import with_smoothing, with_time_columns

X_AXES = {  # x choice -> (field type, axis title)
    "step": ("Q", "step"),
    "relative": ("Q", "relative time (min)"),
    "wall": ("T", "wall time"),
}


def inline_data(frame: pd.DataFrame) -> alt.InlineData:
    """Data embedded in the spec: NaN becomes null and datetimes ISO strings, as Altair does."""
    return alt.InlineData(values=sanitize_pandas_dataframe(frame).to_dict("records"))


def scalar_chart(frame: pd.DataFrame, tag: str, *, smoothing: float = 0.6, x: str = "step",
                 log_y: bool = False, best: pd.DataFrame | None = None,
                 runs: Sequence[str] | None = None, max_points: int = 1000,
                 height: int = 260, colors: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Curves of `tag` for every run in `frame`, TensorBoard-style.

    frame: scalars (run, tag, step, wall_time, value), optionally with "relative"
    seconds from `core.runs.with_time_columns` (else relative to each run's first point).
    smoothing: TensorBoard's weight in [0, 1), applied to the full series before
    thinning each run to at most `max_points` points (first and last kept).
    x: "step", "relative" or "wall". best: run, step rows (`core.runs.best_epochs`),
    drawn as diamonds on this tag's raw value at that step. runs: colour domain,
    so several charts give a run the same colour. colors: run -> CSS colour
    (`core.run_colors.run_colors`): then every chart and the page's run list
    share one colour per run, and the chart draws no legend of its own.

    Hovering anywhere over the plot selects the nearest x (a Voronoi of the
    rule layer, which carries the tooltip, so the tooltip shows wherever the
    pointer is): the tooltip lists every run's smoothed value there, and each
    curve gets a dot and its value in the run's colour.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    kind, x_title = X_AXES[x]
    domain = list(runs) if runs is not None else sorted(frame["run"].unique())
    data = frame[frame["tag"] == tag]
    if x != "step" and "relative" not in data:
        data = with_time_columns(data)
    data = with_smoothing(data, smoothing)
    if x == "step":
        xnum = data["step"].astype(np.float64)
    else:  # minutes read better than seconds; wall stays unix seconds until the end
        xnum = data["relative"] / 60.0 if x == "relative" else data["wall_time"]
    data = _thin(data.assign(xnum=xnum), max_points)
    lines = data[["run", "step", "xnum", "value", "smoothed"]].assign(x=_x_values(data["xnum"], x))

    color = run_color(domain, colors)
    x_enc = alt.X(f"x:{kind}", title=x_title)
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    # The selection lives on the layer that carries the tooltip: Vega-Lite gives the
    # Voronoi cells of a nearest selection that layer's tooltip (a selection on an
    # invisible layer of its own left the tooltip on the 1 px rule only).
    hover = alt.selection_point(name="hover", encodings=["x"], nearest=True, on="pointerover",
                                clear="pointerout", empty=False)
    base = alt.Chart(inline_data(lines)).encode(x=x_enc, color=color)
    layers = []
    if smoothing > 0:  # as in TensorBoard, the raw curve stays visible, faintly
        layers.append(base.mark_line(opacity=0.25, strokeWidth=1).encode(
            y=alt.Y("value:Q", title=tag, scale=y_scale)))
    layers.append(base.mark_line(strokeWidth=2).encode(
        y=alt.Y("smoothed:Q", title=tag, scale=y_scale)))
    at_hover = base.transform_filter(hover)
    layers.append(at_hover.mark_point(filled=True, size=50, opacity=1).encode(y="smoothed:Q"))
    layers.append(at_hover.mark_text(align="left", dx=7, dy=-7, fontWeight="bold").encode(
        y="smoothed:Q", text=alt.Text("smoothed:Q", format=".4~g")))

    wide, titles = hover_table(data, domain, x)
    layers.append(alt.Chart(inline_data(wide)).mark_rule(color="gray", strokeWidth=1).encode(
        x=x_enc, opacity=alt.when(hover).then(alt.value(0.6)).otherwise(alt.value(0)),
        tooltip=[alt.Tooltip(f"x:{kind}", title=x_title)]
        + [alt.Tooltip(f"{col}:Q", title=run, format=".4~g") for col, run in titles]).add_params(hover))

    if best is not None and len(best):
        marks = best[["run", "step"]].merge(data[["run", "step", "xnum", "value"]], on=["run", "step"])
        marks = marks.drop_duplicates(["run", "step"], keep="last")
        marks = marks.assign(x=_x_values(marks["xnum"], x))
        layers.append(alt.Chart(inline_data(marks)).mark_point(shape="diamond", size=110, filled=True)
                      .encode(x=x_enc, y="value:Q", color=color,
                              tooltip=["run:N", alt.Tooltip("step:Q", title="best epoch"),
                                       alt.Tooltip("value:Q", format=".4~g")]))
    return alt.layer(*layers).properties(title=tag, height=height)


def run_color(domain: list[str], colors: Mapping[str, str] | None) -> alt.Color:
    """The run colour channel: fixed per-run colours and no legend, or tableau10 with a legend."""
    if colors is not None:
        return alt.Color("run:N", legend=None, scale=alt.Scale(
            domain=domain, range=[colors.get(run, "#888888") for run in domain]))
    # tableau10: neighbouring runs get distinct hues (Streamlit's default palette starts with two blues);
    # the legend sits below so the plot keeps the width, with full-opacity symbols.
    return alt.Color("run:N", scale=alt.Scale(domain=domain, scheme="tableau10"),
                     legend=alt.Legend(orient="bottom", title=None, symbolOpacity=1, symbolStrokeWidth=3,
                                       symbolType="stroke", labelLimit=400))


def _thin(data: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """At most `max_points` evenly spaced rows per run, its first and last among them."""
    keep = []
    for rows in data.groupby("run", sort=False).indices.values():
        if len(rows) > max_points:
            rows = rows[np.unique(np.linspace(0, len(rows) - 1, max_points).round().astype(int))]
        keep.append(rows)
    return data.iloc[np.sort(np.concatenate(keep))] if keep else data


def _x_values(xnum: pd.Series, x: str) -> pd.Series:
    return pd.to_datetime(xnum, unit="s", utc=True) if x == "wall" else xnum


def hover_table(data: pd.DataFrame, domain: list[str], x: str) -> tuple[pd.DataFrame, list]:
    """One row per x of any run; per run its smoothed value at that x.

    Runs' x values differ on time axes, so each run shows its latest point at or
    before x, and nothing outside its own first..last x.
    """
    xs = np.unique(data["xnum"].to_numpy())
    wide = pd.DataFrame({"xnum": xs})
    titles = []
    for i, run in enumerate(r for r in domain if r in set(data["run"])):
        own = data[data["run"] == run].sort_values("xnum", kind="stable")
        run_x, run_y = own["xnum"].to_numpy(), own["smoothed"].to_numpy()
        at = np.searchsorted(run_x, xs, side="right") - 1
        inside = (at >= 0) & (xs <= run_x[-1])
        wide[f"r{i}"] = np.where(inside, run_y[np.clip(at, 0, None)], np.nan)
        titles.append((f"r{i}", run))
    wide["x"] = _x_values(wide["xnum"], x)
    return wide.drop(columns="xnum"), titles


def confusion_chart(matrix: Sequence[Sequence[float]] | np.ndarray,
                    classes: Sequence[str] = CLASSES, *, normalize: bool = True) -> alt.Chart:
    """Heatmap of a confusion matrix: rows true class, columns predicted, in class order.

    matrix: (n, n) counts. normalize: colour by the fraction of each true class
    (rows sum to 1), else by count. Tooltips give both. Zero cells off the
    diagonal are left out of the data (drawn as background).
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix must be {len(classes)}x{len(classes)}, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    labels = [pretty(c) for c in classes]
    true_idx, pred_idx = np.indices(counts.shape)
    cells = pd.DataFrame({
        "true": np.array(labels, dtype=object)[true_idx.ravel()],
        "predicted": np.array(labels, dtype=object)[pred_idx.ravel()],
        "category": [category_of(classes[i]) for i in true_idx.ravel()],
        "count": counts.ravel(),
        "fraction": fractions.ravel(),
    })
    # Most cells of a useful matrix are 0: leave them to the background (the
    # diagonal always stays), which keeps the spec ~10x smaller.
    cells = cells[(cells["count"] > 0) | (true_idx.ravel() == pred_idx.ravel())]
    shade = "fraction" if normalize else "count"
    return alt.Chart(inline_data(cells)).mark_rect().encode(
        x=alt.X("predicted:N", scale=alt.Scale(domain=labels), title="predicted", axis=alt.Axis(labelOverlap=False)),
        y=alt.Y("true:N", scale=alt.Scale(domain=labels), title="true class", axis=alt.Axis(labelOverlap=False)),
        color=alt.Color(f"{shade}:Q", scale=alt.Scale(scheme="blues"), title=shade),
        tooltip=["true:N", "predicted:N", "category:N", alt.Tooltip("count:Q", format=".0f"),
                 alt.Tooltip("fraction:Q", format=".1%")],
    ).properties(title="Confusion matrix", width=alt.Step(14), height=alt.Step(14))


def per_class_chart(accuracy: Mapping[str, float] | Sequence[float],
                    classes: Sequence[str] = CLASSES, *, descending: bool = False) -> alt.Chart:
    """Bars of per-class accuracy, worst first (or best first), coloured by category.

    accuracy: class name -> accuracy, or one value per class in `classes` order.
    Values are drawn as given (fractions or percent).
    """
    if isinstance(accuracy, Mapping):
        pairs = list(accuracy.items())
    else:
        values = list(accuracy)
        if len(values) != len(classes):
            raise ValueError(f"expected {len(classes)} accuracies, got {len(values)}")
        pairs = list(zip(classes, values, strict=True))
    bars = pd.DataFrame({
        "class": [pretty(name) for name, _ in pairs],
        "category": [category_of(name) for name, _ in pairs],
        "accuracy": [float(value) for _, value in pairs],
    }).sort_values(["accuracy", "class"], ascending=[not descending, True], kind="stable")
    return alt.Chart(inline_data(bars)).mark_bar().encode(
        x=alt.X("accuracy:Q", title="accuracy"),
        y=alt.Y("class:N", sort=list(bars["class"]), title=None, axis=alt.Axis(labelOverlap=False)),  # every class
        color=(alt.Color("category:N", scale=alt.Scale(domain=_categories(bars["category"])),
                         # one category says nothing: no legend then
                         legend=alt.Legend(orient="bottom", columns=2, labelLimit=300,
                                           values=[c for c in CATEGORIES if c in set(bars["category"])])
                         if bars["category"].nunique() > 1 else None)
               if any(is_esc50(name) for name, _ in pairs) else alt.value("#4c78a8")),  # your own classes
        tooltip=["class:N", "category:N", alt.Tooltip("accuracy:Q", format=".3~g")],
    ).properties(title="Per-class accuracy", height=alt.Step(16))


def _categories(present: pd.Series) -> list[str]:
    """The five categories in ESC-50 order (fixed colours), plus "unknown" only if used."""
    return list(CATEGORIES) + (["unknown"] if (present == "unknown").any() else [])
