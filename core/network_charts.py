"""Figures of the network: GET /model layer rows -> a pydeck 3-D view and a layer table. Pure functions.

    architecture_deck     GET /model layer rows  -> 3-D blocks in an OrbitView (no map), the camera
                          fitted to the model (fit_view) whatever its widths and depths
    layer_table           GET /model layer rows  -> DataFrame for st.dataframe
    stage_of              a layer name -> the part of the network it belongs to (stem, layerN, head)
    group_by_stage        network-ordered layer names grouped by stage

Nothing here imports Streamlit or torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pydeck as pdk

# One colour per part of the network in the 3-D view.
STAGE_COLOURS: dict[str, tuple[int, int, int]] = {
    "stem": (23, 190, 207),
    "layer2": (31, 119, 180),
    "layer3": (44, 160, 44),
    "layer4": (255, 127, 14),
    "layer5": (214, 39, 40),
    "head": (148, 103, 189),
}


def stage_of(name: str) -> str:
    """"layer3.block-1.relu" -> "layer3"; the stem (layer1) -> "stem"; anything after the stages -> "head"."""
    head = name.split(".", 1)[0]
    if head == "layer1":
        return "stem"
    return head if head in STAGE_COLOURS else "head"


def group_by_stage(names: Sequence[str]) -> dict[str, list[str]]:
    """Network-ordered layer names grouped by stage, order kept."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(stage_of(n), []).append(n)
    return groups


def architecture_blocks(layers: Sequence[Mapping[str, Any]], gap: float = 5.0) -> list[dict[str, Any]]:
    """GET /model layer rows -> one 3-D block per layer the network is made of, in order, with geometry.

    The stem, every residual block and the head layers each become a box:
    thickness along x = channels / 32 (it doubles with every stage), width
    along y = time frames w / 2, height along z = frequency rows h / 2 (one
    scale for both, so the shrinking maps read true). Plain cartesian units.
    """
    chosen = [r for r in layers if (r["depth"] == 0 and r["type"] != "Stage") or r["type"] == "ResidualBlock"]
    blocks, x = [], 0.0
    for r in chosen:
        channels, h, w = (list(r["output_shape"]) + [1, 1])[:3]
        thick, depth, elevation = max(1.0, channels / 32), max(1.0, w / 2), max(1.0, h / 2)
        stage = stage_of(r["name"])
        blocks.append({
            "name": r["name"], "type": r["type"], "stage": stage,
            "shape": " x ".join(str(s) for s in r["output_shape"]), "params": f"{r['params']:,}",
            "polygon": [[x, -depth / 2], [x + thick, -depth / 2], [x + thick, depth / 2], [x, depth / 2]],
            "elevation": elevation, "colour": list(STAGE_COLOURS[stage]) + [230],
            "x0": x, "x1": x + thick, "channels": channels,
        })
        x += thick + gap
    return blocks


def stage_labels(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One label per stage, centred under its blocks on the floor in front: text and [x, y, z].

    In front rather than above: deck.gl depth-tests text, and a label above a
    stage hides behind the taller blocks of the stage before it. The stem is
    the exception: one thin block next to layer2, with nothing before it, so
    its label goes above it, where the two labels cannot collide.
    """
    front = -max((b["polygon"][2][1] for b in blocks), default=0) - 12
    labels = []
    for stage, members in group_by_stage([b["name"] for b in blocks]).items():
        chosen = [b for b in blocks if b["name"] in members]
        x = (chosen[0]["x0"] + chosen[-1]["x1"]) / 2
        if stage == "stem":
            labels.append({"text": "stem", "position": [x, 0, chosen[0]["elevation"] + 8]})
            continue
        text = "head" if stage == "head" else f"{stage}\n{chosen[0]['channels']} ch"
        near = labels and labels[-1]["position"][1] == front and x - labels[-1]["position"][0] < 40
        labels.append({"text": text, "position": [x, front - 16 if near else front, 0]})  # narrow stages: stagger
    return labels


ROTATION_X, ROTATION_ORBIT = 25.0, 10.0   # the camera looks down 25 degrees, from 10 degrees left


def fit_view(blocks: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]], *,
             width: int = 700, height: int = 520, fill: float = 0.8) -> dict[str, Any]:
    """The initial camera for any widths and depths: aimed at the centre of the bounding box of
    every block and label, zoomed so that box, as the tilted camera sees it, fills `fill` of a
    `width` x `height` px canvas (700: the narrowest main column at 1400 px). Returns ViewState fields."""
    xs = [v for b in blocks for v in (b["x0"], b["x1"])] + [lab["position"][0] for lab in labels]
    ys = [pt[1] for b in blocks for pt in b["polygon"]] + [lab["position"][1] for lab in labels]
    zs = [0.0] + [b["elevation"] for b in blocks] + [lab["position"][2] + 6 for lab in labels]
    if not blocks:
        return {"target": [0, 0, 0], "rotation_orbit": ROTATION_ORBIT, "rotation_x": ROTATION_X, "zoom": 0}
    span_x, span_y, span_z = max(xs) - min(xs) + 16, max(ys) - min(ys), max(zs) - min(zs)  # 16: label text
    tilt, turn = math.radians(ROTATION_X), math.radians(ROTATION_ORBIT)
    # Projected extents in model units. z is up and y recedes from the camera; deck.gl's perspective
    # (fovy 50) enlarges the near side, so y counts extra and the aim moves toward the front (the labels).
    across = span_x * math.cos(turn) + span_y * math.sin(turn)
    up = span_z * math.cos(tilt) + 1.6 * span_y * math.sin(tilt)
    zoom = math.log2(min(fill * width / max(across, 1e-6), 0.75 * fill * height / max(up, 1e-6)))
    centre = [(max(xs) + min(xs)) / 2, 0.6 * min(ys) + 0.4 * max(ys), (max(zs) + min(zs)) / 2]
    return {"target": centre, "rotation_orbit": ROTATION_ORBIT, "rotation_x": ROTATION_X, "zoom": zoom}


def architecture_deck(layers: Sequence[Mapping[str, Any]], height: int = 520) -> pdk.Deck:
    """The network as 3-D blocks in a deck.gl OrbitView (no base map), coloured by stage, with tooltips."""
    blocks = architecture_blocks(layers)
    boxes = pdk.Layer(
        "PolygonLayer", blocks, id="blocks", get_polygon="polygon", extruded=True, wireframe=True,
        get_elevation="elevation", get_fill_color="colour", get_line_color=[40, 40, 40],
        pickable=True, auto_highlight=True,
    )
    label_rows = stage_labels(blocks)
    labels = pdk.Layer(
        "TextLayer", label_rows, id="stage-labels", get_position="position", get_text="text",
        get_size=15, get_color=[50, 50, 50], billboard=True,
    )
    # No inertia: a drag turns the model as far as the pointer moved, and stops with it.
    view = pdk.View(type="OrbitView", controller={"inertia": False, "scrollZoom": {"speed": 0.005}})
    state = pdk.ViewState(**fit_view(blocks, label_rows, height=height), min_zoom=-3, max_zoom=8,
                          min_rotation_x=-5, max_rotation_x=85)
    return pdk.Deck(
        layers=[boxes, labels], views=[view], initial_view_state=state, map_style=None, map_provider=None,
        height=height,
        tooltip={"html": "<b>{name}</b> ({type})<br/>output {shape}<br/>{params} parameters",
                 "style": {"fontSize": "12px"}},
    )


def layer_table(layers: Sequence[Mapping[str, Any]], max_depth: int = 1) -> pd.DataFrame:
    """GET /model layer rows down to `max_depth` -> DataFrame(layer, type, output shape, parameters)."""
    rows = [r for r in layers if r["depth"] <= max_depth]
    return pd.DataFrame({
        "layer": ["\u2003" * r["depth"] + r["name"] for r in rows],
        "type": [r["type"] for r in rows],
        "output shape": [" x ".join(str(s) for s in r["output_shape"]) for r in rows],
        "parameters": [int(r["params"]) for r in rows],
    })
