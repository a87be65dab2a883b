"""Saliency: which parts of the spectrogram a class's score depends on (Captum).

    saliency_map(model, spec, method, target)  -> (values (n_mels, frames) in [0, 1], layer)

Two methods, both computed by Captum rather than hand-written hooks:

    gradcam               LayerGradCam at a stage (default the last one, `layer5`): the
                          stage's channels weighted by the mean gradient of the target's
                          logit, summed, ReLU'd, bilinearly upsampled to the input grid.
                          Coarse (the last stage is 1/32 of the input) and cheap: one
                          forward and one backward pass.
    integrated_gradients  IntegratedGradients on the input itself: the gradient averaged
                          along a straight path from a baseline to the clip, times the
                          difference. Full resolution; `steps` forward+backward passes.
                          The baseline is the clip's own quietest value everywhere (a
                          silent clip at the same normalisation), and the map is the
                          attribution's magnitude.

Every map is scaled to [0, 1] by its maximum (an all-zero map stays zero: the
target's score does not depend on the input there, e.g. Grad-CAM of a class
the clip argues against). Maps are what `Analysis.saliency` carries.

Memory: Integrated Gradients runs its path in chunks of at most
`PATH_BUDGET_FRAMES` input frames (four 5 s clips), whatever the clip's length.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

from core.model import AudioCNN

SaliencyMethod = Literal["gradcam", "integrated_gradients"]
METHODS: tuple[str, ...] = ("gradcam", "integrated_gradients")
IG_STEPS = 32
PATH_BUDGET_FRAMES = 4 * 431  # frames of input per backward pass along the IG path


def stage_module(model: AudioCNN, layer: str) -> torch.nn.Module:
    """The module whose output is `layer` ("layer1" stem, "layer2".."layerN" stages).

    A stage is a ModuleList (never called itself): its output is its last block's.
    """
    names = ["layer1", *model.stage_names]
    if layer not in names:
        raise ValueError(f"Unknown stage {layer!r}; Grad-CAM works at one of: {', '.join(names)}.")
    module = getattr(model, layer)
    return module[-1] if isinstance(module, torch.nn.ModuleList) else module


def scale_unit(values: torch.Tensor) -> np.ndarray:
    """Any real map -> float32 in [0, 1] by its maximum; NaN/Inf and an all-zero map give zeros."""
    v = torch.nan_to_num(values.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    top = float(v.max()) if v.numel() else 0.0
    return (v / top if top > 0 else torch.zeros_like(v)).cpu().numpy().astype(np.float32)


def gradcam(model: AudioCNN, x: torch.Tensor, target: int, layer: str | None = None) -> tuple[np.ndarray, str]:
    """x (1, 1, n_mels, frames) -> Grad-CAM of class `target` at `layer` (default the last stage)."""
    layer = layer or model.stage_names[-1]
    cam = LayerGradCam(model, stage_module(model, layer))
    attr = cam.attribute(x, target=target, relu_attributions=True)            # (1, 1, h', w')
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return scale_unit(up[0, 0]), layer


def integrated_gradients(model: AudioCNN, x: torch.Tensor, target: int,
                         steps: int = IG_STEPS) -> tuple[np.ndarray, str]:
    """x (1, 1, n_mels, frames) -> |Integrated Gradients| of class `target` w.r.t. the input."""
    baseline = torch.full_like(x, float(x.min()))
    chunk = max(1, PATH_BUDGET_FRAMES // max(int(x.shape[-1]), 1))
    attr = IntegratedGradients(model).attribute(
        x.requires_grad_(), baselines=baseline, target=target, n_steps=steps, internal_batch_size=min(chunk, steps))
    return scale_unit(attr[0, 0]), "input"  # the positive part: evidence for the target


def saliency_map(model: AudioCNN, spec: torch.Tensor, method: SaliencyMethod, target: int,
                 layer: str | None = None, steps: int = IG_STEPS) -> tuple[np.ndarray, str]:
    """spec (n_mels, frames) model input -> (map (n_mels, frames) in [0, 1], the layer it explains).

    The model must be in eval mode (BatchNorm statistics and dropout fixed);
    gradients are taken w.r.t. activations and input only, never accumulated
    into the weights.
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = spec.detach().float().reshape(1, 1, *spec.shape[-2:]).clone()  # a normal tensor, not an inference one
        if method == "gradcam":
            return gradcam(model, x, target, layer)
        if method == "integrated_gradients":
            return integrated_gradients(model, x, target, steps)
    raise ValueError(f"Unknown saliency method {method!r}; choose one of: {', '.join(METHODS)}.")
