"""The HTTP contract (v1): request/response models and the wire <-> Analysis conversion.

The default response is the seed's layout, key for key (including its
spelling `input_spectogram`), so the seed's Next.js visualizer works
unchanged. With `"encoding": "f16"` every array's `values` list becomes
`data`: base64 of little-endian float16, row-major, same `shape`.

Both directions live here so that the server and the HTTP client can never
disagree: `analysis_to_wire` (server) and `analysis_from_wire` (client).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.results import Analysis, ChannelMaps, ModelInfo, Prediction, Saliency, Window

API_VERSION = "v1"


# -- requests -----------------------------------------------------------------------


class EvaluateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(3, ge=1, le=50, description="How many classes to return, best first.")
    feature_maps: Literal["stages", "blocks", "none"] = Field(
        "blocks", description="Channel-mean maps for every stage, every block too, or none.")
    encoding: Literal["json", "f16"] = Field(
        "json", description="json: arrays as nested lists (seed layout); f16: base64 float16.")
    window_hop: float = Field(
        2.5, ge=0.25, le=5.0, description="Seconds between 5 s windows for clips longer than 5 s.")
    channels_of: str | None = Field(
        None, max_length=64, description="A layer name: also return its most active channels.")
    channels_top: int = Field(8, ge=1, le=64, description="How many channels for channels_of.")
    saliency: Literal["gradcam", "integrated_gradients"] | None = Field(
        None, description="Also return a saliency map over the spectrogram (core/saliency.py).")
    saliency_target: str | None = Field(
        None, max_length=64, description="The class to explain (a name from GET /classes); default the top-1.")
    saliency_layer: str | None = Field(
        None, max_length=16, description="Grad-CAM's stage (layer1..layer5); default the last one.")
    embedding: bool = Field(False, description="Also return the pooled features the classifier reads.")


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio_data: str = Field(description="Base64 of the audio file's bytes (WAV, FLAC, OGG, MP3).")
    options: EvaluateOptions = Field(default_factory=EvaluateOptions)


class BadBase64Error(ValueError):
    code = "bad_base64"


def decode_audio_data(text: str) -> bytes:
    """Base64 text (optionally a data: URL) -> bytes; BadBase64Error with a readable message."""
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]  # what FileReader.readAsDataURL produces
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadBase64Error(
            "audio_data is not valid base64: send the audio file's bytes base64-encoded."
        ) from None


# -- responses (documentation of the wire format; the server builds plain dicts) ----------


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class WirePrediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: str = Field(alias="class")
    confidence: float
    category: str


class WireArray(BaseModel):
    shape: list[int]
    values: list[Any] | None = Field(None, description="Nested lists (encoding=json).")
    data: str | None = Field(None, description="Base64 float16, little-endian (encoding=f16).")


class WireWaveform(BaseModel):
    values: list[float] | None = None
    data: str | None = None
    shape: list[int] | None = None
    sample_rate: int
    duration: float


class WireWindow(BaseModel):
    start: float
    end: float
    predictions: list[WirePrediction]


class WireModel(BaseModel):
    name: str
    checkpoint_id: str | None
    trained: bool
    num_classes: int
    device: str


class EvaluateResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    predictions: list[WirePrediction]
    visualization: dict[str, WireArray]
    input_spectrogram: WireArray = Field(alias="input_spectogram")
    waveform: WireWaveform
    windows: list[WireWindow] = []
    channel_maps: dict[str, Any] | None = None
    saliency: dict[str, Any] | None = Field(
        None, description="{method, target, layer, shape: [n_mels, frames], values | data}, values in [0, 1].")
    embedding: WireArray | None = Field(None, description="Pooled features before the classifier, shape [D].")
    model: WireModel
    timing_ms: dict[str, float]


# -- conversion --------------------------------------------------------------------


def encode_array(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if encoding == "f16":
        raw = arr.astype("<f2").tobytes()
        return {"shape": list(arr.shape), "data": base64.b64encode(raw).decode("ascii")}
    # orjson serialises the ndarray itself (OPT_SERIALIZE_NUMPY): no .tolist() copy.
    return {"shape": list(arr.shape), "values": arr}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    if d.get("data") is not None:
        flat = np.frombuffer(base64.b64decode(d["data"]), dtype="<f2").astype(np.float32)
        return flat.reshape(d["shape"])
    return np.asarray(d["values"], dtype=np.float32).reshape(d["shape"])


def _predictions_to_wire(preds: list[Prediction]) -> list[dict]:
    return [{"class": p.label, "confidence": p.confidence, "category": p.category} for p in preds]


def _predictions_from_wire(items: list[dict]) -> list[Prediction]:
    return [Prediction(label=p["class"], confidence=float(p["confidence"])) for p in items]


def analysis_to_wire(a: Analysis, encoding: str = "json") -> dict[str, Any]:
    wave = encode_array(a.waveform, encoding)
    if encoding == "json":
        del wave["shape"]  # the seed's waveform has no shape
    wave.update(sample_rate=a.sample_rate, duration=a.duration)
    body: dict[str, Any] = {
        "predictions": _predictions_to_wire(a.predictions),
        "visualization": {name: encode_array(m, encoding) for name, m in a.feature_maps.items()},
        "input_spectogram": encode_array(a.spectrogram, encoding),
        "waveform": wave,
        "windows": [
            {"start": w.start, "end": w.end, "predictions": _predictions_to_wire(w.predictions)}
            for w in a.windows
        ],
        "model": model_info_to_wire(a.model),
        "timing_ms": {k: round(v, 3) for k, v in a.timing_ms.items()},
    }
    if a.channel_maps is not None:
        body["channel_maps"] = {
            "layer": a.channel_maps.layer,
            "channels": a.channel_maps.channels,
            "activation": a.channel_maps.activation,
            **encode_array(a.channel_maps.maps, encoding),
        }
    if a.saliency is not None:
        body["saliency"] = saliency_to_wire(a.saliency, encoding)
    if a.embedding is not None:
        body["embedding"] = encode_array(a.embedding, encoding)
    return body


def saliency_to_wire(s: Saliency, encoding: str) -> dict[str, Any]:
    return {"method": s.method, "target": s.target, "layer": s.layer, **encode_array(s.values, encoding)}


def saliency_from_wire(d: dict[str, Any] | None) -> Saliency | None:
    if not d:
        return None
    return Saliency(method=d["method"], target=d["target"], layer=d["layer"], values=decode_array(d))


def analysis_from_wire(d: dict[str, Any]) -> Analysis:
    wave = d["waveform"]
    if wave.get("data") is not None:
        waveform = decode_array(wave)
    else:
        waveform = np.asarray(wave["values"], dtype=np.float32)
    detail = None
    if d.get("channel_maps"):
        c = d["channel_maps"]
        detail = ChannelMaps(layer=c["layer"], channels=list(c["channels"]),
                             activation=[float(v) for v in c["activation"]], maps=decode_array(c))
    return Analysis(
        predictions=_predictions_from_wire(d["predictions"]),
        spectrogram=decode_array(d["input_spectogram"]),
        feature_maps={name: decode_array(v) for name, v in d["visualization"].items()},
        waveform=waveform,
        sample_rate=int(wave["sample_rate"]),
        duration=float(wave["duration"]),
        model=model_info_from_wire(d["model"]),
        windows=[Window(start=float(w["start"]), end=float(w["end"]),
                        predictions=_predictions_from_wire(w["predictions"]))
                 for w in d.get("windows", [])],
        channel_maps=detail,
        saliency=saliency_from_wire(d.get("saliency")),
        embedding=decode_array(d["embedding"]) if d.get("embedding") else None,
        timing_ms={k: float(v) for k, v in d.get("timing_ms", {}).items()},
    )


def model_info_to_wire(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "checkpoint_id": info.checkpoint_id, "trained": info.trained,
            "num_classes": info.num_classes, "device": info.device}


def model_info_from_wire(m: dict[str, Any]) -> ModelInfo:
    return ModelInfo(name=m["name"], checkpoint_id=m.get("checkpoint_id"), trained=bool(m["trained"]),
                     num_classes=int(m["num_classes"]), device=m.get("device", "?"))


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
