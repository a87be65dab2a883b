"""core.audio's decode budget: hostile rates, channel counts and lengths cost nothing or a bounded amount.

Memory is measured with tracemalloc, which sees every numpy array (numpy
reports its buffers to it); libsndfile's own small C buffers are not traced
(tests/test_hostile_server.py measures the server's RSS for those).
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
from audio_factory import encode, tone, wav_bytes
from hostile_audio import flac_bomb, flac_silence, wav_with_data_size, without_length

from core import audio
from core.audio import (
    BLOCK_SAMPLES,
    DECODE_SLOTS,
    AudioTooLongError,
    DecodeBudgetError,
    DecoderBusyError,
    SampleRateError,
    decode_audio,
    default_max_samples,
)
from core.settings import Settings

MB = 1024 * 1024


def traced_peak(fn, *args, **kwargs):
    """(result or the AudioError raised, peak bytes numpy/Python allocated while `fn` ran)."""
    tracemalloc.start()
    try:
        try:
            result = fn(*args, **kwargs)
        except audio.AudioError as err:
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def slots():
    """DECODE_SLOTS with its limit restored afterwards (tests change it)."""
    before = DECODE_SLOTS.limit
    yield DECODE_SLOTS
    DECODE_SLOTS.configure(before)


# -- what is refused before decoding -------------------------------------------------------


def test_the_flac_bomb_is_refused_from_its_header_at_no_cost():
    # 29.9 s x 8 channels at 655,350 Hz: 157 M samples, 627 MB as float32, 170 KB on the wire.
    result, peak = traced_peak(decode_audio, flac_bomb())
    assert isinstance(result, SampleRateError) and result.status == 400
    assert "655350 Hz" in str(result) and "192000" in str(result)
    assert peak < 1 * MB  # nothing decoded: a header read costs kilobytes


def test_192_khz_is_the_highest_rate_accepted():
    assert decode_audio(wav_bytes(0.5, 192_000)).source_rate == 192_000
    with pytest.raises(SampleRateError, match="192001 Hz"):
        decode_audio(wav_bytes(0.5, 192_001))


def test_the_default_budget_is_the_longest_clip_at_48k_stereo():
    assert default_max_samples(30.0) == 30 * 48_000 * 2
    assert default_max_samples(None) is None
    audio_ = decode_audio(flac_silence(30.0, 48_000, 2))
    assert audio_.duration == pytest.approx(30.0, abs=1e-4)


def test_more_samples_than_the_budget_are_refused_from_the_header_before_decoding():
    # 30 s at 48 kHz with 3 channels: 4.32 M samples, over the 2.88 M default.
    result, peak = traced_peak(decode_audio, flac_silence(30.0, 48_000, 3))
    assert isinstance(result, DecodeBudgetError) and result.status == 413 and result.code == "audio_too_large"
    assert "4,320,000 samples" in str(result) and "2,880,000" in str(result) and "Downmix" in str(result)
    assert peak < 1 * MB


def test_an_explicit_budget_overrides_the_default():
    with pytest.raises(DecodeBudgetError, match="88,200 samples"):
        decode_audio(wav_bytes(1.0, 44100, channels=2), max_samples=50_000)
    assert decode_audio(wav_bytes(1.0, 44100, channels=2), max_samples=88_200).duration == pytest.approx(1.0)


def test_no_limits_means_no_budget():
    many = flac_silence(1.0, 48_000, 8)  # 384,000 samples, over a 0.1 s budget
    assert decode_audio(many, max_seconds=None).source_channels == 8


# -- lengths the header does not give or gets wrong ----------------------------------------------


def test_a_flac_of_unknown_length_is_decoded_to_its_real_length():
    # Before: 413 "The clip is 209146758205323.7 s long" (libsndfile reports 2**63 - 1 frames).
    data = without_length(encode(tone(3.0, 44100, channels=2), 44100, "FLAC", "PCM_16"))
    audio_ = decode_audio(data)
    assert audio_.duration == pytest.approx(3.0, abs=1e-4)
    reference = decode_audio(encode(tone(3.0, 44100, channels=2), 44100, "FLAC", "PCM_16"))
    np.testing.assert_array_equal(audio_.samples, reference.samples)  # the same decoder, bit for bit


def test_a_flac_of_unknown_length_over_the_time_limit_stops_at_the_limit():
    result, peak = traced_peak(decode_audio, without_length(flac_silence(40.0, 44_100, 1)))
    assert isinstance(result, AudioTooLongError) and result.status == 413
    assert "longer than the limit of 30 s" in str(result) and "209146758205323" not in str(result)
    # decoding stopped one block past 30 s: the mono buffer (grown by doubling) and a block
    assert peak < 2 * 4 * 30 * 44_100 + 4 * BLOCK_SAMPLES + 1 * MB


def test_a_flac_of_unknown_length_over_the_sample_budget_is_refused_by_what_it_decoded():
    result, _ = traced_peak(decode_audio, without_length(flac_silence(29.0, 96_000, 2)))
    assert isinstance(result, DecodeBudgetError) and "more than 2,880,002 samples" in str(result)


def test_a_wav_whose_data_size_says_unknown_is_judged_by_its_real_length():
    # 0xFFFFFFFF is what streaming writers leave; libsndfile then reads to the end of the file.
    data = wav_with_data_size(wav_bytes(31.0, 8000), 0xFFFFFFFF)
    with pytest.raises(AudioTooLongError):
        decode_audio(data)
    assert decode_audio(wav_with_data_size(wav_bytes(2.0, 8000), 0xFFFFFFFF)).duration == pytest.approx(2.0, abs=1e-3)


# -- memory: one block of all channels at a time, never the whole file -------------------------


def test_channels_are_downmixed_block_by_block():
    # 10 s x 8 channels at 44.1 kHz: 14.1 MB as float32 at once (what the old decoder held);
    # block by block it is the 1.8 MB mono result plus about one block.
    source = tone(10.0, 44100, channels=8)
    data = encode(source, 44100, "WAV", "FLOAT")
    del source
    result, peak = traced_peak(decode_audio, data, max_seconds=None)
    assert result.source_channels == 8
    mono_bytes = 4 * 10 * 44100
    assert peak < mono_bytes + 3 * MB, f"peak {peak / MB:.1f} MB"  # a block is 1 MiB of float32


def test_resampling_costs_its_output_not_a_multiple_of_the_input():
    # librosa.resample traced ~90 MB for this 30 s 48 kHz clip; soxr alone needs its output.
    data = flac_silence(30.0, 48_000, 1)
    result, peak = traced_peak(decode_audio, data)
    assert result.duration == pytest.approx(30.0, abs=1e-4)
    assert peak < 4 * 30 * 48_000 + 4 * 30 * 44_100 + 3 * 4 * BLOCK_SAMPLES, f"peak {peak / MB:.1f} MB"


# -- how many decodes run at once -------------------------------------------------------------


def test_a_decode_waits_for_a_free_slot(slots):
    slots.configure(1)
    assert slots.acquire(timeout=1)  # the test holds the only slot
    done = threading.Event()
    worker = threading.Thread(target=lambda: (decode_audio(wav_bytes(0.2)), done.set()))
    worker.start()
    try:
        while slots.waiting == 0:  # the decode is queued behind our slot, not running
            assert worker.is_alive()
            threading.Event().wait(0.01)
        assert not done.is_set() and slots.active == 1
    finally:
        slots.release()
    worker.join(timeout=60)
    assert done.is_set() and slots.active == 0


def test_a_decode_that_finds_no_slot_in_time_is_a_503(slots, monkeypatch):
    slots.configure(1)
    monkeypatch.setattr(audio, "DECODE_WAIT_S", 0.0)
    assert slots.acquire(timeout=1)
    try:
        with pytest.raises(DecoderBusyError, match="already decoding 1 clips") as info:
            decode_audio(wav_bytes(0.2))
        assert info.value.status == 503
    finally:
        slots.release()
    assert decode_audio(wav_bytes(0.2)).duration == pytest.approx(0.2)  # and the slot is free again


def test_raising_the_limit_lets_a_waiting_decode_in(slots):
    slots.configure(1)
    assert slots.acquire(timeout=1)
    try:
        entered = threading.Event()
        waiter = threading.Thread(target=lambda: slots.acquire(timeout=60) and entered.set())
        waiter.start()
        while slots.waiting == 0:
            threading.Event().wait(0.01)
        slots.configure(2)
        waiter.join(timeout=60)
        assert entered.is_set() and slots.active == 2
        slots.release()
    finally:
        slots.release()


def test_a_failed_decode_gives_its_slot_back(slots):
    slots.configure(1)
    for _ in range(3):
        with pytest.raises(SampleRateError):
            decode_audio(flac_bomb())
    assert slots.active == 0


# -- settings and the dashboard's in-process backend ----------------------------------------------


def test_the_budget_setting_defaults_to_max_audio_seconds_of_48k_stereo():
    assert Settings().decode_budget == 2_880_000
    assert Settings.from_env({"AUDIO_CNN_MAX_AUDIO_SECONDS": "60"}).decode_budget == 5_760_000
    assert Settings.from_env({"AUDIO_CNN_MAX_DECODE_SAMPLES": "1000"}).decode_budget == 1000
    assert Settings.from_env({"AUDIO_CNN_MAX_DECODES": "2"}).max_decodes == 2


def test_the_local_backend_applies_the_budget_and_the_slot_limit(untrained_predictor, slots):
    from core.client import BackendError, LocalBackend

    backend = LocalBackend(untrained_predictor, Settings(max_decode_samples=50_000, max_decodes=3))
    assert slots.limit == 3
    with pytest.raises(BackendError) as info:
        backend.analyze(wav_bytes(1.0, 44100, channels=2))
    assert info.value.status == 413 and info.value.code == "audio_too_large"
    with pytest.raises(BackendError) as info:
        backend.analyze(flac_bomb())
    assert info.value.status == 400 and info.value.code == "bad_sample_rate"
