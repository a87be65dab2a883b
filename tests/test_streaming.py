"""core.streaming and core.live in process: PCM decoding, windows, spectrogram blocks, events, a live session.

The server side of the same code is tests/test_stream_server.py.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime

import numpy as np
import pytest
import soundfile as sf
from audio_factory import tone, wav_bytes

from core.audio import SAMPLE_RATE, decode_audio
from core.client import LocalBackend
from core.live import LiveSession
from core.live_events import EVENT_COLUMNS, EventDetector, events_csv
from core.results import Prediction, window_starts
from core.stream_protocol import BadFrameError, BadStartError, ChunkTooLargeError, WindowResult, parse_start
from core.streaming import LocalStream, PcmDecoder, StreamAnalyzer, WindowBuffer

WINDOW = 5 * SAMPLE_RATE


def interleaved_s16(x: np.ndarray) -> bytes:
    """(frames,) or (frames, channels) float in [-1, 1] -> 16-bit interleaved PCM."""
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def wav_pcm(wav: bytes) -> bytes:
    """The 16-bit interleaved samples inside a WAV file: what a device streaming that file sends."""
    return sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)[0].astype("<i2").tobytes()


def chunks(data: bytes, frame_bytes: int, sizes=(960, 4410, 1, 7000)):
    """Cut PCM into messages of varying whole-frame sizes (the decoder must not care where)."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)] * frame_bytes
        yield data[pos : pos + n]
        pos, i = pos + n, i + 1


# -- windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.5, 5.0, 5.01, 12.0, 13.3])
@pytest.mark.parametrize("hop_s", [1.0, 2.5, 5.0])
def test_window_buffer_gives_evaluate_windows_whatever_the_chunking(seconds, hop_s):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    buffer, got, pos = WindowBuffer(WINDOW, int(hop_s * SAMPLE_RATE)), [], 0
    while pos < len(x):
        n = int(rng.integers(1, 50_000))
        got += buffer.push(x[pos : pos + n])
        pos += n
    got += buffer.finish()
    # /evaluate: window_starts, or the whole clip when it is no longer than one window
    assert [s for s, _ in got] == (window_starts(len(x), WINDOW, int(hop_s * SAMPLE_RATE)) or [0])
    for s, w in got:
        assert np.array_equal(w, x[s : s + WINDOW])


def test_the_window_buffer_holds_one_window_however_long_the_stream():
    buffer = WindowBuffer(WINDOW, SAMPLE_RATE)
    for _ in range(60):
        buffer.push(np.ones(SAMPLE_RATE, np.float32))
    assert buffer._ring.nbytes == WINDOW * 4 and buffer.total == 60 * SAMPLE_RATE


# -- PCM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate,channels", [(44100, 1), (48000, 2), (16000, 1), (22050, 2)])
def test_chunked_pcm_decodes_to_exactly_what_a_file_of_it_decodes_to(rate, channels):
    wav = wav_bytes(3.3, rate, channels=channels, seed=3)
    pcm = wav_pcm(wav)
    decoder = PcmDecoder("s16le", rate, channels)
    got = np.concatenate([decoder.decode(c) for c in chunks(pcm, 2 * channels)] + [decoder.flush()])
    # The same 16-bit samples as a WAV through /evaluate's decoder (soxr HQ on the whole clip).
    want = decode_audio(wav).samples
    assert got.shape == want.shape and np.array_equal(got, want)


def test_float_pcm_is_taken_as_is():
    x = tone(1.0, SAMPLE_RATE, seed=4)
    decoder = PcmDecoder("f32le", SAMPLE_RATE, 1)
    assert np.array_equal(decoder.decode(x.astype("<f4").tobytes()), x)


def test_a_message_of_partial_frames_is_a_bad_frame():
    with pytest.raises(BadFrameError, match="not a whole number of 4-byte frames"):
        PcmDecoder("s16le", 48000, 2).decode(b"\x00" * 10)


def test_nan_samples_are_a_bad_frame():
    with pytest.raises(BadFrameError, match="NaN"):
        PcmDecoder("f32le", 48000, 1).decode(np.array([0.1, np.nan], "<f4").tobytes())


def test_a_message_over_one_second_is_refused():
    with pytest.raises(ChunkTooLargeError, match="limit is 1 s"):
        PcmDecoder("s16le", 8000, 1).decode(b"\x00" * 2 * 8001)


# -- the start message ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,match", [
    (None, "must be a JSON start message"),
    ("not json", "not valid JSON"),
    ('{"type": "start", "format": "s16le"}', "missing field 'sample_rate'"),
    ('{"type": "start", "format": "s24le", "sample_rate": 48000}', "format"),
    ('{"type": "start", "format": "s16le", "sample_rate": 500}', "sample_rate"),
    ('{"type": "start", "format": "s16le", "sample_rate": 48000, "colour": 1}', "unknown field 'colour'"),
    ('{"type": "start", "format": "s16le", "sample_rate": 48000, "watch": ["unicorn"]}', "Unknown classes.*unicorn"),
    ('{"type": "start", "format": "s16le", "sample_rate": 48000, "hop": 6}', "may not exceed the window"),
])
def test_a_wrong_start_message_says_what_is_wrong(text, match):
    with pytest.raises(BadStartError, match=match):
        parse_start(text, ["dog", "rain"], 5.0)


# -- the analyzer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(untrained_predictor):
    return untrained_predictor


def analyzer(predictor, **start) -> StreamAnalyzer:
    parsed = parse_start(json.dumps({"type": "start", "format": "f32le", "sample_rate": SAMPLE_RATE, **start}),
                         predictor.classes, 5.0)
    return StreamAnalyzer(parsed, predictor.spectrograms_and_probabilities, predictor.classes, 5.0, 1.0)


def feed_all(a: StreamAnalyzer, x: np.ndarray) -> list[WindowResult]:
    out = []
    for i in range(0, len(x), SAMPLE_RATE // 2):
        out += a.feed(x[i : i + SAMPLE_RATE // 2].astype("<f4").tobytes())
    return out + a.finish()


def test_new_columns_tile_the_stream_without_gaps_or_repeats(predictor):
    x = tone(9.0, seed=5)
    results = feed_all(analyzer(predictor, spectrogram="new", hop=1.0), x)
    per_column = 512 / SAMPLE_RATE
    cursor = 0.0
    for r in results:
        # each block starts within one column after the previous one ended, never before it
        assert cursor <= r.spectrogram_start < cursor + per_column + 1e-9
        cursor = r.spectrogram_start + r.spectrogram.shape[1] * per_column
    assert results[0].spectrogram.shape == (128, 431)       # the whole first window
    assert all(r.spectrogram.shape[1] in (86, 87) for r in results[1:])  # then one hop's columns
    assert cursor >= 9.0 - per_column


def test_window_mode_sends_the_windows_model_input_and_watch_reports_any_rank(predictor):
    x = tone(6.0, seed=6)
    results = feed_all(analyzer(predictor, spectrogram="window", watch=["dog", "rain"], top_k=2), x)
    spec, probs = predictor.spectrograms_and_probabilities(x[None, :WINDOW])
    assert np.array_equal(results[0].spectrogram, spec[0])
    assert results[0].watched == {"dog": float(probs[0, predictor.classes.index("dog")]),
                                  "rain": float(probs[0, predictor.classes.index("rain")])}
    assert len(results[0].predictions) == 2


def test_a_local_stream_is_a_window_stream(predictor):
    stream = LocalStream(predictor, {"format": "s16le", "sample_rate": 16000, "channels": 1}, 5.0, 1.0)
    pcm = interleaved_s16(tone(6.0, 16000, seed=8))
    for c in chunks(pcm, 2, sizes=(1600,)):
        stream.send(c)
    windows = stream.receive() + stream.finish()
    assert [w.start for w in windows] == [0.0, 1.0]
    assert stream.ready["window"] == 5.0 and stream.ready["model"]["trained"] is False


# -- events ----------------------------------------------------------------------------------------------


def window(start: float, **confidences: float) -> WindowResult:
    preds = [Prediction(k, v) for k, v in sorted(confidences.items(), key=lambda kv: -kv[1])]
    return WindowResult(index=int(start), start=start, end=start + 5, predictions=preds)


def test_consecutive_windows_over_a_threshold_are_one_event_that_closes_below_it():
    t0 = datetime(2026, 1, 2, 12, 3, 30)
    detector = EventDetector({"glass_breaking": 0.8}, t0)
    assert detector.add(window(0, dog=0.5, glass_breaking=0.1)) == []
    assert detector.add(window(1, glass_breaking=0.85)) == []
    assert detector.add(window(2, glass_breaking=0.91)) == []
    [event] = detector.add(window(3, glass_breaking=0.2, rain=0.7))
    assert (event.peak, event.windows, event.peak_window_start) == (0.91, 2, 2)
    # The sound lies where windows 1-6 s and 2-7 s overlap: 2-6 s.
    assert (event.t_from, event.t_to) == (2, 6)
    assert "Glass breaking at 12:03:32, 0.91" in event.describe()


def test_a_class_outside_the_top_k_counts_as_zero_unless_watched():
    detector = EventDetector({"siren": 0.0001}, datetime(2026, 1, 1))
    w = window(0, dog=0.9)
    assert detector.add(w) == [] and detector.open == {}
    detector.add(WindowResult(0, 0, 5, w.predictions, watched={"siren": 0.001}))
    assert list(detector.open) == ["siren"]
    assert [e.label for e in detector.close()] == ["siren"]


def test_events_csv_has_one_row_per_event_with_wall_clock_times():
    detector = EventDetector({"dog": 0.5}, datetime(2026, 1, 2, 8, 0, 0))
    detector.add(window(10, dog=0.7))
    text = events_csv(detector.close())
    header, row = text.strip().splitlines()
    assert header.split(",") == list(EVENT_COLUMNS)
    assert row.startswith("2026-01-02T08:00:10,dog,Animals,0.7,0.5,10,15,1")


# -- a live session (what the Live page drives) -----------------------------------------------------------


def wait_until(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def session(predictor):
    live = LiveSession(LocalBackend(predictor).stream, thresholds={"dog": 0.0})
    yield live
    live.close()


def push_seconds(session, seconds: float, rate=48000, seed=9):
    pcm = interleaved_s16(tone(seconds, rate, seed=seed))
    for c in chunks(pcm, 2, sizes=(rate // 50,)):   # 20 ms frames, as WebRTC delivers them
        session.push(c, rate, 1)


def test_a_live_session_analyses_pushed_frames_and_keeps_the_last_run_after_stop(session):
    # In two parts, each within the session's 5 s backlog, so that nothing is dropped.
    push_seconds(session, 4.0, seed=9)
    wait_until(lambda: session.snapshot().received_s >= 4.0)
    push_seconds(session, 3.0, seed=10)
    wait_until(lambda: len(session.snapshot().windows) == 3)
    session.stop()
    wait_until(lambda: not session.snapshot().running)
    snap = session.snapshot()
    assert [w.start for w in snap.windows] == [0.0, 1.0, 2.0] and snap.error is None and snap.dropped_s == 0
    assert snap.spectrogram.shape[0] == 128 and snap.spectrogram_start == 0.0
    assert [e.label for e in snap.events] == ["dog"]  # a zero threshold: one event over the whole run
    assert session.csv().count("\n") == 2


def test_a_live_session_that_falls_behind_drops_the_oldest_audio_and_says_how_much(session):
    push_seconds(session, 30.0)   # pushed in milliseconds: far faster than windows are analysed
    wait_until(lambda: session.snapshot().received_s + session.snapshot().dropped_s > 29.9)
    snap = session.snapshot()
    assert snap.dropped_s >= 10.0 and snap.received_s <= 20.5


def test_a_failing_stream_is_reported_and_the_next_frames_start_again(predictor):
    live = LiveSession(LocalBackend(predictor).stream, top_k=99)  # top_k over 50: refused at start
    push_seconds(live, 0.1)
    wait_until(lambda: live.snapshot().error is not None)
    assert "top_k" in live.snapshot().error and not live.snapshot().running
    live.top_k = 3
    push_seconds(live, 6.0)
    wait_until(lambda: live.snapshot().windows)
    assert live.snapshot().error is None
    live.close()
