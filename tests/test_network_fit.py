"""core.network_charts.fit_view and the stage labels: the 3-D view's camera for any widths and depths."""

from __future__ import annotations

from core import network_charts as N


def rows(stages: list[tuple[int, int, int, int]]) -> list[dict]:
    """GET /model-like rows: a stem, then (channels, h, w, blocks) per stage, then a head layer."""
    out = [{"name": "layer1", "type": "Stem", "depth": 0, "output_shape": [16, 32, 108], "params": 1}]
    for s, (channels, h, w, blocks) in enumerate(stages, start=2):
        out.append({"name": f"layer{s}", "type": "Stage", "depth": 0, "output_shape": [channels, h, w], "params": 1})
        out += [{"name": f"layer{s}.block-{i}", "type": "ResidualBlock", "depth": 1,
                 "output_shape": [channels, h, w], "params": 1} for i in range(blocks)]
    out.append({"name": "fc", "type": "Linear", "depth": 0, "output_shape": [5], "params": 1})
    return out


DEFAULT = rows([(64, 32, 108, 3), (128, 16, 54, 4), (256, 8, 27, 6), (512, 4, 14, 3)])
SMALL = rows([(8, 32, 108, 1), (16, 16, 54, 1)])


def test_the_camera_aims_at_the_middle_of_any_model_and_zooms_to_its_size():
    views = {}
    for name, layers in (("default", DEFAULT), ("small", SMALL)):
        blocks = N.architecture_blocks(layers)
        labels = N.stage_labels(blocks)
        view = N.fit_view(blocks, labels)
        xs = [b["x0"] for b in blocks] + [b["x1"] for b in blocks] + [lab["position"][0] for lab in labels]
        assert view["target"][0] == (max(xs) + min(xs)) / 2
        views[name] = view
    assert views["small"]["zoom"] > views["default"]["zoom"]  # a shorter chain is drawn larger
    assert N.fit_view([], [])["zoom"] == 0


def test_every_stage_is_labelled_and_narrow_neighbours_are_staggered():
    labels = N.stage_labels(N.architecture_blocks(SMALL))
    assert [lab["text"] for lab in labels] == ["stem", "layer2\n8 ch", "layer3\n16 ch", "head"]
    fronts = [lab["position"][1] for lab in labels[1:]]
    assert fronts[1] == fronts[0] - 16 and fronts[2] == fronts[0]  # layer3 sits a row lower than layer2
    wide = {lab["text"].split("\n")[0]: lab["position"][1] for lab in N.stage_labels(N.architecture_blocks(DEFAULT))}
    assert wide["layer4"] == wide["layer5"] == wide["layer2"] and wide["layer3"] == wide["layer2"] - 16
