"""Two models on one clip: where their top-k agree and where they do not (for the Predict page).

    compare_predictions(a, b)   a, b: top-k lists (objects with .label, .confidence), best first ->
                                {"same_top1", "top1": (a, b), "only_a", "only_b", "rows": [...]}

`rows` has one row per class in either top-k: its rank and confidence under
each model (None when outside that model's top-k), the classes where they
disagree first. Pure: no model, no Streamlit; the page draws the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def compare_predictions(a: Sequence[Any], b: Sequence[Any]) -> dict:
    """How two top-k lists of the same clip differ (see the module docstring)."""
    rank_a = {p.label: (i + 1, float(p.confidence)) for i, p in enumerate(a)}
    rank_b = {p.label: (i + 1, float(p.confidence)) for i, p in enumerate(b)}
    labels = list(dict.fromkeys([*rank_a, *rank_b]))
    rows = []
    for label in labels:
        ra, rb = rank_a.get(label), rank_b.get(label)
        rows.append({"class": label, "rank_a": ra[0] if ra else None, "confidence_a": ra[1] if ra else None,
                     "rank_b": rb[0] if rb else None, "confidence_b": rb[1] if rb else None,
                     "agree": ra is not None and rb is not None and ra[0] == rb[0]})
    rows.sort(key=lambda r: (r["agree"], min(r["rank_a"] or 99, r["rank_b"] or 99)))
    top_a, top_b = (a[0].label if a else None), (b[0].label if b else None)
    return {"same_top1": top_a == top_b, "top1": (top_a, top_b),
            "only_a": [x for x in rank_a if x not in rank_b], "only_b": [x for x in rank_b if x not in rank_a],
            "rows": rows}
