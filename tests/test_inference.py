"""core.inference: the Predictor's analysis of one clip, long clips, batches and model choice."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from audio_factory import tone, wav_bytes
from conftest import DEFAULT_MODEL_PARAMS

from core.checkpoint import resolve_checkpoint, save_checkpoint
from core.features import FeatureConfig
from core.inference import Predictor
from core.labels import CLASSES
from core.model import AudioCNN, ModelConfig
from core.results import OptionError, waveform_envelope, window_starts
from core.settings import Settings


@pytest.fixture(scope="module")
def analysis(untrained_predictor):
    return untrained_predictor.analyze(tone(5.0), top_k=5)


def test_a_5s_clip_gives_sorted_top_k_probabilities(analysis):
    confidences = [p.confidence for p in analysis.predictions]
    assert len(confidences) == 5 and confidences == sorted(confidences, reverse=True)
    assert all(0 < c < 1 for c in confidences)
    assert {p.label for p in analysis.predictions} <= set(CLASSES)
    assert analysis.predictions[0].category in ("Animals", "Natural soundscapes & water sounds",
                                               "Human, non-speech sounds", "Interior/domestic sounds",
                                               "Exterior/urban noises")


def test_all_50_probabilities_sum_to_one(untrained_predictor):
    preds = untrained_predictor.analyze(tone(1.0), top_k=50, feature_maps="none").predictions
    assert len(preds) == 50 and sum(p.confidence for p in preds) == pytest.approx(1.0, abs=1e-5)


def test_spectrogram_waveform_and_duration(analysis):
    assert analysis.spectrogram.shape == (128, 431) and analysis.spectrogram.dtype == np.float32
    assert analysis.waveform.shape == (8000,)
    assert analysis.sample_rate == 44100 and analysis.duration == pytest.approx(5.0)
    assert analysis.windows == []
    assert analysis.model.trained is False and analysis.model.checkpoint_id is None
    assert set(analysis.timing_ms) == {"features", "forward", "postprocess", "total"}


def test_block_feature_maps_are_channel_means_in_network_order(analysis):
    maps = analysis.feature_maps
    names = list(maps)
    assert names[0] == "layer1" and names[1] == "layer2.block-0.conv" and names[-1] == "layer5"
    assert len(names) == 1 + 2 * (3 + 4 + 6 + 3) + 4
    assert maps["layer1"].shape == (32, 108) and maps["layer5"].shape == (4, 14)
    # relu maps are means of non-negative values; conv maps (before the ReLU) need not be
    assert maps["layer3.block-1.relu"].min() >= 0


@pytest.mark.parametrize("mode,count", [("stages", 5), ("none", 0)])
def test_feature_map_modes(untrained_predictor, mode, count):
    maps = untrained_predictor.analyze(tone(1.0), feature_maps=mode).feature_maps
    assert len(maps) == count
    if mode == "stages":
        assert list(maps) == ["layer1", "layer2", "layer3", "layer4", "layer5"]


def test_the_feature_map_is_the_mean_over_channels_of_the_real_activation(untrained_predictor):
    samples = tone(2.0, freq=880)
    result = untrained_predictor.analyze(samples, feature_maps="stages")
    with torch.no_grad():
        spec = untrained_predictor.features(torch.from_numpy(samples))
        _, captured = untrained_predictor.model(spec.unsqueeze(1), capture=True)
    np.testing.assert_allclose(result.feature_maps["layer4"], captured["layer4"][0].mean(0).numpy(), atol=1e-5)


def test_top_channels_of_one_layer_strongest_first(untrained_predictor):
    result = untrained_predictor.analyze(tone(2.0), channels_of="layer3.block-1.relu", channels_top=6)
    detail = result.channel_maps
    assert detail.layer == "layer3.block-1.relu" and len(detail.channels) == 6
    assert detail.maps.shape[0] == 6 and detail.activation == sorted(detail.activation, reverse=True)
    np.testing.assert_allclose(detail.maps.mean(axis=(1, 2)), detail.activation, rtol=1e-4)


def test_an_unknown_layer_for_channels_is_an_option_error(untrained_predictor):
    with pytest.raises(OptionError, match="Unknown layer 'layer9'"):
        untrained_predictor.analyze(tone(1.0), channels_of="layer9")


def test_window_starts_cover_the_clip_and_end_at_its_end():
    assert window_starts(100, 100, 50) == []
    assert window_starts(240, 100, 50) == [0, 50, 100, 140]
    assert window_starts(200, 100, 50) == [0, 50, 100]


def test_a_12s_clip_gets_windows_that_agree_with_analysing_each_window(untrained_predictor):
    rng = np.random.default_rng(0)
    samples = np.concatenate([tone(6.0, freq=300), rng.standard_normal(6 * 44100).astype(np.float32) * 0.2])
    result = untrained_predictor.analyze(samples, top_k=2, window_hop=2.5)
    assert [w.start for w in result.windows] == [0.0, 2.5, 5.0, 7.0]
    assert all(w.end - w.start == pytest.approx(5.0) for w in result.windows)
    last = untrained_predictor.analyze(samples[7 * 44100:], top_k=2, feature_maps="none").predictions
    assert [p.label for p in result.windows[-1].predictions] == [p.label for p in last]
    assert result.windows[-1].predictions[0].confidence == pytest.approx(last[0].confidence, rel=1e-4)


def test_batch_prediction_equals_one_at_a_time(untrained_predictor):
    clips = [tone(1.0, freq=f, seed=i) for i, f in enumerate((200, 400, 800))] + [tone(0.5, freq=1600)]
    batch = untrained_predictor.predict_batch(clips, top_k=3, batch_size=2)
    for clip, preds in zip(clips, batch, strict=True):
        single = untrained_predictor.analyze(clip, top_k=3, feature_maps="none").predictions
        assert [p.label for p in preds] == [p.label for p in single]
        assert preds[0].confidence == pytest.approx(single[0].confidence, rel=1e-4)


def test_analyze_bytes_adds_decode_time_and_takes_any_rate(untrained_predictor):
    result = untrained_predictor.analyze_bytes(wav_bytes(2.0, 22050), feature_maps="none")
    assert result.duration == pytest.approx(2.0)          # the seed said 4.0 here
    assert "decode" in result.timing_ms and result.timing_ms["total"] >= result.timing_ms["decode"]


def test_the_waveform_envelope_keeps_every_peak():
    x = np.zeros(220500, np.float32)
    x[123457] = 1.0
    x[200001] = -0.7
    env = waveform_envelope(x, points=8000)
    assert env.shape == (8000,) and env.max() == 1.0 and env.min() == pytest.approx(-0.7)
    # shorter than the bucket count: one sample per bucket, still (min, max) pairs
    short = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(waveform_envelope(short), np.repeat(short, 2))


def test_untrained_model_is_flagged_and_deterministic():
    a, b = Predictor.untrained(), Predictor.untrained()
    assert not a.info.trained and "untrained" in a.info.name
    x = tone(1.0)
    assert a.analyze(x, feature_maps="none").predictions == b.analyze(x, feature_maps="none").predictions


def _write_checkpoint(path, seed):
    torch.manual_seed(seed)
    model = AudioCNN(ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 1)))
    return save_checkpoint(path, model, FeatureConfig(), list(CLASSES[:5]), meta={"run_name": path.parent.name})


def test_without_summaries_the_newest_best_checkpoint_is_loaded(tmp_path):
    """core.checkpoint's policy (tests/test_checkpoint_policy.py): unscored runs, newest first."""
    assert resolve_checkpoint(tmp_path) is None
    _write_checkpoint(tmp_path / "old" / "best.pt", 0)
    newest_id = _write_checkpoint(tmp_path / "new" / "best.pt", 1)
    past = time.time() - 3600
    os.utime(tmp_path / "old" / "best.pt", (past, past))
    predictor = Predictor.from_settings(Settings(runs_dir=tmp_path))
    assert predictor.info.trained and predictor.info.checkpoint_id == newest_id
    assert predictor.info.name == "AudioCNN (new)"
    assert len(predictor.analyze(tone(1.0), top_k=50).predictions) == 5


def test_no_checkpoint_means_an_untrained_model(tmp_path):
    assert Predictor.from_settings(Settings(runs_dir=tmp_path / "missing")).info.trained is False


def test_architecture_reports_every_layer_and_the_total(untrained_predictor):
    arch = untrained_predictor.architecture()
    assert arch["total_params"] == DEFAULT_MODEL_PARAMS
    assert arch["input_shape"] == [1, 128, 431]
    assert arch["layers"][0]["name"] == "layer1"
    assert arch["model"]["trained"] is False
    hz = arch["features"]["mel_frequencies_hz"]
    assert len(hz) == 128 and hz == sorted(hz) and 0 < hz[0] < 100 < 20000 < hz[-1] < 22050
