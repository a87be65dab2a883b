"""Export a checkpoint to ONNX, for on-device inference (phones, browsers, anything with onnxruntime).

    export_onnx(checkpoint, out)       write out.onnx; returns its metadata (classes, features, id)
    read_metadata(path)                that metadata back from the file (onnx's metadata_props)

    python -m core.onnx_export runs/baseline/best.pt audio-cnn.onnx

The graph is the network, spectrogram in, probabilities out:

    input   "logmel"         (batch, 1, n_mels, frames) float32 dB   (batch and frames dynamic)
    output  "probabilities"  (batch, classes) float32, softmax

The log-mel front end stays outside the graph: it is the seed's chain, fixed in
DESIGN.md and stored in the file's metadata ("feature_config": n_fft 2048, hop
512, 128 HTK mel bins, 10*log10 clamped at 1e-10), which every platform has a
library for; ONNX's STFT support varies by runtime. The metadata also holds
"classes" (JSON list, index = output) and "checkpoint_id". Needs `onnx` and
`onnxscript` (torch's exporter) to export, `onnxruntime` to run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from core.checkpoint import CheckpointError, load_checkpoint
from core.model import AudioCNN

OPSET = 18


class _Probabilities(nn.Module):
    def __init__(self, model: AudioCNN):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(logmel), dim=1)


def export_onnx(checkpoint: str | Path, out: str | Path, frames: int = 431) -> dict:
    """Write `checkpoint` (ours or the seed's) as an ONNX graph at `out`; returns the metadata written."""
    import onnx

    ckpt = load_checkpoint(checkpoint)
    net = _Probabilities(ckpt.build_model()).eval()
    example = torch.zeros(1, 1, ckpt.feature_config.n_mels, frames)
    batch, time = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("frames", min=8, max=100_000)
    program = torch.onnx.export(net, (example,), input_names=["logmel"], output_names=["probabilities"],
                                dynamic_shapes={"logmel": {0: batch, 3: time}}, opset_version=OPSET,
                                dynamo=True, verbose=False)
    model = program.model_proto
    metadata = {"classes": json.dumps(ckpt.classes), "feature_config": json.dumps(ckpt.feature_config.to_dict()),
                "checkpoint_id": ckpt.id, "model_config": json.dumps(ckpt.model_config.to_dict()),
                "input": "logmel (batch, 1, n_mels, frames) float32 dB", "output": "probabilities (batch, classes)"}
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out))
    return metadata


def read_metadata(path: str | Path) -> dict:
    """The metadata export_onnx wrote: classes (list), feature_config (dict), checkpoint_id, ..."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    for key in ("classes", "feature_config", "model_config"):
        if key in props:
            props[key] = json.loads(props[key])
    return props


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.onnx_export", description="Export a checkpoint to ONNX.")
    p.add_argument("checkpoint", help="best.pt (or the seed's best_model.pth)")
    p.add_argument("out", help="the .onnx file to write")
    args = p.parse_args(argv)
    try:
        meta = export_onnx(args.checkpoint, args.out)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, checkpoint {meta['checkpoint_id']}, "
          f"{len(json.loads(meta['classes']))} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
