"""Audio bytes -> mono float32 samples at 44.1 kHz.

`decode_audio(data)` accepts any file soundfile (libsndfile) reads: WAV (8/16/
24/32-bit int, 32/64-bit float), FLAC, OGG/Vorbis, MP3, AIFF, ... Channels are
averaged to mono and any rate is resampled to 44.1 kHz with soxr (through
librosa). Every way an input can be unusable raises one subclass of
`AudioError` whose message is written for the person who uploaded the file;
`code` is a stable machine-readable name and `status` the HTTP status the
server answers with.

All-silent audio and very short clips (down to 1 sample) are valid: the
feature extractor zero-pads them to one FFT window.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
MIN_SOURCE_RATE = 1_000      # below this nothing audible is left to classify
MAX_SOURCE_RATE = 768_000    # the highest rate real recording hardware uses


class AudioError(ValueError):
    """An input that cannot be analysed; `str(err)` is a message for humans."""

    code = "bad_audio"
    status = 400


class NotAudioError(AudioError):
    code = "not_audio"


class TruncatedAudioError(AudioError):
    code = "truncated_audio"


class EmptyAudioError(AudioError):
    code = "empty_audio"


class AudioTooLongError(AudioError):
    code = "audio_too_long"
    status = 413


class NonFiniteAudioError(AudioError):
    code = "non_finite_audio"


class SampleRateError(AudioError):
    code = "bad_sample_rate"


@dataclass(frozen=True)
class DecodedAudio:
    """`samples`: (n,) float32 mono at `SAMPLE_RATE`; the rest describes the source file."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    source_format: str

    @property
    def duration(self) -> float:
        """Length in seconds (true length, whatever the source rate was)."""
        return len(self.samples) / SAMPLE_RATE


_FORMATS = "WAV, FLAC, OGG/Vorbis or MP3"


def decode_audio(data: bytes, max_seconds: float | None = 30.0) -> DecodedAudio:
    """Decode an audio file's bytes to mono float32 at 44.1 kHz.

    Raises an `AudioError` subclass for every unusable input. `max_seconds`
    (None: no limit) is checked against the header before the samples are
    decoded where the format allows, so an over-long file costs no decoding.
    """
    if len(data) == 0:
        raise EmptyAudioError("The file is empty (0 bytes).")
    _check_riff_data_chunk(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels, frames, fmt = f.samplerate, f.channels, f.frames, f.format
            if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
                raise SampleRateError(
                    f"The file says its sample rate is {rate} Hz; only "
                    f"{MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz is supported."
                )
            if max_seconds is not None and frames > 0 and frames / rate > max_seconds:
                raise AudioTooLongError(_too_long(frames / rate, max_seconds))
            samples = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except sf.LibsndfileError as err:
        raise _classify_libsndfile_error(err) from None
    except (RuntimeError, ValueError, struct.error, MemoryError) as err:
        raise TruncatedAudioError(f"The audio data is damaged or cut off ({err}).") from None

    if samples.shape[0] == 0:
        raise EmptyAudioError(
            "The file contains no audio samples (0 samples): it is empty or was cut off."
        )
    if fmt == "MP3" and frames > 0 and samples.shape[0] < 0.98 * frames:
        # libsndfile silently returns what it could decode of a cut MP3.
        raise TruncatedAudioError(
            f"The MP3 file is cut off: it decodes to {samples.shape[0] / rate:.2f} s "
            f"but its header promises {frames / rate:.2f} s."
        )
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise NonFiniteAudioError(
            f"The file contains {bad} NaN or infinite sample values; "
            "a real recording has none. Re-export it from your audio editor."
        )
    if max_seconds is not None and samples.shape[0] / rate > max_seconds:
        raise AudioTooLongError(_too_long(samples.shape[0] / rate, max_seconds))

    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        mono = _resample(mono, rate)
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        source_rate=int(rate),
        source_channels=int(channels),
        source_format=str(fmt),
    )


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    if len(mono) < 2:
        # soxr needs at least two samples; a single click stays a single click.
        n = max(1, round(len(mono) * SAMPLE_RATE / rate))
        return np.resize(mono, n).astype(np.float32)
    return librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")


def _too_long(seconds: float, limit: float) -> str:
    return f"The clip is {seconds:.1f} s long; the limit is {limit:g} s. Trim it and try again."


def _classify_libsndfile_error(err: sf.LibsndfileError) -> AudioError:
    text = str(err)
    if "not recognised" in text or "unimplemented format" in text or "does not exist" in text:
        return NotAudioError(f"This is not an audio file that can be read ({_FORMATS} expected).")
    if "malformed" in text.lower() or "Malformed" in text:
        return TruncatedAudioError(
            "The audio file's header is damaged or cut off; the file cannot be read."
        )
    detail = text.split(": ", 1)[-1]
    return TruncatedAudioError(f"The audio data is damaged or cut off ({detail}).")


def _check_riff_data_chunk(data: bytes) -> None:
    """Refuse a WAV whose `data` chunk promises more bytes than the file holds.

    libsndfile quietly decodes whatever part of a cut-off WAV is present; a
    user who uploads half a file should hear about it instead. Sizes of 0 and
    0xFFFFFFFF are what streaming writers leave behind, so they are trusted.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return
    endian = "<" if data[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack(endian + "I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"data":
            available = len(data) - body
            if size not in (0, 0xFFFFFFFF) and available < size:
                raise TruncatedAudioError(
                    f"The WAV file is cut off: it holds {available:,} of the "
                    f"{size:,} bytes of audio its header announces."
                )
            return
        pos = body + size + (size & 1)  # chunks are padded to even sizes
