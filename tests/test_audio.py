"""core.audio: every common format and rate decodes to mono 44.1 kHz; every bad input gets a clear error."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from audio_factory import encode, tone, wav_bytes

from core.audio import (
    SAMPLE_RATE,
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
    NotAudioError,
    SampleRateError,
    TruncatedAudioError,
    decode_audio,
)

WAV_SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
def test_every_wav_sample_format_decodes_to_the_same_signal(subtype):
    source = tone(1.0, 44100, freq=440)
    audio = decode_audio(encode(source, 44100, "WAV", subtype))
    assert audio.samples.dtype == np.float32
    assert len(audio.samples) == 44100
    # An n-bit integer sample is off by under one step of 2**-(n-1) (libsndfile scales by
    # 2**(n-1) one way and 2**(n-1) - 1 the other); float formats round-trip a float32 exactly.
    # Then the float32 result rounds once more: 2**-24 for |x| <= 1.
    bits = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}.get(subtype)
    step = 2.0 ** -(bits - 1) if bits else 0.0
    np.testing.assert_allclose(audio.samples, source, atol=step + 2.0**-24, rtol=0)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_any_rate_is_resampled_to_44k1_with_the_true_duration(rate):
    audio = decode_audio(wav_bytes(2.0, rate, freq=300))
    assert audio.source_rate == rate
    assert len(audio.samples) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)
    assert audio.duration == pytest.approx(2.0, abs=1e-4)
    # the tone survives resampling: its spectral peak stays at 300 Hz
    assert peak_frequency(audio.samples) == pytest.approx(300, abs=1)  # one FFT bin of a 2 s clip: 0.5 Hz


def peak_frequency(samples: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(samples))) * SAMPLE_RATE / len(samples))


@pytest.mark.parametrize("fmt,subtype,tolerance_s", [
    ("FLAC", "PCM_16", 0.0), ("FLAC", "PCM_24", 0.0),
    ("OGG", "VORBIS", 0.0),
    ("MP3", "MPEG_LAYER_III", 0.06),  # MP3 frames add encoder delay/padding
])
def test_compressed_formats_decode_to_the_right_length(fmt, subtype, tolerance_s):
    audio = decode_audio(encode(tone(3.0, 44100), 44100, fmt, subtype))
    assert audio.source_format == fmt
    assert audio.duration == pytest.approx(3.0, abs=tolerance_s + 1e-4)
    assert np.abs(audio.samples).max() > 0.2


def test_mp3_at_48k_is_resampled():
    audio = decode_audio(encode(tone(2.0, 48000), 48000, "MP3", "MPEG_LAYER_III"))
    assert audio.source_rate == 48000
    assert audio.duration == pytest.approx(2.0, abs=0.06)


@pytest.mark.parametrize("channels", [2, 4, 6])
def test_multichannel_is_averaged_to_mono(channels):
    source = tone(1.0, 44100, channels=channels)
    audio = decode_audio(encode(source, 44100, "WAV", "FLOAT"))
    assert audio.source_channels == channels
    np.testing.assert_allclose(audio.samples, source.mean(axis=1), atol=1e-6)


def test_stereo_8k_is_downmixed_and_resampled():
    audio = decode_audio(wav_bytes(1.0, 8000, freq=300, channels=2))
    assert audio.source_channels == 2 and audio.source_rate == 8000
    assert len(audio.samples) == 44100
    assert peak_frequency(audio.samples) == pytest.approx(300, abs=1)  # one FFT bin of a 1 s clip


def test_96k_24bit_decodes():
    audio = decode_audio(wav_bytes(1.0, 96000, freq=440, subtype="PCM_24"))
    assert len(audio.samples) == 44100 and audio.source_rate == 96000
    assert peak_frequency(audio.samples) == pytest.approx(440, abs=1)


def test_all_silent_audio_is_valid():
    audio = decode_audio(encode(np.zeros(44100, np.float32), 44100, "WAV", "PCM_16"))
    assert len(audio.samples) == 44100 and not audio.samples.any()


def test_a_single_sample_click_is_valid():
    audio = decode_audio(encode(np.array([0.9], np.float32), 44100, "WAV", "FLOAT"))
    np.testing.assert_allclose(audio.samples, [0.9])


def test_a_single_sample_at_another_rate_keeps_its_duration():
    audio = decode_audio(encode(np.array([0.5], np.float32), 22050, "WAV", "FLOAT"))
    assert len(audio.samples) == 2 and audio.duration == pytest.approx(1 / 22050)  # 22.05 -> 44.1 kHz
    assert np.all(audio.samples > 0.25)  # the click survives; it is not resampled into silence


# -- bad input: one error class each, with a message a person understands ----------------


def test_random_bytes_are_not_audio():
    rng = np.random.default_rng(1)
    with pytest.raises(NotAudioError, match="not an audio file"):
        decode_audio(rng.bytes(5000))


def test_a_text_file_is_not_audio():
    with pytest.raises(NotAudioError, match="WAV, FLAC, OGG/Vorbis or MP3"):
        decode_audio(b"id,name\n1,dog\n" * 50)


def test_zero_bytes_is_empty():
    with pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(b"")


def test_a_wav_with_zero_samples_is_empty():
    with pytest.raises(EmptyAudioError, match="0 samples"):
        decode_audio(encode(np.zeros(0, np.float32), 44100, "WAV", "PCM_16"))


def test_a_wav_cut_inside_its_header_is_truncated():
    with pytest.raises(TruncatedAudioError, match="header"):
        decode_audio(wav_bytes(1.0)[:20])


def test_a_wav_cut_in_the_middle_is_truncated_and_says_how_much_is_there():
    data = wav_bytes(1.0)
    with pytest.raises(TruncatedAudioError, match=r"cut off: it holds 44,100 of the 88,200 bytes"):
        decode_audio(data[: 44 + 44100])


def test_a_wav_with_only_its_header_is_truncated():
    with pytest.raises(TruncatedAudioError):
        decode_audio(wav_bytes(1.0)[:44])


def test_a_cut_flac_is_reported_as_damaged():
    data = encode(tone(2.0), 44100, "FLAC", "PCM_16")
    with pytest.raises(TruncatedAudioError, match="damaged or cut off"):
        decode_audio(data[: len(data) // 2])


def test_a_cut_mp3_is_truncated():
    data = encode(tone(3.0), 44100, "MP3", "MPEG_LAYER_III")
    with pytest.raises(TruncatedAudioError, match="MP3 file is cut off"):
        decode_audio(data[: len(data) // 2])


def test_a_clip_over_the_limit_is_refused_from_its_header():
    data = wav_bytes(3.0, 8000)
    with pytest.raises(AudioTooLongError, match="3.0 s long; the limit is 2 s") as info:
        decode_audio(data, max_seconds=2.0)
    assert info.value.status == 413


def test_no_limit_means_no_limit():
    assert decode_audio(wav_bytes(3.0, 8000), max_seconds=None).duration == pytest.approx(3.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples_are_refused(bad):
    samples = tone(0.5)
    samples[100:103] = bad
    with pytest.raises(NonFiniteAudioError, match="3 NaN or infinite"):
        decode_audio(encode(samples, 44100, "WAV", "FLOAT"))


def _with_rate(data: bytes, rate: int) -> bytes:
    """Rewrite a PCM WAV header's sample rate (and byte rate) in place."""
    out = bytearray(data)
    channels, bits = struct.unpack("<H", out[22:24])[0], struct.unpack("<H", out[34:36])[0]
    out[24:28] = struct.pack("<I", rate)
    out[28:32] = struct.pack("<I", rate * channels * bits // 8)
    return bytes(out)


@pytest.mark.parametrize("rate", [1, 500, 5_000_000])
def test_an_absurd_sample_rate_is_refused(rate):
    with pytest.raises(SampleRateError, match=f"{rate} Hz"):
        decode_audio(_with_rate(wav_bytes(0.1), rate))


def test_every_audio_error_has_a_code_and_an_http_status():
    for cls in (NotAudioError, TruncatedAudioError, EmptyAudioError, NonFiniteAudioError, SampleRateError):
        assert cls.status == 400 and cls.code not in ("", "bad_audio")
    assert AudioTooLongError.status == 413
