"""Coverage-guided fuzzing of core.audio.decode_audio with atheris (libFuzzer for Python).

    python tests/fuzz_decoder.py -runs=100000 -max_len=16384 CORPUS_DIR

The property is tests/test_decoder_fuzz.py's: every input decodes to valid
audio or raises an AudioError with a 4xx status, and no decode traces more
than core.audio.decode_memory_bound(). Anything else raises, and libFuzzer
saves the input as crash-<sha1> in the working directory. core.audio's own
Python is instrumented, so inputs that reach new branches of it are kept.
libsndfile's C code is not instrumented: its paths are reached by mutation
of the seeds (a real FLAC, Ogg and WAV), not steered by coverage.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["core"]):
    from core.audio import AudioError, decode_audio, decode_memory_bound

BOUND = decode_memory_bound()


def test_one_input(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            audio = decode_audio(data)
        except AudioError as err:
            if not 400 <= err.status < 500:
                raise AssertionError(f"{type(err).__name__} has status {err.status}") from None
            audio = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if peak >= BOUND:
        raise AssertionError(f"a decode traced {peak:,} B, over the bound of {BOUND:,} B")
    if audio is not None:
        samples = audio.samples
        if samples.dtype.name != "float32" or samples.ndim != 1 or len(samples) == 0:
            raise AssertionError(f"bad samples: {samples.dtype} {samples.shape}")
        if audio.duration > 30.0 + 1e-6:
            raise AssertionError(f"accepted {audio.duration} s, over the 30 s limit")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
