"""AudioCNN: the seed's ResNet-34-style network over log-mel spectrograms.

    input (batch, 1, 128 mels, frames)
    layer1   stem: 7x7/2 conv (64) -> BN -> ReLU -> 3x3/2 max pool
    layer2   3 residual blocks,  64 channels
    layer3   4 residual blocks, 128 channels (first block downsamples /2)
    layer4   6 residual blocks, 256 channels (first block downsamples /2)
    layer5   3 residual blocks, 512 channels (first block downsamples /2)
    head     global average pool -> dropout 0.5 -> linear (50 classes)

At the defaults: 21.3 M parameters, ~7.95 GFLOP for a 5 s clip (128 x 431).
Layer names are the seed's, because its clients parse them: `layer1` is the
stem, `layer2`..`layer5` the stages, and block i of stage s exposes
`layer{s}.block-{i}.conv` (after the residual sum, before the ReLU) and
`layer{s}.block-{i}.relu`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 50
    stem_channels: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    dropout: float = 0.5

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["depths"] = list(self.widths), list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        kwargs = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("widths", "depths"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with BN; a 1x1 projection on the skip when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor, captured: dict | None = None, prefix: str = "") -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        summed = self.bn2(self.conv2(out)) + self.shortcut(x)
        out = F.relu(summed)
        if captured is not None:
            captured[f"{prefix}.conv"] = summed
            captured[f"{prefix}.relu"] = out
        return out


def make_stage(in_channels: int, out_channels: int, depth: int, stride: int) -> nn.ModuleList:
    """`depth` blocks; the first one changes width and downsamples by `stride`."""
    blocks = [ResidualBlock(in_channels, out_channels, stride)]
    blocks += [ResidualBlock(out_channels, out_channels) for _ in range(depth - 1)]
    return nn.ModuleList(blocks)


class AudioCNN(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        if len(config.widths) != len(config.depths):
            raise ValueError("widths and depths must have the same length")
        self.config = config
        self.layer1 = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(1, config.stem_channels, 7, stride=2, padding=3, bias=False),
            bn=nn.BatchNorm2d(config.stem_channels),
            relu=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        ))
        in_ch = config.stem_channels
        for s, (width, depth) in enumerate(zip(config.widths, config.depths, strict=True)):
            stride = 1 if s == 0 else 2
            setattr(self, f"layer{s + 2}", make_stage(in_ch, width, depth, stride))
            in_ch = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_ch, config.num_classes)
        self._init_weights()

    @property
    def stage_names(self) -> list[str]:
        return [f"layer{s + 2}" for s in range(len(self.config.widths))]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # A small head starts training near uniform probabilities (and keeps an
        # untrained model from claiming 100% confidence in anything).
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, capture: bool = False):
        """x: (batch, 1, n_mels, frames) -> logits (batch, classes).

        With capture=True returns (logits, {name: tensor}) in network order:
        layer1, then for each stage its blocks' .conv/.relu and the stage output.
        """
        captured: dict[str, torch.Tensor] | None = {} if capture else None
        x = self.layer1(x)
        if captured is not None:
            captured["layer1"] = x
        for name in self.stage_names:
            for i, block in enumerate(getattr(self, name)):
                x = block(x, captured, prefix=f"{name}.block-{i}")
            if captured is not None:
                captured[name] = x
        logits = self.fc(self.dropout(torch.flatten(self.pool(x), 1)))
        return (logits, captured) if capture else logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def display_name(module_name: str) -> str:
    """state_dict-style name -> the name the API shows: "layer3.0.conv1" -> "layer3.block-0.conv1"."""
    parts = module_name.split(".")
    if len(parts) > 1 and parts[0].startswith("layer") and parts[0] != "layer1" and parts[1].isdigit():
        parts[1] = f"block-{parts[1]}"
    return ".".join(parts)


def describe_layers(model: AudioCNN, n_mels: int = 128, frames: int = 431) -> list[dict]:
    """Every layer in network order with its output shape for one (1, 1, n_mels, frames) input.

    Each row: name (as the API shows it), type, output_shape (without batch),
    params (including submodules), depth (0 for layer1..layerN and the head,
    1 for a block or a stem part, 2 for a block's parts, ...). The default
    input is a 5 s clip. Identity skips are left out: they compute nothing.
    """
    shapes: dict[nn.Module, list[int]] = {}

    def hook(module, _inputs, output):
        shapes[module] = list(output.shape[1:])

    modules = [(name, m) for name, m in model.named_modules() if name]
    handles = [m.register_forward_hook(hook) for _, m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, n_mels, frames, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    rows = []
    for name, module in modules:
        if isinstance(module, nn.Identity):
            continue
        if isinstance(module, nn.ModuleList):  # a stage: its output is its last block's
            shape = shapes[module[-1]]
        else:
            shape = shapes[module]
        shown = display_name(name)
        rows.append({
            "name": shown,
            "type": "Stage" if isinstance(module, nn.ModuleList) else type(module).__name__,
            "output_shape": shape,
            "params": sum(p.numel() for p in module.parameters()),
            "depth": shown.count("."),
        })
    return rows
