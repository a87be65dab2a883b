"""core.datasets: the dataset layout, folder checks, folds, download from a real loopback server, feature cache."""

from __future__ import annotations

import csv
import hashlib
import http.server
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, free_port
from esc50_factory import make_archive, make_dataset

from core.datasets import CSV_COLUMNS, DatasetError, Split, cross_validation_splits, load_dataset, read_metadata
from core.esc50_download import download_archive, prepare
from core.feature_cache import AudioFeatures, CachedFeatures
from core.features import FeatureConfig


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """5 classes x 5 folds x 2 clips of 0.5 s; copy it before damaging it."""
    return make_dataset(tmp_path_factory.mktemp("esc50") / "ESC-50-master", clips_per_fold=2, seconds=0.5)


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "ESC-50-master"))


def rewrite_csv(root: Path, edit) -> None:
    path = root / "meta" / "esc50.csv"
    rows = list(csv.reader(path.open()))
    rows = edit(rows)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


# -- layout and folds ----------------------------------------------------------------------


def test_generated_dataset_has_the_esc50_layout(pristine):
    rows = list(csv.DictReader((pristine / "meta" / "esc50.csv").open()))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == 5 * 5 * 2
    for row in rows:
        fold, src, take, target = re.fullmatch(r"(\d)-(\d+)-([A-Z])-(\d+)\.wav", row["filename"]).groups()
        assert (fold, src, take, target) == (row["fold"], row["src_file"], row["take"], row["target"])
        assert (pristine / "audio" / row["filename"]).is_file()
    assert {r["fold"] for r in rows} == {"1", "2", "3", "4", "5"}


def test_load_dataset_reads_classes_folds_and_clip_length(pristine):
    data = load_dataset(pristine, num_classes=5)
    assert data.classes == ("dog", "rooster", "pig", "cow", "frog")
    assert len(data.clips) == 50
    assert data.clip_samples == 22050
    assert len(data.indices([5])) == 10 and len(data.indices([1, 2, 3, 4])) == 40
    assert data.load_samples(0).shape == (22050,) and data.load_samples(0).dtype == np.float32


def test_cross_validation_holds_out_each_fold_once():
    splits = cross_validation_splits()
    assert [s.val_fold for s in splits] == [1, 2, 3, 4, 5]
    for s in splits:
        assert sorted(s.train_folds + (s.val_fold,)) == [1, 2, 3, 4, 5] and s.test_fold is None


def test_split_refuses_a_fold_used_twice_or_out_of_range():
    assert Split((1, 2, 3), 4, 5).protocol == "holdout"
    assert Split().protocol == "fixed-schedule"
    with pytest.raises(DatasetError, match="different folds"):
        Split((1, 2, 3, 4), 4)
    with pytest.raises(DatasetError, match="Folds are 1-5"):
        Split((1, 2, 3), 6)


# -- broken folders ------------------------------------------------------------------------


def test_missing_audio_file_is_named(dataset):
    victim = sorted((dataset / "audio").iterdir())[7]
    victim.unlink()
    with pytest.raises(DatasetError, match=f"audio/{victim.name} is listed in meta/esc50.csv but does not exist"):
        load_dataset(dataset, num_classes=5)


def test_unreadable_audio_file_is_named(dataset):
    victim = sorted((dataset / "audio").iterdir())[3]
    victim.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(DatasetError, match=f"audio/{victim.name} is not readable audio"):
        load_dataset(dataset, num_classes=5)


def test_missing_metadata_file_is_named(dataset):
    (dataset / "meta" / "esc50.csv").unlink()
    with pytest.raises(DatasetError, match="meta/esc50.csv does not exist"):
        load_dataset(dataset, num_classes=5)


def test_csv_without_a_column_names_the_column(dataset):
    rewrite_csv(dataset, lambda rows: [r[:2] + r[3:] for r in rows])  # drop "target"
    with pytest.raises(DatasetError, match="lacks the column\\(s\\) target"):
        read_metadata(dataset)


def test_csv_with_a_bad_fold_names_the_line(dataset):
    def edit(rows):
        rows[5][1] = "five"
        return rows

    rewrite_csv(dataset, edit)
    with pytest.raises(DatasetError, match="line 6: fold 'five'"):
        read_metadata(dataset)


def test_csv_with_a_fold_out_of_range_names_the_line(dataset):
    def edit(rows):
        rows[2][1] = "9"
        return rows

    rewrite_csv(dataset, edit)
    with pytest.raises(DatasetError, match="line 3: fold 9 is not one of 1-5"):
        read_metadata(dataset)


def test_wrong_class_count_says_how_many(dataset):
    with pytest.raises(DatasetError, match="has 5 classes \\(targets 0-4\\) but 50 were expected"):
        load_dataset(dataset, num_classes=50)


def test_a_target_with_two_names_is_refused(dataset):
    def edit(rows):
        rows[1][3] = "not_a_dog"
        return rows

    rewrite_csv(dataset, edit)
    with pytest.raises(DatasetError, match="names target 0 both"):
        load_dataset(dataset, num_classes=5)


# -- download from a real HTTP server on 127.0.0.1 -------------------------------------------


class ArchiveServer:
    """Serves `payload` at /ESC-50.zip with Range support; `cut_after` drops the connection early."""

    def __init__(self):
        self.payload = b""
        self.cut_after: int | None = None
        self.gate: threading.Event | None = None  # when set: every answer waits for it
        self.arrived = threading.Event()          # a request came in
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(dict(self.headers))
                server.arrived.set()
                if server.gate is not None:
                    server.gate.wait(timeout=300)
                if self.path != "/ESC-50.zip":
                    self.send_error(404, "Not Found")
                    return
                body, start = server.payload, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if match:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.cut_after is not None:
                    chunk = chunk[: server.cut_after]
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ESC-50.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archive(pristine, tmp_path_factory) -> bytes:
    return make_archive(pristine, tmp_path_factory.mktemp("zip") / "ESC-50.zip").read_bytes()


@pytest.fixture
def server(archive, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    s = ArchiveServer()
    s.payload = archive
    yield s
    s.close()


def test_download_fetches_verifies_and_extracts(server, tmp_path):
    root = prepare(tmp_path / "data", url=server.url, progress=False)
    assert root == tmp_path / "data" / "ESC-50-master"
    assert len(load_dataset(root, num_classes=5).clips) == 50
    assert not list((tmp_path / "data").glob("*.zip*"))  # archive and part removed


def test_two_processes_preparing_one_folder_download_it_once(server, tmp_path):
    """The second waits for the first (a lock), then finds the dataset: no second download, no clash."""
    server.gate = threading.Event()
    code = f"from core.esc50_download import prepare; print(prepare({str(tmp_path / 'data')!r}, url={server.url!r}))"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        assert server.arrived.wait(timeout=300)  # the first holds the lock, waiting for the gated answer
        assert len(server.requests) == 1
        second = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in second.stderr], daemon=True).start()
        said = ""
        while "waiting for it" not in said:  # until it says it waits, or it asks the server too (no lock)
            assert len(server.requests) == 1, "the second process downloaded too"
            assert second.poll() is None, said
            try:
                said += lines.get(timeout=1)
            except queue.Empty:
                pass
    finally:
        server.gate.set()
    out_first, _ = first.communicate(timeout=300)
    out_second, _ = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0
    assert out_first.strip() == out_second.strip() == str(tmp_path / "data" / "ESC-50-master")
    assert len(server.requests) == 1
    assert len(load_dataset(Path(out_first.strip()), num_classes=5).clips) == 50


def test_an_existing_dataset_is_used_without_downloading(server, tmp_path):
    first = prepare(tmp_path / "data", url=server.url, progress=False)
    server.requests.clear()
    assert prepare(tmp_path / "data", url=server.url, progress=False) == first
    assert server.requests == []


def test_download_resumes_a_partial_file_with_a_range_request(server, archive, tmp_path):
    half = len(archive) // 2
    (tmp_path / "ESC-50.zip.part").write_bytes(archive[:half])
    path = download_archive(server.url, tmp_path / "ESC-50.zip", progress=False)
    assert server.requests[-1]["Range"] == f"bytes={half}-"
    assert path.read_bytes() == archive


def test_a_dropped_connection_keeps_the_part_and_the_next_call_finishes(server, archive, tmp_path):
    server.cut_after = len(archive) // 3
    with pytest.raises(DatasetError, match="stopped at .* bytes; run again to resume"):
        download_archive(server.url, tmp_path / "ESC-50.zip", progress=False)
    assert (tmp_path / "ESC-50.zip.part").stat().st_size == len(archive) // 3
    server.cut_after = None
    assert download_archive(server.url, tmp_path / "ESC-50.zip", progress=False).read_bytes() == archive


def test_a_corrupted_archive_is_rejected_and_nothing_is_extracted(server, archive, tmp_path):
    damaged = bytearray(archive)
    for i in range(len(damaged) // 2, len(damaged) // 2 + 64):
        damaged[i] ^= 0xFF
    server.payload = bytes(damaged)
    with pytest.raises(DatasetError, match="corrupted"):
        prepare(tmp_path / "data", url=server.url, progress=False)
    assert not (tmp_path / "data" / "ESC-50-master").exists()
    assert not list((tmp_path / "data").glob("ESC-50.zip*"))  # a bad part is not resumed later


def test_a_checksum_mismatch_is_rejected(server, archive, tmp_path):
    good = hashlib.sha256(archive).hexdigest()
    assert download_archive(server.url, tmp_path / "a.zip", sha256=good, progress=False).exists()
    with pytest.raises(DatasetError, match="has sha256 .* expected 0000"):
        download_archive(server.url, tmp_path / "b.zip", sha256="0" * 64, progress=False)


def test_an_http_error_is_a_dataset_error(server, tmp_path):
    with pytest.raises(DatasetError, match="HTTP 404"):
        prepare(tmp_path / "data", url=server.url.replace("ESC-50.zip", "missing.zip"), progress=False)


def test_no_dataset_and_no_download_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match=f"No ESC-50 dataset in {tmp_path}"):
        prepare(tmp_path, download=False)


# -- feature cache --------------------------------------------------------------------------


def test_feature_cache_is_built_once_as_float16(dataset):
    data = load_dataset(dataset, num_classes=5)
    first = CachedFeatures(data, FeatureConfig(), progress=False)
    assert first.built == 50 and first.features.dtype == torch.float16
    assert first.features.shape == (50, 128, FeatureConfig().frames(22050))
    again = CachedFeatures(data, FeatureConfig(), progress=False)
    assert again.built == 0 and torch.equal(again.features, first.features)


def test_feature_cache_is_keyed_by_the_feature_config_but_not_its_normalisation(dataset):
    data = load_dataset(dataset, num_classes=5)
    base = CachedFeatures(data, FeatureConfig(), progress=False)
    normalised = CachedFeatures(data, replace(FeatureConfig(), norm_mean=-40.0, norm_std=20.0), progress=False)
    assert normalised.folder == base.folder and normalised.built == 0
    idx = torch.tensor([0, 1])
    assert torch.allclose(normalised.batch(idx), (base.batch(idx) + 40.0) / 20.0)
    other = CachedFeatures(data, replace(FeatureConfig(), n_mels=64), progress=False)
    assert other.folder != base.folder and other.built == 50 and other.features.shape[1] == 64


def test_cached_features_equal_features_computed_from_audio(dataset):
    data = load_dataset(dataset, num_classes=5)
    idx = torch.tensor([0, 17, 42])
    cached = CachedFeatures(data, FeatureConfig(), progress=False).batch(idx)
    computed = AudioFeatures(data, FeatureConfig()).batch(idx)
    assert torch.allclose(cached, computed, atol=0.05)  # float16 rounding of dB values
