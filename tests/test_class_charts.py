"""core.class_charts: the per-class views' specs (cell size, text in cells, order, the two-run difference)."""

from __future__ import annotations

import numpy as np
import pytest

from core import class_charts as K
from core.labels import CLASSES
from core.run_charts import per_class_chart

FIVE = ["dog", "rooster", "rain", "siren", "clapping"]
MATRIX = [[8, 2, 0, 0, 0], [0, 5, 5, 0, 0], [1, 0, 9, 0, 0], [0, 0, 0, 10, 0], [0, 0, 0, 3, 7]]
ACCURACY = {"dog": 0.8, "rooster": 0.5, "rain": 0.9, "siren": 1.0, "clapping": 0.7}


def layers(chart) -> tuple[list[dict], dict]:
    spec = chart.to_dict()
    return spec["layer"], spec


def test_classes_sort_worst_first_or_stay_in_class_order():
    assert K.class_order(FIVE, ACCURACY) == ["rooster", "clapping", "dog", "rain", "siren"]
    assert K.class_order(FIVE, ACCURACY, by="class") == FIVE
    assert K.class_order(FIVE, {"dog": 0.5, "rain": float("nan"), "siren": 0.5}) == [
        "dog", "siren", "rooster", "rain", "clapping"]  # ties keep class order, no value goes last
    with pytest.raises(ValueError, match="order must be"):
        K.class_order(FIVE, ACCURACY, by="name")


def test_few_classes_get_big_cells_with_count_and_row_percentage():
    (rect, text), spec = layers(K.confusion_matrix_chart(MATRIX, FIVE, order=K.class_order(FIVE, ACCURACY)))
    assert spec["width"] == {"step": 64} and spec["height"] == {"step": 64}
    assert rect["encoding"]["color"]["legend"]["format"] == ".0%"  # not "1.000000"
    assert rect["encoding"]["x"]["scale"]["domain"] == ["Rooster", "Clapping", "Dog", "Rain", "Siren"]
    cells = {(c["true"], c["predicted"]): c for c in spec["datasets"][spec["data"]["name"]]}  # shared by both layers
    assert cells[("Rooster", "Rain")]["label"] == "5\n50%"
    assert cells[("Clapping", "Siren")]["label"] == "3\n30%"
    assert text["encoding"]["text"]["field"] == "label" and text["mark"]["lineBreak"] == "\n"
    assert text["encoding"]["color"]["condition"][0]["test"] == "(datum.fraction > 0.5)"


def test_fifty_classes_fit_the_width_with_counts_only():
    rng = np.random.default_rng(0)
    matrix = rng.poisson(0.3, (50, 50)) + np.diag(rng.integers(2, 9, 50))
    (rect, text), spec = layers(K.confusion_matrix_chart(matrix, CLASSES, max_px=1000))
    assert spec["width"] == {"step": 20}
    assert text["encoding"]["text"] == {"field": "count", "type": "quantitative", "format": ".0f"}
    (rect,), spec = layers(K.confusion_matrix_chart(matrix, CLASSES, max_px=640))  # 14 px: no text
    assert spec["width"] == {"step": 14}


def test_bad_matrices_are_refused_with_a_message():
    with pytest.raises(ValueError, match="must be 5x5 finite counts"):
        K.confusion_matrix_chart([[1, 2], [3, 4]], FIVE)
    with pytest.raises(ValueError, match="must be 2x2 finite counts"):
        K.confusion_matrix_chart([[1, float("inf")], [3, 4]], FIVE[:2])
    with pytest.raises(ValueError, match="order must hold each class once"):
        K.confusion_matrix_chart(MATRIX, FIVE, order=FIVE[:4] + ["dog"])
    with pytest.raises(ValueError, match="more than this view draws"):
        K.confusion_matrix_chart([[0]], [f"c{i}" for i in range(K.MAX_CLASSES + 1)])


def test_the_two_run_difference_is_b_minus_a_most_improved_first():
    better = ACCURACY | {"rooster": 0.9, "siren": 0.6}
    spec = K.class_diff_chart(ACCURACY, better, "base", "new").to_dict()
    rows = spec["datasets"][spec["data"]["name"]]
    assert [(r["class"], round(r["difference"], 6)) for r in rows] == [
        ("Rooster", 0.4), ("Clapping", 0), ("Dog", 0), ("Rain", 0), ("Siren", -0.4)]
    assert spec["encoding"]["color"]["scale"]["domain"] == [-0.4, 0.4]
    assert spec["encoding"]["x"]["title"] == "accuracy: new minus base"


def test_a_single_category_draws_no_legend():
    spec = per_class_chart({"a": 0.5, "b": 0.7}, ["a", "b"]).to_dict()  # your own classes: no categories
    assert spec["encoding"]["color"] == {"value": "#4c78a8"}  # one colour, so no legend at all
    spec = per_class_chart(ACCURACY, FIVE).to_dict()
    assert spec["encoding"]["color"]["legend"]["orient"] == "bottom"
