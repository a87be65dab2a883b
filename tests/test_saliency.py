"""core.saliency: sanity checks after Adebayo et al., "Sanity checks for saliency maps" (2018).

A small model trained here (tests/saliency_factory.py) on clips whose class
evidence is a burst in a known time-frequency box, with an equally loud
distractor burst in every class:

    (a) the map of the clip's class falls on the class's box, not the distractor
        (Integrated Gradients: most of its mass in the box; Grad-CAM at the last stage,
        whose cells are 32 x 32: most of its mass in the box's time)
    (b) randomizing the weights changes the map (a map that survives it explains nothing)
    (c) different target classes give different maps, each on its own evidence
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import saliency_factory as sf

from core.results import OptionError
from core.saliency import METHODS

ONSET, DISTRACTOR = 0.2, 1.3  # seconds: the class burst, then the distractor, apart in time


@pytest.fixture(scope="module")
def trained():
    return sf.trained_predictor()


@pytest.fixture(scope="module")
def randomized(trained):
    return sf.randomized(trained)


def saliency(predictor, samples, method, target, **options):
    return predictor.analyze(samples, feature_maps="none", saliency=method, saliency_target=target,
                             **options).saliency


def grown(box: tuple[slice, slice], rows: int, frames: int) -> tuple[slice, slice]:
    r, c = box
    return slice(max(r.start - rows, 0), r.stop + rows), slice(max(c.start - frames, 0), c.stop + frames)


def mass(values: np.ndarray, box: tuple[slice, slice]) -> float:
    return float(values[box].sum() / values.sum())


def share(values: np.ndarray, box: tuple[slice, slice]) -> float:
    return values[box].size / values.size


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; a constant map correlates with nothing (0)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# Where a burst's energy spreads in the spectrogram beyond its nominal box: the STFT window
# (n_fft 2048) reaches n_fft / 2 / hop = 2 frames either side, and each mel filter reaches the
# centres of its neighbours (1 row either side).
SPREAD_FRAMES = math.ceil(sf.FEATURES.n_fft / 2 / sf.FEATURES.hop_length)
SPREAD_ROWS = 1


def test_the_fixture_model_has_learned_its_classes(trained):
    rng = np.random.default_rng(1)
    for label in sf.CLASSES:
        for onset in (0.1, 0.8, 1.3):
            clip = sf.clip(label, onset, rng)
            assert trained.analyze(clip, feature_maps="none").predictions[0].label == label


@pytest.mark.parametrize("label", ["low", "high"])
def test_integrated_gradients_puts_most_of_the_mass_in_the_evidence_box(trained, label):
    clip = sf.clip(label, ONSET, np.random.default_rng(2), distractor=DISTRACTOR)
    values = saliency(trained, clip, "integrated_gradients", label).values
    box = grown(sf.box(label, ONSET), SPREAD_ROWS, SPREAD_FRAMES)
    assert mass(values, box) > 0.5, f"{mass(values, box):.2f} of the map in a box of {share(values, box):.0%}"
    assert mass(values, sf.box("distractor", DISTRACTOR)) < 0.5 * mass(values, box)


@pytest.mark.parametrize("label", ["low", "high"])
def test_gradcam_finds_when_the_evidence_sounds_and_ignores_the_distractor(trained, label):
    """Grad-CAM at the last stage sees the input in cells of 32 x 32 (its stride), and in this model
    its 4 rows of cells barely differ in frequency (measured): it is checked for time, where most
    of its mass must fall in the burst's frames grown by half a cell, and off the distractor."""
    clip = sf.clip(label, ONSET, np.random.default_rng(3), distractor=DISTRACTOR)
    result = saliency(trained, clip, "gradcam", label)
    assert result.layer == "layer5"
    frames = grown(sf.box(label, ONSET), 0, 16)[1]
    in_time = float(result.values[:, frames].sum() / result.values.sum())
    assert in_time > 0.75, f"{in_time:.2f} of the map in the burst's time"
    assert mass(result.values, sf.box("distractor", DISTRACTOR)) < 0.05


@pytest.mark.parametrize("method", METHODS)
def test_randomizing_the_weights_changes_the_map(trained, randomized, method):
    clip = sf.clip("low", ONSET, np.random.default_rng(4), distractor=DISTRACTOR)
    learned = saliency(trained, clip, method, "low").values
    random = saliency(randomized, clip, method, "low").values
    assert correlation(learned, random) < 0.5


@pytest.mark.parametrize("method", METHODS)
def test_different_targets_give_different_maps_each_on_its_own_evidence(trained, method):
    rng = np.random.default_rng(5)
    both = sf.clip("low", ONSET, rng, distractor=DISTRACTOR) + sf.clip("high", DISTRACTOR, rng, distractor=ONSET)
    low, high = (saliency(trained, both, method, t).values for t in ("low", "high"))
    low_box, high_box = sf.box("low", ONSET), sf.box("high", DISTRACTOR)
    assert correlation(low, high) < 0.5
    assert mass(low, low_box) > mass(low, high_box)
    assert mass(high, high_box) > mass(high, low_box)


@pytest.mark.parametrize("method", METHODS)
def test_the_map_is_on_the_spectrogram_grid_in_the_unit_range(trained, method):
    result = trained.analyze(sf.clip("high", 0.5, np.random.default_rng(6)), feature_maps="none", saliency=method)
    s = result.saliency
    assert s.values.shape == result.spectrogram.shape and s.values.dtype == np.float32
    assert s.values.min() >= 0.0 and s.values.max() == 1.0
    assert s.method == method and s.target == result.predictions[0].label  # default: the top-1 class
    assert "saliency" in result.timing_ms


def test_no_saliency_unless_asked(trained):
    assert trained.analyze(sf.clip("low", 0.5, np.random.default_rng(7)), feature_maps="none").saliency is None


@pytest.mark.parametrize("options, words", [
    ({"saliency": "gradcam", "saliency_target": "dog"}, "not one of this model's classes"),
    ({"saliency": "gradcam", "saliency_layer": "layer9"}, "layer1, layer2"),
    ({"saliency": "occlusion"}, "gradcam, integrated_gradients"),
])
def test_a_bad_saliency_option_is_an_option_error_with_the_choices(trained, options, words):
    with pytest.raises(OptionError, match=words):
        trained.analyze(sf.clip("low", 0.5, np.random.default_rng(8)), feature_maps="none", **options)
