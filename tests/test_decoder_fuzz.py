"""Property tests of core.audio.decode_audio on hostile WAV, FLAC and Ogg headers (hypothesis).

Every generated file is a real container with header fields drawn from the
values that break decoders: rates of 0, 1, 192,001, 655,350 and 2**32 - 1,
channel counts up to 65,535, lengths of 0, "unknown" and 2**36 - 1 frames,
sizes that lie. Whatever comes in, `decode_audio` must either return valid
audio (1-D float32, finite, at most 30 s) or raise an AudioError with a 4xx
status, never anything else, and its peak traced memory must stay under
`decode_memory_bound()` (the analysis in core.audio).

tests/fuzz_decoder.py runs the same check under atheris (coverage-guided)
when atheris is installed: see test_atheris_finds_nothing_in_a_short_run.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from audio_factory import encode, tone
from conftest import ROOT
from hostile_audio import ogg_with_header, small_ogg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.audio import AudioError, DecodedAudio, decode_audio, decode_memory_bound

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
BOUND = decode_memory_bound()

RATES = st.one_of(st.sampled_from([0, 1, 999, 1000, 8000, 44100, 48000, 192000, 192001, 655350, 768000,
                                   2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
CHANNELS = st.one_of(st.sampled_from([0, 1, 2, 3, 8, 64, 255, 1024, 1025, 65535]), st.integers(0, 65535))


def check(data: bytes, record: bool = True) -> DecodedAudio | AudioError:
    """The property: valid audio or a 4xx AudioError, under the memory bound."""
    tracemalloc.start()
    try:
        try:
            result = decode_audio(data)
        except AudioError as err:
            result = err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BOUND, f"peak {peak:,} B over the bound {BOUND:,} B"
    if record:
        event(type(result).__name__)  # --hypothesis-show-statistics: how often each outcome came up
    if isinstance(result, AudioError):
        assert 400 <= result.status < 500 and len(str(result)) > 15, result
        return result
    samples = result.samples
    assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) > 0
    assert np.isfinite(samples).all()
    assert result.duration <= 30.0 + 1e-6
    assert 1000 <= result.source_rate <= 192_000
    return result


# -- WAV: RIFF + fmt + data, every field free ----------------------------------------------------


@st.composite
def wav_files(draw) -> bytes:
    """Each fmt field sane (so some files decode) or hostile; the data chunk may lie about its size."""
    channels = draw(st.one_of(st.sampled_from([1, 2]), CHANNELS))
    rate = draw(st.one_of(st.just(44100), RATES))
    bits = draw(st.one_of(st.just(16), st.sampled_from([0, 1, 7, 8, 24, 32, 64, 65535])))
    tag = draw(st.one_of(st.just(1), st.sampled_from([3, 6, 7, 0x0002, 0xFFFE, 0, 0x55])))
    block_align = draw(st.one_of(st.just((channels * bits // 8) & 0xFFFF), st.integers(0, 65535)))
    byte_rate = draw(st.one_of(st.just((rate * block_align) & 0xFFFFFFFF), st.integers(0, 2**32 - 1)))
    payload = draw(st.one_of(st.binary(max_size=4096),
                             st.integers(0, 64).map(lambda k: bytes(k * 1024))))  # silence, up to 64 KB
    data_size = draw(st.sampled_from([len(payload), 0, 0xFFFFFFFF, max(0, len(payload) - 1), 2**31]))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, channel mask, sub-format GUID
        sub = draw(st.sampled_from([1, 3, 0x55]))
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", sub) + bytes.fromhex("000000001000800000aa00389b71")
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size) + payload
    riff_size = draw(st.sampled_from([len(body), 0, 0xFFFFFFFF, len(body) + 100]))
    return b"RIFF" + struct.pack("<I", riff_size) + body


@settings(FUZZ, max_examples=300)
@given(wav_files())
def test_hostile_wav_headers_get_audio_or_a_4xx(data):
    check(data)


# -- FLAC: STREAMINFO fields over real frames, or over bytes ------------------------------------------


def _real_flac(channels: int) -> bytes:
    return encode(tone(0.3, 44100, channels=channels), 44100, "FLAC", "PCM_16")


REAL_FLAC = {c: _real_flac(c) for c in (1, 2, 8)}


@st.composite
def flac_files(draw) -> bytes:
    """Each STREAMINFO field kept (so some files decode) or replaced by a hostile value."""
    channels = draw(st.sampled_from(sorted(REAL_FLAC)))
    source = REAL_FLAC[channels]
    info = bytearray(source[8:42])  # STREAMINFO's 34 bytes
    packed = int.from_bytes(info[10:18], "big")
    rate = draw(st.one_of(st.just(packed >> 44), st.sampled_from([0, 1, 192000, 192001, 655350, 2**20 - 1]),
                          st.integers(0, 2**20 - 1)))
    channels = draw(st.one_of(st.just(channels), st.integers(1, 8)))
    bits = draw(st.one_of(st.just(16), st.sampled_from([4, 5, 8, 24, 31, 32])))
    total = draw(st.one_of(st.just(packed & (2**36 - 1)),
                           st.sampled_from([0, 1, 2**36 - 1, 44100 * 29, 44100 * 31, 655350 * 30])))
    info[10:18] = ((rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total).to_bytes(8, "big")
    if draw(st.booleans()):
        info[0:4] = struct.pack(">HH", *draw(st.tuples(st.integers(0, 65535), st.integers(0, 65535))))
    tail = source[42:] if draw(st.integers(0, 3)) else draw(st.binary(max_size=4096))
    cut = draw(st.one_of(st.just(len(tail)), st.integers(0, len(tail))))
    return b"fLaC" + source[4:8] + bytes(info) + tail[:cut]


@settings(FUZZ, max_examples=250)
@given(flac_files())
def test_hostile_flac_headers_get_audio_or_a_4xx(data):
    check(data)


# -- Ogg/Vorbis: the identification header's channels and rate, page CRC kept valid ----------------------


@settings(FUZZ, max_examples=150)
@given(st.one_of(st.just(2), st.integers(0, 255)), st.one_of(st.just(44100), RATES),
       st.one_of(st.none(), st.integers(0, len(small_ogg()))))
def test_hostile_ogg_headers_get_audio_or_a_4xx(channels, rate, cut):
    data = ogg_with_header(channels, rate)
    check(data if cut is None else data[:cut])


# -- anything at all ---------------------------------------------------------------------------------


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.binary(max_size=2048),
                 st.sampled_from([b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM"]).flatmap(
                     lambda magic: st.binary(max_size=2048).map(lambda rest: magic + rest))))
def test_arbitrary_bytes_get_audio_or_a_4xx(data):
    check(data)


def test_the_checker_itself_sees_a_good_file_and_a_bomb():
    # The property is not vacuous: a valid file decodes, a hostile one is a 4xx.
    assert isinstance(check(REAL_FLAC[2], record=False), DecodedAudio)
    assert isinstance(check(ogg_with_header(2, 655_350), record=False), AudioError)


# -- atheris (coverage-guided) ---------------------------------------------------------------------------


def test_atheris_finds_nothing_in_a_short_run(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([REAL_FLAC[1], REAL_FLAC[8], small_ogg(), encode(tone(0.2), 8000, "WAV", "PCM_16")]):
        (corpus / f"seed{i}").write_bytes(seed)
    runs = os.environ.get("AUDIO_CNN_FUZZ_RUNS", "5000")  # ~1,500 inputs/s here; CI may run more
    done = subprocess.run([sys.executable, "tests/fuzz_decoder.py", f"-runs={runs}", "-max_len=16384",
                           "-rss_limit_mb=2048", "-seed=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Done {runs} runs" in done.stderr
