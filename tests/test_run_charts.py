"""core.run_charts: assertions on the Vega-Lite spec each builder returns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core import run_charts as C
from core.runs import best_epochs, smooth

LOSS_A = [2.0, 1.5, 1.7, 1.1, 0.9, 1.0]
LOSS_B = [3.0, 2.0, 1.0, 0.5]


def scalars() -> pd.DataFrame:
    """Two runs of val/loss (b is shorter and starts later) plus a val/accuracy tag."""
    rows = [("a", "val/loss", s, 1000.0 + 60 * s, v) for s, v in enumerate(LOSS_A)]
    rows += [("b", "val/loss", s, 5000.0 + 30 * s, v) for s, v in enumerate(LOSS_B)]
    rows += [("a", "val/accuracy", s, 1000.0 + 60 * s, 0.1 * s) for s in range(6)]
    return pd.DataFrame(rows, columns=["run", "tag", "step", "wall_time", "value"])


def spec_layers(chart) -> tuple[list[dict], dict]:
    spec = chart.to_dict()
    return spec["layer"], spec["datasets"]


def values_of(layer: dict, datasets: dict) -> list[dict]:
    return datasets[layer["data"]["name"]]


def layer_where(layers, **mark) -> dict:
    (found,) = [layer for layer in layers if all(layer["mark"].get(k) == v for k, v in mark.items())]
    return found


def test_scalar_chart_draws_raw_faintly_and_smoothed_on_top():
    layers, data = spec_layers(C.scalar_chart(scalars(), "val/loss", smoothing=0.6))
    raw = layer_where(layers, type="line", opacity=0.25)
    line = layer_where(layers, type="line", strokeWidth=2)
    assert raw["encoding"]["y"]["field"] == "value" and line["encoding"]["y"]["field"] == "smoothed"
    assert line["encoding"]["color"]["scale"]["domain"] == ["a", "b"]
    points = values_of(line, data)
    for run, loss in (("a", LOSS_A), ("b", LOSS_B)):
        mine = [p for p in points if p["run"] == run]
        assert [p["value"] for p in mine] == loss
        assert [p["smoothed"] for p in mine] == pytest.approx(smooth(loss, 0.6).tolist(), rel=1e-12)
        assert [p["smoothed"] for p in mine] != loss  # smoothing did something
    assert all(p["step"] != 0 or p["x"] == 0 for p in points)


def test_no_smoothing_draws_one_line_of_the_raw_values():
    layers, data = spec_layers(C.scalar_chart(scalars(), "val/loss", smoothing=0))
    assert [layer["mark"]["type"] for layer in layers].count("line") == 1
    points = values_of(layers[0], data)
    assert all(p["smoothed"] == p["value"] for p in points)


def test_hover_rule_lists_every_run_at_the_hovered_step():
    spec = C.scalar_chart(scalars(), "val/loss", smoothing=0.5).to_dict()
    layers, data = spec["layer"], spec["datasets"]
    rule = layer_where(layers, type="rule")
    (param,) = spec["params"]  # Altair lifts a layer's params to the top, naming the layer
    # the selection sits on the layer with the tooltip: its Voronoi cells carry that tooltip,
    # so it shows wherever the pointer is (tests/e2e checks it with real pointer moves)
    assert param["name"] == "hover" and param["views"] == [rule["name"]]
    assert param["select"]["nearest"] is True and param["select"]["encodings"] == ["x"]
    assert param["select"]["on"] == "pointerover"
    assert rule["encoding"]["opacity"]["condition"][0]["param"] == "hover"
    titles = [t.get("title") for t in rule["encoding"]["tooltip"]]
    assert titles == ["step", "a", "b"]
    table = {row["x"]: row for row in values_of(rule, data)}
    assert table[2.0]["r0"] == pytest.approx(smooth(LOSS_A, 0.5)[2])
    assert table[2.0]["r1"] == pytest.approx(smooth(LOSS_B, 0.5)[2])
    assert table[5.0]["r1"] is None  # run b ended at step 3: nothing shown past its end


def test_time_axes_use_minutes_or_wall_clock():
    layers, data = spec_layers(C.scalar_chart(scalars(), "val/loss", x="relative"))
    line = layer_where(layers, type="line", strokeWidth=2)
    assert line["encoding"]["x"] == {"field": "x", "type": "quantitative", "title": "relative time (min)"}
    a = [p["x"] for p in values_of(line, data) if p["run"] == "a"]
    assert a == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # 60 s apart, from the run's first point
    layers, data = spec_layers(C.scalar_chart(scalars(), "val/loss", x="wall"))
    line = layer_where(layers, type="line", strokeWidth=2)
    assert line["encoding"]["x"]["type"] == "temporal"
    assert values_of(line, data)[0]["x"] == "1970-01-01T00:16:40+00:00"  # 1000 s
    with pytest.raises(ValueError, match="x must be one of"):
        C.scalar_chart(scalars(), "val/loss", x="epoch")


def test_log_scale_option():
    layers, _ = spec_layers(C.scalar_chart(scalars(), "val/loss", log_y=True))
    assert layer_where(layers, type="line", strokeWidth=2)["encoding"]["y"]["scale"] == {"type": "log"}
    layers, _ = spec_layers(C.scalar_chart(scalars(), "val/loss"))
    assert layer_where(layers, type="line", strokeWidth=2)["encoding"]["y"]["scale"] == {"zero": False}


def test_best_epoch_markers_sit_on_this_tags_value_at_the_best_step():
    frame = scalars()
    best = best_epochs(frame, "val/loss", mode="min")  # a: step 4 (0.9), b: step 3 (0.5)
    layers, data = spec_layers(C.scalar_chart(frame, "val/loss", best=best))
    marks = values_of(layer_where(layers, shape="diamond"), data)
    assert [(m["run"], m["step"], m["value"]) for m in marks] == [("a", 4, 0.9), ("b", 3, 0.5)]
    layers, data = spec_layers(C.scalar_chart(frame, "val/accuracy", best=best))
    marks = values_of(layer_where(layers, shape="diamond"), data)
    assert [(m["run"], m["step"], m["value"]) for m in marks] == [("a", 4, 0.4)]


def test_long_series_are_thinned_after_smoothing():
    values = [math.sin(i / 7) + i / 100 for i in range(500)]
    frame = pd.DataFrame({"run": "a", "tag": "t", "step": range(500),
                          "wall_time": np.arange(500.0), "value": values})
    layers, data = spec_layers(C.scalar_chart(frame, "t", smoothing=0.9, max_points=50))
    points = values_of(layer_where(layers, type="line", strokeWidth=2), data)
    assert len(points) == 50
    assert (points[0]["step"], points[-1]["step"]) == (0, 499)
    assert points[-1]["smoothed"] == pytest.approx(smooth(values, 0.9)[-1], rel=1e-12)


def test_confusion_chart_holds_counts_and_row_fractions():
    matrix = [[8, 2, 0], [0, 5, 0], [1, 0, 0]]
    chart = C.confusion_chart(matrix, ["dog", "sea_waves", "siren"])
    spec = chart.to_dict()
    cells = {(c["true"], c["predicted"]): c for c in spec["datasets"][spec["data"]["name"]]}
    assert set(cells) == {("Dog", "Dog"), ("Dog", "Sea waves"), ("Sea waves", "Sea waves"),
                          ("Siren", "Dog"), ("Siren", "Siren")}  # zeros off the diagonal left out
    assert (cells[("Dog", "Sea waves")]["count"], cells[("Dog", "Sea waves")]["fraction"]) == (2, 0.2)
    assert cells[("Siren", "Siren")]["fraction"] == 0.0
    assert cells[("Sea waves", "Sea waves")]["category"] == "Natural soundscapes & water sounds"
    assert spec["mark"]["type"] == "rect"
    assert spec["encoding"]["color"]["field"] == "fraction"
    assert spec["encoding"]["y"]["scale"]["domain"] == ["Dog", "Sea waves", "Siren"]
    assert C.confusion_chart(matrix, ["dog", "sea_waves", "siren"],
                             normalize=False).to_dict()["encoding"]["color"]["field"] == "count"
    with pytest.raises(ValueError, match="must be 50x50"):
        C.confusion_chart(matrix)


def test_per_class_chart_is_sorted_and_coloured_by_category():
    chart = C.per_class_chart({"dog": 0.9, "rain": 0.4, "siren": 0.7, "clapping": 0.4})
    spec = chart.to_dict()
    bars = spec["datasets"][spec["data"]["name"]]
    assert [(b["class"], b["accuracy"]) for b in bars] == [
        ("Clapping", 0.4), ("Rain", 0.4), ("Siren", 0.7), ("Dog", 0.9)]
    assert [b["category"] for b in bars] == [
        "Human, non-speech sounds", "Natural soundscapes & water sounds",
        "Exterior/urban noises", "Animals"]
    assert spec["encoding"]["y"]["sort"] == ["Clapping", "Rain", "Siren", "Dog"]
    assert spec["encoding"]["color"]["scale"]["domain"][0] == "Animals"
    best_first = C.per_class_chart([0.1 * (i % 10) for i in range(50)], descending=True).to_dict()
    assert best_first["encoding"]["y"]["sort"][0] == "Crow"  # index 9, the first 0.9
    with pytest.raises(ValueError, match="expected 50 accuracies"):
        C.per_class_chart([0.5, 0.6])


def test_hover_marks_each_curve_in_its_colour_at_the_selected_x():
    layers, _ = spec_layers(C.scalar_chart(scalars(), "val/loss", smoothing=0.5))
    for mark in ("point", "text"):
        (layer,) = [la for la in layers if la["mark"]["type"] == mark and "shape" not in la["mark"]]
        assert layer["transform"] == [{"filter": {"param": "hover", "empty": False}}]
        assert layer["encoding"]["color"]["field"] == "run"


def test_fixed_run_colours_replace_the_legend():
    colors = {"a": "#111111", "b": "#222222", "other": "#333333"}
    layers, _ = spec_layers(C.scalar_chart(scalars(), "val/loss", runs=["b", "a"], colors=colors))
    color = layer_where(layers, type="line", strokeWidth=2)["encoding"]["color"]
    assert color["legend"] is None
    assert color["scale"] == {"domain": ["b", "a"], "range": ["#222222", "#111111"]}
