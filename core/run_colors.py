"""One colour per run, shared by every chart and the run list of the Training Runs page.

    run_colors(names) -> dict[name, "#rrggbb"]   in the order given (the page passes every run
                                                 in the folder, sorted), so a run keeps its colour
                                                 whichever runs are shown or hidden
    swatch_uri(color) -> str                     a small SVG square as a data: URI (an image cell)

Tableau 10 (Vega's `tableau10`): neighbouring runs get distinct hues. Past ten
runs Tableau 20 gives each of the first twenty its own colour; beyond that they cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

TABLEAU10 = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b",
             "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")
TABLEAU20 = ("#4c78a8", "#9ecae9", "#f58518", "#ffbf79", "#54a24b", "#88d27a", "#b79a20", "#f2cf5b",
             "#439894", "#83bcb6", "#e45756", "#ff9d98", "#79706e", "#bab0ac", "#d67195", "#fcbfd2",
             "#b279a2", "#d6a5c9", "#9e765f", "#d8b5a5")


def run_colors(names: Iterable[str]) -> dict[str, str]:
    """name -> colour, by position in `names` (duplicates keep their first colour)."""
    unique = list(dict.fromkeys(names))
    palette = TABLEAU10 if len(unique) <= len(TABLEAU10) else TABLEAU20
    return {name: palette[i % len(palette)] for i, name in enumerate(unique)}


def swatch_uri(color: str, size: int = 12) -> str:
    """A filled square of `color` as an SVG data: URI, for st.column_config.ImageColumn."""
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
           f'<rect width="{size}" height="{size}" rx="2" fill="{color}"/></svg>')
    return "data:image/svg+xml," + quote(svg)
