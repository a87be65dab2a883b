"""Hostile but well-formed audio files for tests, written with soundfile and patched by hand.

- `flac_silence`: a FLAC of silence at any rate/channels, written block by block
  (the bomb, 29.9 s x 8 channels at 655,350 Hz, is ~170 KB and never exists
  as an array);
- `without_length`: the same FLAC with STREAMINFO's total-samples field zeroed,
  as streaming encoders write it ("length unknown");
- `wav_with_data_size`: a WAV whose data chunk claims another size;
- `ogg_with_header`: a real Ogg/Vorbis file whose identification header
  claims other channels/rate, with the page CRC recomputed so libogg reads it.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

import numpy as np
import soundfile as sf
from audio_factory import encode, tone

BOMB = {"seconds": 29.9, "rate": 655_350, "channels": 8}  # issue 10: 170 KB -> +746 MB RSS before


@lru_cache(maxsize=8)
def flac_silence(seconds: float, rate: int, channels: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    step = max(1, (1 << 20) // channels)
    block = np.zeros((step, channels), np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC", subtype=subtype) as f:
        left = int(round(seconds * rate))
        while left > 0:
            f.write(block[: min(left, step)])
            left -= step
    return buf.getvalue()


def flac_bomb() -> bytes:
    return flac_silence(BOMB["seconds"], BOMB["rate"], BOMB["channels"])


def without_length(flac: bytes) -> bytes:
    """Zero STREAMINFO's 36-bit total-samples field (bytes 18-25 hold rate|channels|bits|total)."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0, "STREAMINFO must be the first block"
    out = bytearray(flac)
    packed = int.from_bytes(out[18:26], "big") & ~((1 << 36) - 1)
    out[18:26] = packed.to_bytes(8, "big")
    return bytes(out)


def wav_with_data_size(data: bytes, size: int) -> bytes:
    """Rewrite the `data` chunk size of a soundfile-written WAV (fmt chunk first, data right after)."""
    out = bytearray(data)
    pos = out.find(b"data", 12)
    out[pos + 4 : pos + 8] = struct.pack("<I", size)
    return bytes(out)


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@lru_cache(maxsize=1)
def small_ogg() -> bytes:
    return encode(tone(0.5, 44100, channels=2), 44100, "OGG", "VORBIS")


def ogg_with_header(channels: int, rate: int, data: bytes | None = None) -> bytes:
    """A real Ogg/Vorbis file whose first page (the identification header) claims `channels` and `rate`."""
    out = bytearray(small_ogg() if data is None else data)
    ident = out.find(b"\x01vorbis")
    assert out[:4] == b"OggS" and ident > 0
    out[ident + 11] = channels & 0xFF
    out[ident + 12 : ident + 16] = struct.pack("<I", rate & 0xFFFFFFFF)
    segments = out[26]
    page_len = 27 + segments + sum(out[27 : 27 + segments])
    out[22:26] = b"\0\0\0\0"
    out[22:26] = struct.pack("<I", _ogg_crc(bytes(out[:page_len])))
    return bytes(out)
