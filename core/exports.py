"""Downloads: what the dashboard shows, as files. Pure functions of an Analysis (or a table) -> bytes.

    predictions_csv / predictions_json   the clip's top-k (and its 5 s windows, in the JSON)
    feature_maps_npz                     every channel-mean map, raw float32, layer names as keys
    spectrogram_npz                      the spectrogram (and the saliency on screen) as arrays
    spectrogram_png                      the log-mel input as an image, the saliency blended on top if given
    table_csv                            any table (the per-clip results of a run) as CSV
    file_name(clip, what, ext)           names that say what and which clip: <clip>-<what>.<ext>

Each export holds exactly the numbers the page draws (tests/test_exports.py
reads them back against the Analysis).
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd

from core.live_charts import spectrogram_image
from core.results import Analysis, Saliency

SALIENCY_RGB = np.array([0, 229, 255], dtype=np.float32)  # cyan: apart from every magma colour


def file_name(clip: str, what: str, ext: str) -> str:
    """'<clip>-<what>.<ext>' with anything but letters, digits, '.', '_' and '-' in `what` made '-'."""
    return f"{clip}-{re.sub(r'[^A-Za-z0-9._-]+', '-', what)}.{ext}"


def predictions_frame(analysis: Analysis) -> pd.DataFrame:
    return pd.DataFrame([{"rank": i, "class": p.label, "category": p.category, "confidence": p.confidence}
                         for i, p in enumerate(analysis.predictions, 1)])


def predictions_csv(analysis: Analysis) -> bytes:
    return predictions_frame(analysis).to_csv(index=False).encode()


def predictions_json(analysis: Analysis) -> bytes:
    """{"model", "duration", "predictions": [...], "windows": [{"start", "end", "predictions"}]}."""
    def preds(items):
        return [{"class": p.label, "category": p.category, "confidence": p.confidence} for p in items]

    body = {"model": {"name": analysis.model.name, "checkpoint_id": analysis.model.checkpoint_id,
                      "trained": analysis.model.trained},
            "duration": analysis.duration, "predictions": preds(analysis.predictions),
            "windows": [{"start": w.start, "end": w.end, "predictions": preds(w.predictions)}
                        for w in analysis.windows]}
    return (json.dumps(body, indent=2) + "\n").encode()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buf.getvalue()


def feature_maps_npz(analysis: Analysis) -> bytes:
    """NPZ: one float32 (h, w) array per layer name (`layer1`, `layer2.block-0.conv`, ...), network
    order, plus `input_spectrogram` (n_mels, frames) dB; the channels on screen as `<layer>.channels`."""
    arrays = dict(analysis.feature_maps) | {"input_spectrogram": analysis.spectrogram}
    if analysis.channel_maps is not None:
        arrays[f"{analysis.channel_maps.layer}.channels"] = analysis.channel_maps.maps
    return _npz(arrays)


def spectrogram_npz(spec: np.ndarray, saliency: Saliency | None = None) -> bytes:
    """NPZ: `input_spectrogram` (n_mels, frames) dB and, when given, `saliency` (same shape, [0, 1])."""
    return _npz({"input_spectrogram": spec} | ({"saliency": saliency.values} if saliency is not None else {}))


def blend(rgb: np.ndarray, saliency: np.ndarray, opacity: float, row_scale: int = 2) -> np.ndarray:
    """Spectrogram RGB (rows, frames, 3) uint8 with `saliency` (n_mels, frames) in [0, 1] blended in
    cyan: each pixel moves `opacity * value` of the way to cyan (highest band at the top, as the image)."""
    alpha = np.repeat(np.clip(saliency[::-1], 0, 1), row_scale, axis=0)[..., None] * float(np.clip(opacity, 0, 1))
    out = rgb.astype(np.float32) * (1 - alpha) + SALIENCY_RGB * alpha
    return out.round().astype(np.uint8)


def spectrogram_png(spec: np.ndarray, saliency: Saliency | None = None, opacity: float = 0.6) -> bytes:
    """The spectrogram (n_mels, frames) dB as a PNG, one pixel per frame and two per mel band."""
    from PIL import Image  # Pillow comes with Streamlit

    rgb = spectrogram_image(spec)
    if saliency is not None:
        rgb = blend(rgb, saliency.values, opacity)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def table_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()
