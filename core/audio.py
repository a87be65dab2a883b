"""Audio bytes -> mono float32 samples at 44.1 kHz, within a memory and CPU budget.

`decode_audio(data)` accepts any file soundfile (libsndfile) reads: WAV (8/16/
24/32-bit int, 32/64-bit float), FLAC, OGG/Vorbis, MP3, AIFF, ... Channels are
averaged to mono and any rate is resampled to 44.1 kHz with soxr ("soxr_hq",
as librosa.resample would). Every way an input can be unusable raises one
subclass of `AudioError` whose message is written for the person who
uploaded the file; `code` is a stable machine-readable name and `status` the
HTTP status the server answers with.

All-silent audio and very short clips (down to 1 sample) are valid: the
feature extractor zero-pads them to one FFT window.

Hostile files (a 170 KB FLAC can declare 8 channels at 655 kHz: 157 M
samples) are refused before they cost anything, and nothing decoded costs
more than its budget:

- the source rate must be 1-192 kHz;
- the samples to decode (frames x channels) must fit `max_samples`, by
  default `max_seconds` of 48 kHz stereo (2,880,000 for 30 s). A header
  that declares more is refused before decoding; a header that does not say
  (streamed FLAC: libsndfile then reports 2**63 - 1 frames) or lies is
  decoded until it ends or passes the budget, and judged by its real length;
- samples are read `BLOCK_SAMPLES` at a time and downmixed as they arrive,
  so peak memory is the mono signal plus a block, never all channels at
  once: `decode_memory_bound` states it (30 MB at the defaults; about 7 MB
  for a 30 s 48 kHz stereo file, whose header gives its length);
- `DECODE_SLOTS` (core.decode_slots.Slots) lets at most
  `Settings.max_decodes` decodes (default 4) run at once in this process,
  whoever calls (the server, the dashboard's in-process backend,
  classify_folder); the others wait up to `DECODE_WAIT_S`, then get
  DecoderBusyError (503). So decoding holds at most 4 x 30 MB at once.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from core.decode_slots import Slots

SAMPLE_RATE = 44100
MIN_SOURCE_RATE = 1_000      # below this nothing audible is left to classify
MAX_SOURCE_RATE = 192_000    # the highest rate common recording hardware writes
BUDGET_RATE, BUDGET_CHANNELS = 48_000, 2  # the default budget: the longest accepted clip at 48 kHz stereo
BLOCK_SAMPLES = 1 << 18      # frames x channels per read: 1 MiB of float32
UNKNOWN_FRAMES = 1 << 62     # libsndfile reports 2**63 - 1 frames when a header does not say
DECODE_WAIT_S = 30.0         # how long a decode waits for a free slot before DecoderBusyError


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


class DecodeBudgetError(AudioError):
    """More samples (frames x channels) than a decode may produce."""

    code = "audio_too_large"
    status = 413


class NonFiniteAudioError(AudioError):
    code = "non_finite_audio"


class SampleRateError(AudioError):
    code = "bad_sample_rate"


class DecoderBusyError(AudioError):
    """Every decode slot stayed busy for DECODE_WAIT_S: not the file's fault, try again."""

    code = "decoder_busy"
    status = 503


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


DECODE_SLOTS = Slots(4)  # Settings.max_decodes; configured by create_app and LocalBackend

_FORMATS = "WAV, FLAC, OGG/Vorbis or MP3"


def default_max_samples(max_seconds: float | None) -> int | None:
    """The default decode budget: `max_seconds` of 48 kHz stereo, in samples (None: no budget)."""
    return None if max_seconds is None else math.ceil(max_seconds * BUDGET_RATE * BUDGET_CHANNELS)


def decode_memory_bound(max_seconds: float = 30.0, max_samples: int | None = None) -> int:
    """Bytes one decode may allocate at most (numpy buffers; the input bytes not counted).

    The mono buffer holds at most max_samples frames (mono is the worst case),
    twice that for a moment while it grows past a header that did not give
    the length; plus a block of all channels and its finiteness mask; plus the
    resampled output, at most max_seconds of 44.1 kHz. All float32 (4 B).
    """
    max_samples = default_max_samples(max_seconds) if max_samples is None else max_samples
    return 4 * (2 * max_samples + 2 * BLOCK_SAMPLES + math.ceil(max_seconds * SAMPLE_RATE) + 1)


def decode_audio(data: bytes, max_seconds: float | None = 30.0, max_samples: int | None = None) -> DecodedAudio:
    """Decode an audio file's bytes to mono float32 at 44.1 kHz.

    Raises an `AudioError` subclass for every unusable input. `max_seconds`
    (None: no limit) is checked against the header before the samples are
    decoded where the format allows, so an over-long file costs no decoding.
    `max_samples` bounds frames x channels (None: `default_max_samples(max_seconds)`);
    see the module docstring for the memory this allows. Waits for one of
    `DECODE_SLOTS` first.
    """
    if len(data) == 0:
        raise EmptyAudioError("The file is empty (0 bytes).")
    _check_riff_data_chunk(data)
    if max_samples is None:
        max_samples = default_max_samples(max_seconds)
    if not DECODE_SLOTS.acquire(timeout=DECODE_WAIT_S):
        raise DecoderBusyError(
            f"The server is already decoding {DECODE_SLOTS.limit} clips at once (its limit) and none "
            f"finished within {DECODE_WAIT_S:g} s; try again in a moment.")
    try:
        mono, rate, channels, fmt = _decode_mono(data, max_seconds, max_samples)
        if rate != SAMPLE_RATE:
            mono = _resample(mono, rate)
    finally:
        DECODE_SLOTS.release()
    return DecodedAudio(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        source_rate=int(rate),
        source_channels=int(channels),
        source_format=str(fmt),
    )


class _ForwardOnlySoundFile(sf.SoundFile):
    """A SoundFile read front to back only.

    soundfile seeks to "position + frames read" after every read; on a FLAC
    stream of unknown length that seek fails at the end (LibsndfileError
    "Internal psf_fseek() failed") and the last block is lost. Reporting the
    file as not seekable makes `read(n)` simply return what is there.
    """

    def seekable(self) -> bool:
        return False


def _decode_mono(data: bytes, max_seconds: float | None,
                 max_samples: int | None) -> tuple[np.ndarray, int, int, str]:
    """-> (mono float32 at the source rate, rate, channels, format); every check but resampling."""
    try:
        with _ForwardOnlySoundFile(io.BytesIO(data)) as f:
            rate, channels, declared, fmt = f.samplerate, f.channels, f.frames, f.format
            if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
                raise SampleRateError(
                    f"The file says its sample rate is {rate} Hz; only "
                    f"{MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz is supported."
                )
            known = 0 < declared < UNKNOWN_FRAMES
            max_frames = _max_frames(rate, channels, max_seconds, max_samples)
            if known and max_seconds is not None and declared / rate > max_seconds:
                raise AudioTooLongError(_too_long(declared / rate, max_seconds))
            if known and max_samples is not None and declared * channels > max_samples:
                raise DecodeBudgetError(_over_budget(declared, rate, channels, max_samples))
            mono, bad = _read_downmixed(f, channels, declared if known else None, max_frames)
    except AudioError:
        raise
    except sf.LibsndfileError as err:
        raise _classify_libsndfile_error(err) from None
    except (RuntimeError, ValueError, struct.error, MemoryError) as err:
        raise TruncatedAudioError(f"The audio data is damaged or cut off ({err}).") from None

    if max_frames is not None and len(mono) > max_frames:  # the header did not say, or lied
        if max_seconds is not None and len(mono) > max_seconds * rate:
            raise AudioTooLongError(
                f"The clip is longer than the limit of {max_seconds:g} s (its header does not "
                "say how long it is; decoding stopped at the limit). Trim it and try again.")
        raise DecodeBudgetError(_over_budget(len(mono), rate, channels, max_samples, at_least=True))
    if len(mono) == 0:
        raise EmptyAudioError(
            "The file contains no audio samples (0 samples): it is empty or was cut off."
        )
    if fmt == "MP3" and known and len(mono) < 0.98 * declared:
        # libsndfile silently returns what it could decode of a cut MP3.
        raise TruncatedAudioError(
            f"The MP3 file is cut off: it decodes to {len(mono) / rate:.2f} s "
            f"but its header promises {declared / rate:.2f} s."
        )
    if bad:
        raise NonFiniteAudioError(
            f"The file contains {bad} NaN or infinite sample values; "
            "a real recording has none. Re-export it from your audio editor."
        )
    return mono, rate, channels, fmt


def _max_frames(rate: int, channels: int, max_seconds: float | None, max_samples: int | None) -> int | None:
    """The most frames a decode may keep under both limits (None: unlimited)."""
    limits = []
    if max_seconds is not None:
        limits.append(math.floor(max_seconds * rate))
    if max_samples is not None:
        limits.append(max_samples // channels)
    return min(limits) if limits else None


def _read_downmixed(f: sf.SoundFile, channels: int, declared: int | None,
                    max_frames: int | None) -> tuple[np.ndarray, int]:
    """Read `f` in blocks, averaging channels as they come: (mono float32, count of NaN/Inf samples).

    Stops one frame past `max_frames` so the caller can tell "over the limit"
    from "exactly at it". Memory: the mono buffer (allocated from the header's
    length, grown by doubling only when the header did not say or lied, never
    past max_frames + 1) plus one block of BLOCK_SAMPLES float32.
    """
    stop = None if max_frames is None else max_frames + 1
    block = np.empty((max(1, BLOCK_SAMPLES // channels), channels), np.float32)
    first = declared if declared is not None else len(block)
    mono = np.empty(first if stop is None else min(first, stop), np.float32)
    n = bad = 0
    while stop is None or n < stop:
        want = len(block) if stop is None else min(len(block), stop - n)
        got = f.read(want, dtype="float32", always_2d=True, out=block[:want])
        if len(got) == 0:
            break
        if n + len(got) > len(mono):
            grown = max(n + len(got), 2 * len(mono))
            mono = _moved(mono[:n], grown if stop is None else min(grown, stop))
        bad += len(got) * channels - int(np.count_nonzero(np.isfinite(got)))
        np.mean(got, axis=1, out=mono[n:n + len(got)])
        n += len(got)
    return mono[:n], bad


def _moved(head: np.ndarray, size: int) -> np.ndarray:
    """`head` copied into the start of a new buffer of `size` (np.resize would hold copies of it)."""
    out = np.empty(size, head.dtype)
    out[: len(head)] = head
    return out


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    if len(mono) < 2:
        # soxr needs at least two samples; a single click stays a single click.
        n = max(1, round(len(mono) * SAMPLE_RATE / rate))
        return np.resize(mono, n).astype(np.float32)
    # soxr directly, not librosa.resample (the same soxr_hq call): librosa's wrapper
    # traced 90 MB for 30 s of 48 kHz mono, soxr alone a few kB beyond its output.
    # Length as librosa makes it: ceil(n x ratio), zero-padded where soxr gives one less.
    out = soxr.resample(mono, rate, SAMPLE_RATE, quality="soxr_hq")
    n = math.ceil(len(mono) * SAMPLE_RATE / rate)
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))


def _too_long(seconds: float, limit: float) -> str:
    return f"The clip is {seconds:.1f} s long; the limit is {limit:g} s. Trim it and try again."


def _over_budget(frames: int, rate: int, channels: int, budget: int, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return (f"The file holds {more}{frames * channels:,} samples to decode ({more}{frames / rate:.1f} s x "
            f"{channels} channel(s) at {rate:,} Hz); the limit is {budget:,} "
            f"({budget / (BUDGET_RATE * BUDGET_CHANNELS):g} s of 48 kHz stereo). "
            "Downmix it to mono or stereo, resample it to 48 kHz or less, or trim it.")


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
