"""Per-class results of a run, readable at any number of classes: pure Altair builders, no Streamlit.

    class_order(classes, accuracy=None, by="accuracy") -> list[str]
        classes worst first by accuracy (ties in class order), or in class order
    confusion_matrix_chart(matrix, classes, *, order=None, max_px=640) -> alt.LayerChart
        cells sized to fit (max_px across, 14..64 px each), coloured by the row
        fraction, each cell's count and row percentage written in it when it fits
    class_diff_chart(accuracy_a, accuracy_b, name_a, name_b) -> alt.Chart
        per class, accuracy of b minus a, sorted, diverging colours

Inputs come from summary.json (a file from a Volume: hostile): shapes are
checked, and more than MAX_CLASSES classes is refused with a ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.labels import category_of, pretty
from core.run_charts import inline_data

MAX_CLASSES = 500
TEXT_PX = 34   # cells at least this wide carry count and percentage; from 18 px the count alone
COUNT_PX = 18


def class_order(classes: Sequence[str], accuracy: Mapping[str, float] | None = None,
                by: str = "accuracy") -> list[str]:
    """Class names worst first by `accuracy` (a class without one goes last), or as given."""
    if by not in ("accuracy", "class"):
        raise ValueError(f"order must be 'accuracy' or 'class', got {by!r}")
    if by == "class" or not accuracy:
        return list(classes)

    def key(item):
        index, name = item
        value = accuracy.get(name)
        finite = isinstance(value, (int, float)) and np.isfinite(value)
        return (not finite, float(value) if finite else 0.0, index)

    return [name for _, name in sorted(enumerate(classes), key=key)]


def _cells(counts: np.ndarray, classes: Sequence[str], order: list[str]) -> pd.DataFrame:
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    true_idx, pred_idx = np.indices(counts.shape)
    labels = np.array([pretty(c) for c in classes], dtype=object)
    cells = pd.DataFrame({"true": labels[true_idx.ravel()], "predicted": labels[pred_idx.ravel()],
                          "category": [category_of(classes[i]) for i in true_idx.ravel()],
                          "count": counts.ravel(), "fraction": fractions.ravel(),
                          "diagonal": (true_idx == pred_idx).ravel()})
    cells["label"] = [f"{c:.0f}\n{f:.0%}" for c, f in zip(cells["count"], cells["fraction"], strict=True)]
    # zeros off the diagonal are background: a 50-class matrix stays ~10x smaller
    return cells[(cells["count"] > 0) | cells["diagonal"]]


def confusion_matrix_chart(matrix: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str], *,
                           order: Sequence[str] | None = None, max_px: int = 640) -> alt.LayerChart:
    """Heatmap of counts: rows true class, columns predicted, both in `order` (default: `classes`).

    matrix: (n, n) counts. Colour is the fraction of the true class (rows sum
    to 100%); the legend reads in percent. Cells are max_px / n wide, within
    14..64 px; wide enough ones show "count" over "row %".
    """
    n = len(classes)
    if n > MAX_CLASSES:
        raise ValueError(f"{n} classes is more than this view draws ({MAX_CLASSES})")
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.shape != (n, n) or not np.isfinite(counts).all():
        raise ValueError(f"confusion matrix must be {n}x{n} finite counts, got shape {counts.shape}")
    order = list(order) if order is not None else list(classes)
    if sorted(order) != sorted(classes):
        raise ValueError("order must hold each class once")
    step = int(min(64, max(14, max_px // max(n, 1))))
    domain = [pretty(c) for c in order]
    cells = _cells(counts, classes, order)
    axis = alt.Axis(labelOverlap=False, labelLimit=160)
    base = alt.Chart(inline_data(cells)).encode(
        x=alt.X("predicted:N", scale=alt.Scale(domain=domain), title="predicted", axis=axis),
        y=alt.Y("true:N", scale=alt.Scale(domain=domain), title="true class", axis=axis),
        tooltip=["true:N", "predicted:N", "category:N", alt.Tooltip("count:Q", format=".0f"),
                 alt.Tooltip("fraction:Q", format=".1%", title="of the true class")])
    layers = [base.mark_rect().encode(color=alt.Color(
        "fraction:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]),
        legend=alt.Legend(format=".0%", title="of true class")))]
    if step >= COUNT_PX:
        text = "label:N" if step >= TEXT_PX else alt.Text("count:Q", format=".0f")
        layers.append(base.mark_text(lineBreak="\n", fontSize=11 if step >= TEXT_PX else 9).encode(
            text=text, color=alt.when(alt.datum.fraction > 0.5).then(alt.value("white"))
            .otherwise(alt.value("#1f2937"))))
    return alt.layer(*layers).properties(title="Confusion matrix",
                                         width=alt.Step(step), height=alt.Step(step))


def class_diff_chart(accuracy_a: Mapping[str, float], accuracy_b: Mapping[str, float],
                     name_a: str, name_b: str) -> alt.Chart:
    """Bars of accuracy_b - accuracy_a for the classes both runs have, most improved first."""
    shared = [c for c in accuracy_a if c in accuracy_b]
    if len(shared) > MAX_CLASSES:
        raise ValueError(f"{len(shared)} classes is more than this view draws ({MAX_CLASSES})")
    rows = pd.DataFrame({"class": [pretty(c) for c in shared],
                         "a": [float(accuracy_a[c]) for c in shared],
                         "b": [float(accuracy_b[c]) for c in shared]})
    rows = rows[np.isfinite(rows["a"]) & np.isfinite(rows["b"])].assign(difference=lambda r: r["b"] - r["a"])
    rows = rows.sort_values(["difference", "class"], ascending=[False, True], kind="stable")
    reach = float(rows["difference"].abs().max()) if len(rows) else 0.0
    reach = reach if reach > 0 else 1.0
    return alt.Chart(inline_data(rows)).mark_bar().encode(
        x=alt.X("difference:Q", title=f"accuracy: {name_b} minus {name_a}", axis=alt.Axis(format="+.0%")),
        y=alt.Y("class:N", sort=list(rows["class"]), title=None, axis=alt.Axis(labelOverlap=False)),
        # symmetric about 0, so "worse" is red and "better" blue whatever the range
        color=alt.Color("difference:Q", scale=alt.Scale(scheme="redblue", domain=[-reach, reach]), legend=None),
        tooltip=["class:N", alt.Tooltip("a:Q", title=name_a, format=".1%"),
                 alt.Tooltip("b:Q", title=name_b, format=".1%"),
                 alt.Tooltip("difference:Q", format="+.1%")],
    ).properties(title=f"Per-class difference: {name_b} vs {name_a}", height=alt.Step(16))
