"""core.classify_folder: a folder of audio files -> results.csv, batched, and bad files are rows, not crashes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from audio_factory import encode, tone, wav_bytes
from conftest import ROOT

from core.classify_folder import COLUMNS, classify_items, classify_to_csv, find_audio_files, read_chunks


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    (root / "nested").mkdir()
    for i in range(5):
        (root / f"dog-{i}.wav").write_bytes(wav_bytes(1.0, freq=200 + 100 * i, seed=i))
    (root / "nested" / "rain.flac").write_bytes(encode(tone(2.0, 22050), 22050, "FLAC"))
    (root / "nested" / "long.wav").write_bytes(wav_bytes(40.0, 8000))
    (root / "noise.wav").write_bytes(np.random.default_rng(1).bytes(5000))
    (root / "cut.wav").write_bytes(wav_bytes(1.0)[:30000])
    (root / "empty.mp3").write_bytes(b"")
    (root / "notes.txt").write_text("not audio, and not named like audio: skipped")
    return root


EXPECTED = {  # file -> (status, error code or "")
    **{f"dog-{i}.wav": ("ok", "") for i in range(5)},
    "nested/rain.flac": ("ok", ""),
    "nested/long.wav": ("error", "audio_too_long"),
    "noise.wav": ("error", "not_audio"),
    "cut.wav": ("error", "truncated_audio"),
    "empty.mp3": ("error", "empty_audio"),
}


@pytest.fixture(scope="module")
def cli_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "results.csv"
    env = {**os.environ, "AUDIO_CNN_RUNS_DIR": str(tmp_path_factory.mktemp("no-runs")), "AUDIO_CNN_CHECKPOINT": ""}
    proc = subprocess.run([sys.executable, "-m", "core.classify_folder", str(folder), "--out", str(out), "--top-k", "4"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    with open(out, newline="") as f:
        return proc, list(csv.DictReader(f))


def test_every_audio_file_gets_one_row_in_path_order(cli_run):
    proc, rows = cli_run
    assert proc.returncode == 0, proc.stderr
    assert [r["file"] for r in rows] == sorted(EXPECTED)


def test_bad_files_are_error_rows_with_their_code(cli_run):
    _, rows = cli_run
    for row in rows:
        status, code = EXPECTED[row["file"]]
        assert row["status"] == status, row
        if status == "error":
            assert row["error"].startswith(code + ": ") and len(row["error"]) > len(code) + 15
            assert row["label"] == "" and row["confidence"] == ""


def test_ok_rows_have_label_confidence_top_k_and_duration(cli_run):
    _, rows = cli_run
    for row in (r for r in rows if r["status"] == "ok"):
        top = [item.rsplit(":", 1) for item in row["top_k"].split(";")]
        assert len(top) == 4 and top[0] == [row["label"], row["confidence"]]
        confidences = [float(c) for _, c in top]
        assert confidences == sorted(confidences, reverse=True) and 0 < confidences[0] <= 1
    assert float(next(r for r in rows if r["file"] == "nested/rain.flac")["duration_s"]) == pytest.approx(2.0)


def test_the_cli_shows_progress_and_a_summary(cli_run):
    proc, _ = cli_run
    assert "classifying" in proc.stderr and "10/10" in proc.stderr
    assert "10 files: 6 classified, 4 errors" in proc.stderr
    assert "UNTRAINED" in proc.stderr


def test_a_missing_folder_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.classify_folder", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


def test_equal_lengths_share_forward_passes_and_match_single_analysis(untrained_predictor, folder):
    calls = []
    original = untrained_predictor.probabilities

    def spy(waves):
        calls.append(tuple(waves.shape))
        return original(waves)

    items = [(p.name, p.read_bytes()) for p in sorted(folder.glob("dog-*.wav"))]
    untrained_predictor.probabilities = spy
    try:
        rows = classify_items(untrained_predictor, items, top_k=3, batch_size=4)
    finally:
        del untrained_predictor.probabilities
    assert calls == [(4, 44100), (1, 44100)]
    for (name, data), row in zip(items, rows, strict=True):
        single = untrained_predictor.analyze_bytes(data, top_k=3, feature_maps="none").predictions[0]
        assert row["file"] == name and row["label"] == single.label
        assert float(row["confidence"]) == pytest.approx(single.confidence, abs=1e-4)


def test_audio_files_are_found_recursively_by_suffix(folder):
    assert [p.relative_to(folder).as_posix() for p in find_audio_files(folder)] == sorted(EXPECTED)


def test_a_file_that_vanished_is_reported_not_raised(tmp_path):
    gone = tmp_path / "gone.wav"
    [(name, err)] = next(read_chunks([gone], tmp_path, 8))
    assert name == "gone.wav" and isinstance(err, OSError)


# -- streaming, continuing, and what a rerun skips ------------------------------------------------


def cli(folder, out, *extra, env=None):
    env = {**os.environ, "AUDIO_CNN_CHECKPOINT": "", "AUDIO_CNN_RUN": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "core.classify_folder", str(folder), "--out", str(out),
                           "--no-progress", *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def read_rows(out):
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def test_the_same_command_again_skips_every_file_already_in_the_csv(folder, tmp_path):
    out = tmp_path / "results.csv"
    env = {"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")}
    first = cli(folder, out, env=env)
    assert first.returncode == 0, first.stderr
    rows = read_rows(out)
    again = cli(folder, out, env=env)
    assert again.returncode == 0, again.stderr
    assert "10 files: 6 classified, 4 errors (10 from an earlier run)" in again.stderr
    assert read_rows(out) == rows


def test_an_interrupted_run_keeps_its_rows_and_the_next_classifies_only_the_rest(untrained_predictor, folder,
                                                                                 tmp_path):
    out = tmp_path / "results.csv"
    seen: list[str] = []

    def dies_on_the_third_chunk(items):
        seen.extend(name for name, _ in items)
        if len(seen) > 4:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) while the third chunk is classified
        return classify_items(untrained_predictor, items)

    with pytest.raises(KeyboardInterrupt):
        classify_to_csv(folder, out, dies_on_the_third_chunk, checkpoint="untrained", chunk_size=2, progress=False)
    kept = read_rows(out)
    assert [r["file"] for r in kept] == sorted(EXPECTED)[:4]  # two chunks, flushed as they came back
    with open(out, "a", newline="") as f:
        f.write("nested/rain.flac,ok,dog")  # and a row a kill cut in half

    seen.clear()
    tally = classify_to_csv(folder, out, lambda items: seen.extend(n for n, _ in items) or
                            classify_items(untrained_predictor, items), checkpoint="untrained", chunk_size=2,
                            progress=False)
    assert seen == sorted(EXPECTED)[4:]  # the cut row's file is classified again, nothing else twice
    rows = read_rows(out)
    assert sorted(r["file"] for r in rows) == sorted(EXPECTED) and rows[:4] == kept
    assert (tally.ok + tally.errors, tally.skipped) == (10, 4)


def test_a_csv_of_another_checkpoint_is_not_continued(folder, tmp_path):
    out = tmp_path / "results.csv"
    out.write_text(",".join(COLUMNS) + "\ndog-0.wav,ok,dog,0.9,dog:0.9,1.000,,0123456789ab\n")
    proc = cli(folder, out, env={"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")})
    assert proc.returncode == 2 and "checkpoint '0123456789ab'" in proc.stderr and "--overwrite" in proc.stderr
    assert read_rows(out)[0]["checkpoint"] == "0123456789ab"  # untouched
    again = cli(folder, out, "--overwrite", env={"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")})
    assert again.returncode == 0 and {r["checkpoint"] for r in read_rows(out)} == {"untrained"}
    assert len(read_rows(out)) == 10


def test_a_file_that_is_not_a_results_csv_is_never_overwritten_silently(folder, tmp_path):
    out = tmp_path / "notes.csv"
    out.write_text("name,phone\nalice,123\n")
    proc = cli(folder, out, env={"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs")})
    assert proc.returncode == 2 and "is not a results CSV of this tool" in proc.stderr
    assert out.read_text() == "name,phone\nalice,123\n"


def test_a_file_over_the_body_limit_is_an_error_row_without_being_read(tmp_path):
    (tmp_path / "big.wav").write_bytes(wav_bytes(1.0) + b"\x00" * 2_000_000)
    (tmp_path / "small.wav").write_bytes(wav_bytes(0.5))
    out = tmp_path / "out" / "results.csv"
    proc = cli(tmp_path, out, env={"AUDIO_CNN_RUNS_DIR": str(tmp_path / "no-runs"), "AUDIO_CNN_MAX_BODY_MB": "1"})
    assert proc.returncode == 0, proc.stderr
    by_file = {r["file"]: r for r in read_rows(out)}
    assert by_file["big.wav"]["error"].startswith("too_large: 2.1 MB is over the 1.0 MB limit")
    assert by_file["small.wav"]["status"] == "ok"


def test_chunks_in_flight_run_together_and_never_more_than_asked(untrained_predictor, folder, tmp_path):
    import threading

    together = threading.Barrier(2, timeout=120)  # breaks (fails the test) unless two chunks run at once
    lock, active, most = threading.Lock(), [0], [0]

    def remote(items):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            together.wait()
            return classify_items(untrained_predictor, items)
        finally:
            with lock:
                active[0] -= 1

    tally = classify_to_csv(folder, tmp_path / "r.csv", remote, checkpoint="untrained", chunk_size=3, in_flight=2,
                            progress=False)  # 10 files: chunks of 3, 3, 3, 1
    assert most[0] == 2 and tally.ok + tally.errors == 10
