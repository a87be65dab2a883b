"""Predictor: a checkpoint (or an untrained model) -> typed analyses of clips.

    samples (n,) float32 at 44.1 kHz
      -> LogMel          spectrogram (128, frames) dB
      -> AudioCNN        logits + captured feature maps
      -> Analysis        top-k, spectrogram, channel-mean maps, waveform envelope,
                         per-window top-k for clips longer than 5 s, timings

The same `Analysis` object comes out of the in-process backend and, decoded
from JSON, out of the HTTP backend (`core.schema` converts both ways).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from core.audio import SAMPLE_RATE, decode_audio
from core.checkpoint import Checkpoint, CheckpointError, load_checkpoint, resolve_checkpoint
from core.features import FeatureConfig, LogMel
from core.labels import CLASSES, category_of
from core.microbatcher import MicroBatcher
from core.model import AudioCNN, ModelConfig, describe_layers
from core.results import (  # noqa: F401  (re-exported: the result types are part of this API)
    WINDOW_SECONDS,
    Analysis,
    ChannelMaps,
    FeatureMapMode,
    ModelInfo,
    OptionError,
    Prediction,
    Saliency,
    Window,
    top_k_predictions,
    waveform_envelope,
    window_starts,
)
from core.settings import Settings


def _plain(meta: dict) -> dict:
    """Checkpoint metadata restricted to JSON-friendly scalars."""
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}


def calibrate_batchnorm(model: AudioCNN, features: LogMel, clips: int = 4, seconds: float = 1.0) -> None:
    """Set BatchNorm running statistics from white-noise clips of varied loudness."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    n = int(seconds * SAMPLE_RATE)
    gains = torch.logspace(-3, 0, clips)[:, None]
    model.train()
    with torch.no_grad():
        model(features(torch.randn(clips, n) * gains).unsqueeze(1))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


class Predictor:
    """Thread-safe: forwards are serialised (on CPU two at once only fight for the cores).

    With `enable_batching`, concurrent forwards are instead gathered into
    batched ones by a `core.microbatcher.MicroBatcher` (one worker thread).
    """

    def __init__(self, model: AudioCNN, feature_config: FeatureConfig, classes: list[str],
                 info: ModelInfo, device: str | torch.device | None = None, clip_seconds: float | None = None):
        # Clips shorter than the training clips are zero-padded to their length, as training padded
        # them (core.datasets.fit_clip); longer ones are classified whole, with per-window results.
        self.clip_samples = round(clip_seconds * SAMPLE_RATE) if clip_seconds else None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.features = LogMel(feature_config).to(self.device)
        self.feature_config = feature_config
        self.classes = list(classes)
        self.info = ModelInfo(**{**info.__dict__, "device": str(self.device)})
        self._lock = threading.Lock()
        self._layers: list[dict] | None = None
        self.batcher: MicroBatcher | None = None

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> "Predictor":
        ckpt: Checkpoint = load_checkpoint(path)
        name = ckpt.meta.get("run_name") or Path(path).parent.name or Path(path).stem
        info = ModelInfo(name=f"AudioCNN ({name})", checkpoint_id=ckpt.id, trained=True,
                         num_classes=len(ckpt.classes), meta=ckpt.meta)
        clip_seconds = ckpt.meta.get("clip_seconds")
        clip_seconds = float(clip_seconds) if isinstance(clip_seconds, (int, float)) and 0 < clip_seconds <= 60 else None
        return cls(ckpt.build_model(), ckpt.feature_config, ckpt.classes, info, device, clip_seconds)

    @classmethod
    def untrained(cls, seed: int = 0, device: str | None = None,
                  model_config: ModelConfig = ModelConfig()) -> "Predictor":
        """Random weights (seeded): the shapes are real, the predictions are meaningless.

        BatchNorm statistics are calibrated on a few noise clips, which keeps
        activations in range for noise-like input (without it, random weights
        over raw dB input put ~100% on one class for every clip). Input unlike
        noise, such as a pure tone, can still saturate: it is random either way.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AudioCNN(model_config)
            calibrate_batchnorm(model, LogMel(FeatureConfig()))
        info = ModelInfo(name="AudioCNN (untrained)", checkpoint_id=None, trained=False,
                         num_classes=model_config.num_classes)
        names = [*CLASSES, *(f"class_{i}" for i in range(len(CLASSES), model_config.num_classes))]
        return cls(model, FeatureConfig(), names[: model_config.num_classes], info, device)

    @classmethod
    def from_settings(cls, settings: Settings, checkpoint: str | Path | None = None,
                      device: str | None = None) -> "Predictor":
        """What core.checkpoint's policy picks (`checkpoint`, else settings.checkpoint, else the
        run settings.run names, else the best run in settings.runs_dir), else untrained.

        With settings.checkpoint_id set, the loaded checkpoint must have that id
        (a deploy pins it): CheckpointError otherwise, and when there is nothing to load.
        """
        path = resolve_checkpoint(settings.runs_dir, checkpoint or settings.checkpoint, settings.run)
        expected = settings.checkpoint_id
        if path is None:
            if expected:
                raise CheckpointError(f"Checkpoint {expected} was pinned but no checkpoint was found "
                                      f"in {settings.runs_dir}.")
            return cls.untrained(device=device)
        predictor = cls.from_checkpoint(path, device=device)
        if expected and predictor.info.checkpoint_id != expected:
            raise CheckpointError(
                f"{path} is checkpoint {predictor.info.checkpoint_id}, but {expected} was pinned: the file "
                "changed after the deploy (retrained or overwritten). Redeploy to serve the new one.")
        return predictor

    def to(self, device: str | torch.device) -> "Predictor":
        """Move the model to `device` (e.g. after loading on CPU for a memory snapshot)."""
        with self._lock:
            self.device = torch.device(device)
            self.model = self.model.to(self.device)
            self.features = self.features.to(self.device)
            self.info = ModelInfo(**{**self.info.__dict__, "device": str(self.device)})
        return self

    def enable_batching(self, max_batch: int = 16, max_wait_ms: float = 5.0,
                        timeout_s: float | None = None) -> MicroBatcher:
        """Gather concurrent forwards into batches of up to `max_batch` 5 s clips.

        `max_batch` bounds both the clips in a pass and its input frames (as
        many as `max_batch` 5 s clips hold), so long clips batch fewer at a
        time; a caller waits at most `timeout_s` (core.microbatcher.ForwardTimeout).
        Idempotent: a second call keeps the running batcher.
        """
        if self.batcher is None:
            frames_5s = self.feature_config.frames(int(WINDOW_SECONDS * SAMPLE_RATE))
            self.batcher = MicroBatcher(self._locked_forward, max_items=max_batch, max_wait_ms=max_wait_ms,
                                        max_cost=max_batch * frames_5s, timeout_s=timeout_s)
        return self.batcher

    # -- analysis -----------------------------------------------------------------

    def analyze_bytes(self, data: bytes, max_seconds: float | None = 30.0, max_samples: int | None = None,
                      **options) -> Analysis:
        """Decode an audio file's bytes and analyse it; AudioError for bad input.

        `max_seconds` and `max_samples` (frames x channels) bound the decode: see core.audio.
        """
        t0 = time.perf_counter()
        audio = decode_audio(data, max_seconds=max_seconds, max_samples=max_samples)
        decode_ms = (time.perf_counter() - t0) * 1000
        result = self.analyze(audio.samples, **options)
        result.timing_ms = {"decode": decode_ms, **result.timing_ms}
        result.timing_ms["total"] += decode_ms
        return result

    def analyze(self, samples: np.ndarray, top_k: int = 3, feature_maps: FeatureMapMode = "blocks",
                window_hop: float = 2.5, channels_of: str | None = None,
                channels_top: int = 8, saliency: str | None = None, saliency_target: str | None = None,
                saliency_layer: str | None = None, embedding: bool = False) -> Analysis:
        """Analyse one clip: (n,) float32 mono at 44.1 kHz.

        With `saliency` ("gradcam" or "integrated_gradients") the result also
        carries a map of `saliency_target` (a class name; default the top-1)
        over the spectrogram (core.saliency); OptionError for an unknown class or stage.
        With `embedding`, also the (D,) pooled features the classifier reads.
        """
        explain = self._check_saliency(saliency, saliency_target, saliency_layer)
        t0 = time.perf_counter()
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device)
        model_input = self._padded(wave)
        with torch.inference_mode():
            spec = self.features(model_input)                # (1, n_mels, frames)
            t1 = time.perf_counter()
            capture = feature_maps != "none" or channels_of is not None or embedding
            logits, captured = self._forward(spec.unsqueeze(1), capture)
            probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
            t2 = time.perf_counter()
            maps = self._channel_means(captured, feature_maps)
            detail = self._top_channels(captured, channels_of, channels_top) if channels_of else None
            # the last stage's output, averaged over frequency and time: what model.pool hands the classifier
            pooled = captured[self.model.stage_names[-1]][0].float().mean(dim=(1, 2)).cpu().numpy() if embedding else None
            windows = self._windows(wave, top_k, window_hop)
        t3 = time.perf_counter()
        explained = self._saliency(spec[0], probs, *explain) if explain else None
        t4 = time.perf_counter()
        return Analysis(
            predictions=self._top_k(probs, top_k),
            spectrogram=spec[0].cpu().numpy(),
            feature_maps=maps,
            waveform=waveform_envelope(samples),
            sample_rate=SAMPLE_RATE,
            duration=len(samples) / SAMPLE_RATE,
            model=self.info,
            windows=windows,
            channel_maps=detail,
            saliency=explained,
            embedding=pooled,
            timing_ms={
                "features": (t1 - t0) * 1000,
                "forward": (t2 - t1) * 1000,
                "postprocess": (t3 - t2) * 1000,
                **({"saliency": (t4 - t3) * 1000} if explained else {}),
                "total": (t4 - t0) * 1000,
            },
        )

    def predict_batch(self, clips: list[np.ndarray], top_k: int = 3,
                      batch_size: int = 16) -> list[list[Prediction]]:
        """Top-k for many clips; clips of equal length share forward passes."""
        results: list[list[Prediction] | None] = [None] * len(clips)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(i)
        for indices in by_length.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = self._padded(torch.from_numpy(np.stack([clips[i] for i in chunk]).astype(np.float32)))
                for i, probs in zip(chunk, self.probabilities(batch), strict=True):
                    results[i] = self._top_k(probs, top_k)
        return results  # type: ignore[return-value]

    def probabilities(self, waves: torch.Tensor) -> np.ndarray:
        """(batch, samples) equal-length clips -> (batch, classes) softmax probabilities."""
        return self.spectrograms_and_probabilities(waves)[1]

    def spectrograms_and_probabilities(self, waves: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, samples) equal-length clips at 44.1 kHz -> spectrograms (batch, n_mels, frames) dB
        and softmax probabilities (batch, classes); through the micro-batcher when it is on."""
        waves = torch.as_tensor(waves, dtype=torch.float32)
        with torch.inference_mode():
            spec = self.features(waves.to(self.device))
            logits, _ = self._forward(spec.unsqueeze(1), False)
            return spec.cpu().numpy(), torch.softmax(logits.float(), dim=1).cpu().numpy()

    def architecture(self) -> dict:
        """What GET /model answers: model info, configs, every layer, the total parameter count."""
        layers = self.layers()
        fc = self.feature_config
        return {
            "model": {**vars(self.info), "meta": _plain(self.info.meta)},
            "config": self.model.config.to_dict(),
            "features": {**fc.to_dict(), "mel_frequencies_hz": fc.mel_frequencies().round(2).tolist()},
            "input_shape": [1, fc.n_mels, fc.frames(int(WINDOW_SECONDS * fc.sample_rate))],
            "layers": layers,
            "total_params": sum(r["params"] for r in layers if r["depth"] == 0),
        }

    def class_table(self) -> list[dict]:
        """What GET /classes answers: index, name and ESC-50 category ("unknown" for other names) of every output."""
        return [{"index": i, "name": c, "category": category_of(c)} for i, c in enumerate(self.classes)]

    def layers(self) -> list[dict]:
        """The architecture table (see `core.model.describe_layers`) for a 5 s clip."""
        if self._layers is None:
            frames = self.feature_config.frames(int(WINDOW_SECONDS * SAMPLE_RATE))
            model = AudioCNN(self.model.config)  # a CPU copy: hooks never touch the served model
            self._layers = describe_layers(model, self.feature_config.n_mels, frames)
        return self._layers

    # -- pieces ---------------------------------------------------------------------

    def _padded(self, wave: torch.Tensor) -> torch.Tensor:
        """(..., n) -> (..., max(n, clip_samples)): a short clip zero-padded as training padded it."""
        if self.clip_samples is None or wave.shape[-1] >= self.clip_samples:
            return wave
        return torch.nn.functional.pad(wave, (0, self.clip_samples - wave.shape[-1]))

    def _forward(self, x: torch.Tensor, capture: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (batch, 1, n_mels, frames) -> logits (batch, classes), captured maps (or {})."""
        if self.batcher is not None:
            return self.batcher.submit(x, capture)
        return self._locked_forward(x, capture)

    def _locked_forward(self, x: torch.Tensor, capture: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self._lock:
            out = self.model(x, capture=capture)
        return out if capture else (out, {})

    def _check_saliency(self, method: str | None, target: str | None,
                        layer: str | None) -> tuple[str, str | None, str | None] | None:
        """The saliency request, checked before any work: OptionError for an unknown method, class or stage."""
        if method is None:
            return None
        from core.saliency import METHODS, stage_module

        if method not in METHODS:
            raise OptionError(f"Unknown saliency method {method!r}; choose one of: {', '.join(METHODS)}.")
        if target is not None and target not in self.classes:
            raise OptionError(f"saliency_target {target[:64]!r} is not one of this model's classes "
                              "(GET /classes lists them).")
        if layer is not None:
            try:
                stage_module(self.model, layer)
            except ValueError as err:
                raise OptionError(str(err)) from None
        return method, target, layer

    def _saliency(self, spec: torch.Tensor, probs: np.ndarray, method: str, target: str | None,
                  layer: str | None) -> Saliency:
        from core.saliency import saliency_map

        index = self.classes.index(target) if target else int(np.argmax(probs))
        with self._lock:  # the served model: one user of it at a time, like a forward
            values, explained = saliency_map(self.model, spec, method, index, layer)  # type: ignore[arg-type]
        return Saliency(method=method, target=self.classes[index], layer=explained, values=values)

    def _top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        return top_k_predictions(probs, self.classes, k)

    @staticmethod
    def _channel_means(captured: dict[str, torch.Tensor], mode: FeatureMapMode) -> dict[str, np.ndarray]:
        if mode == "none":
            return {}
        names = [n for n in captured if mode == "blocks" or ".block-" not in n]
        means = [captured[n][0].float().mean(dim=0) for n in names]
        return {n: np.nan_to_num(m.cpu().numpy()) for n, m in zip(names, means, strict=True)}

    @staticmethod
    def _top_channels(captured: dict[str, torch.Tensor], layer: str, k: int) -> ChannelMaps:
        if layer not in captured:
            raise OptionError(f"Unknown layer {layer!r}; choose one of: {', '.join(captured)}.")
        fmap = captured[layer][0].float()                   # (channels, h, w)
        strength = fmap.mean(dim=(1, 2))
        k = max(1, min(k, fmap.shape[0]))
        top = torch.argsort(strength, descending=True)[:k]
        return ChannelMaps(
            layer=layer,
            channels=[int(i) for i in top],
            activation=[float(strength[i]) for i in top],
            maps=np.nan_to_num(fmap[top].cpu().numpy()),
        )

    def _windows(self, wave: torch.Tensor, top_k: int, hop_seconds: float) -> list[Window]:
        size = int(WINDOW_SECONDS * SAMPLE_RATE)
        hop = max(1, int(hop_seconds * SAMPLE_RATE))
        starts = window_starts(wave.shape[-1], size, hop)
        if not starts:
            return []
        probs = self.probabilities(torch.stack([wave[s : s + size] for s in starts]))
        return [
            Window(start=s / SAMPLE_RATE, end=(s + size) / SAMPLE_RATE, predictions=self._top_k(p, top_k))
            for s, p in zip(starts, probs, strict=True)
        ]
