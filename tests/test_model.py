"""core.model: the seed's architecture, its layer names, sizes and cost."""

from __future__ import annotations

import pytest
import torch
from conftest import DEFAULT_MODEL_PARAMS
from torch.utils.flop_counter import FlopCounterMode

from core.model import AudioCNN, ModelConfig, count_parameters, describe_layers, display_name


@pytest.fixture(scope="module")
def model():
    return AudioCNN().eval()


def test_default_model_has_21_3_million_parameters(model):
    assert count_parameters(model) == DEFAULT_MODEL_PARAMS


def test_a_5s_clip_costs_7_95_gflop(model):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 128, 431))
    assert counter.get_total_flops() / 1e9 == pytest.approx(7.95, abs=0.01)


def test_capture_returns_the_seed_layer_names_in_network_order_with_5s_shapes(model):
    with torch.no_grad():
        logits, maps = model(torch.randn(2, 1, 128, 431), capture=True)
    assert logits.shape == (2, 50)
    expected = ["layer1"]
    for stage, depth in zip(range(2, 6), (3, 4, 6, 3), strict=True):
        for i in range(depth):
            expected += [f"layer{stage}.block-{i}.conv", f"layer{stage}.block-{i}.relu"]
        expected.append(f"layer{stage}")
    assert list(maps) == expected
    assert maps["layer1"].shape == (2, 64, 32, 108)
    assert maps["layer2"].shape == (2, 64, 32, 108)
    assert maps["layer3.block-0.conv"].shape == (2, 128, 16, 54)
    assert maps["layer4"].shape == (2, 256, 8, 27)
    assert maps["layer5"].shape == (2, 512, 4, 14)


def test_conv_is_before_the_relu_and_relu_is_its_rectification(model):
    with torch.no_grad():
        _, maps = model(torch.randn(1, 1, 128, 100), capture=True)
    conv, relu = maps["layer3.block-1.conv"], maps["layer3.block-1.relu"]
    assert (conv < 0).any()
    torch.testing.assert_close(relu, torch.relu(conv))
    torch.testing.assert_close(maps["layer3"], maps["layer3.block-3.relu"])


def test_capture_does_not_change_the_logits(model):
    x = torch.randn(1, 1, 128, 200)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, capture=True)[0])


def test_any_clip_length_works_thanks_to_global_pooling(model):
    with torch.no_grad():
        for frames in (5, 87, 431, 2600):
            assert model(torch.zeros(1, 1, 128, frames)).shape == (1, 50)


def test_widths_depths_and_classes_are_constructor_arguments():
    config = ModelConfig(num_classes=7, stem_channels=8, widths=(8, 16), depths=(1, 2))
    small = AudioCNN(config).eval()
    with torch.no_grad():
        logits, maps = small(torch.zeros(1, 1, 128, 50), capture=True)
    assert logits.shape == (1, 7)
    assert list(maps) == ["layer1", "layer2.block-0.conv", "layer2.block-0.relu", "layer2",
                          "layer3.block-0.conv", "layer3.block-0.relu",
                          "layer3.block-1.conv", "layer3.block-1.relu", "layer3"]
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_mismatched_widths_and_depths_are_refused():
    with pytest.raises(ValueError, match="same length"):
        AudioCNN(ModelConfig(widths=(8, 16), depths=(1,)))


def test_layer_table_lists_every_layer_with_shapes_and_params(model):
    rows = describe_layers(model)
    names = [r["name"] for r in rows]
    assert names[:5] == ["layer1", "layer1.conv", "layer1.bn", "layer1.relu", "layer1.pool"]
    assert names[-3:] == ["pool", "dropout", "fc"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["layer1.conv"]["output_shape"] == [64, 64, 216]
    assert by_name["layer3.block-0"]["output_shape"] == [128, 16, 54]
    assert by_name["layer3.block-0.shortcut.0"]["params"] == 64 * 128
    assert by_name["fc"]["params"] == 512 * 50 + 50
    assert sum(r["params"] for r in rows if r["depth"] == 0) == count_parameters(model)
    assert not any(r["type"] == "Identity" for r in rows)


def test_display_names_use_the_block_spelling():
    assert display_name("layer3.0.conv1") == "layer3.block-0.conv1"
    assert display_name("layer1.conv") == "layer1.conv"
    assert display_name("fc") == "fc"
