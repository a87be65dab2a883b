"""Altair charts of grouped runs (core.run_groups): pure functions of data, no Streamlit.

    group_chart(stats, tag, *, band="min-max", colors=None, log_y=False, height=260) -> alt.LayerChart
        per group a mean line over a shaded band (min..max, or mean ± std), with
        the same nearest-x hover as core.run_charts.scalar_chart: the tooltip
        lists every group's mean there, each mean line gets a dot and its value
"""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd

from core.run_charts import hover_table, inline_data, run_color

BANDS = {"min-max": "min-max", "std": "mean ± std"}  # ?band= value -> the title's words


def group_chart(stats: pd.DataFrame, tag: str, *, band: str = "min-max",
                colors: Mapping[str, str] | None = None, log_y: bool = False,
                height: int = 260) -> alt.LayerChart:
    """Mean line and band per group for `tag`, x = step.

    stats: core.run_groups.aggregate's rows (group, tag, step, mean, std, min, max, n).
    band: "min-max" (the members' range) or "std" (mean ± population std).
    colors: group -> colour (no legend drawn), else tableau10 with a legend.
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {sorted(BANDS)}, got {band!r}")
    data = stats[stats["tag"] == tag].rename(columns={"group": "run"})
    low, high = (data["min"], data["max"]) if band == "min-max" else (data["mean"] - data["std"],
                                                                     data["mean"] + data["std"])
    data = data.assign(x=data["step"].astype(np.float64), low=low, high=high)
    domain = list(dict.fromkeys(data["run"]))
    color = run_color(domain, colors)
    x_enc = alt.X("x:Q", title="step")
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    hover = alt.selection_point(name="hover", encodings=["x"], nearest=True, on="pointerover",
                                clear="pointerout", empty=False)
    base = alt.Chart(inline_data(data[["run", "step", "x", "mean", "std", "low", "high", "n"]])).encode(
        x=x_enc, color=color)
    layers = [
        base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", title=tag, scale=y_scale), y2="high:Q"),
        base.mark_line(strokeWidth=2).encode(y=alt.Y("mean:Q", title=tag, scale=y_scale)),
        base.transform_filter(hover).mark_point(filled=True, size=50, opacity=1).encode(y="mean:Q"),
        base.transform_filter(hover).mark_text(align="left", dx=7, dy=-7, fontWeight="bold").encode(
            y="mean:Q", text=alt.Text("mean:Q", format=".4~g")),
    ]
    wide, titles = hover_table(data.assign(xnum=data["x"], smoothed=data["mean"]), domain, "step")
    layers.append(alt.Chart(inline_data(wide)).mark_rule(color="gray").encode(
        x=x_enc, opacity=alt.when(hover).then(alt.value(0.6)).otherwise(alt.value(0)),
        tooltip=[alt.Tooltip("x:Q", title="step")]
        + [alt.Tooltip(f"{col}:Q", title=f"{group} (mean)", format=".4~g") for col, group in titles],
    ).add_params(hover))
    return alt.layer(*layers).properties(title=f"{tag} ({BANDS[band]} band)", height=height)
