"""core.custom_datasets: class subfolders and labels.csv, the seeded split, the check table, each refusal."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from custom_data_factory import make_folders, make_labels_csv
from esc50_factory import make_dataset

from core.custom_datasets import detect_layout, open_dataset, split_csv, stratified_folds
from core.datasets import DatasetError, fit_clip

COUNTS = {"saw": 6, "drill": 5, "Hammer blows": 7}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    return make_folders(tmp_path_factory.mktemp("folders") / "tools", COUNTS)


@pytest.fixture
def folders_copy(folders, tmp_path) -> Path:
    return Path(shutil.copytree(folders, tmp_path / "tools"))


def quiet(**kwargs):
    return {"report": None, **kwargs}


# -- reading the layouts -----------------------------------------------------------------------


def test_each_layout_is_detected(folders, tmp_path):
    assert detect_layout(folders) == "folders"
    assert detect_layout(make_labels_csv(tmp_path / "csv", {"a": 5, "b": 5})) == "labels.csv"
    assert detect_layout(make_dataset(tmp_path / "esc" / "ESC-50-master", clips_per_fold=1, seconds=0.2)) == "esc50"
    assert detect_layout(tmp_path / "nothing-yet") is None


def test_class_subfolders_give_sorted_classes_and_every_file(folders):
    data = open_dataset(folders, folds=5, **quiet())
    assert data.classes == ("Hammer blows", "drill", "saw")  # sorted names: index = output unit
    assert data.layout == "folders" and len(data.clips) == sum(COUNTS.values())
    assert Counter(data.classes[c.target] for c in data.clips) == Counter(COUNTS)
    assert {Path(c.filename).suffix for c in data.clips} == {".wav", ".flac", ".ogg", ".mp3"}
    assert all(data.path(c).is_file() for c in data.clips)


def test_the_split_is_stratified_seeded_and_reproducible(folders):
    a = open_dataset(folders, folds=5, split_seed=0, **quiet())
    b = open_dataset(folders, folds=5, split_seed=0, **quiet())
    c = open_dataset(folders, folds=5, split_seed=1, **quiet())
    assert [x.fold for x in a.clips] == [x.fold for x in b.clips]
    assert [x.fold for x in a.clips] != [x.fold for x in c.clips]
    assert a.folds == (1, 2, 3, 4, 5)
    for name in COUNTS:  # every class is in every fold, spread as evenly as it can be
        per_fold = Counter(x.fold for x in a.clips if x.category == name)
        assert set(per_fold) == set(a.folds) and max(per_fold.values()) - min(per_fold.values()) <= 1
    assert a.split["method"] == "stratified-k-fold" and a.split["seed"] == 0 and a.split["k"] == 5


def test_the_split_file_lists_every_clip_with_its_label_and_fold(folders):
    data = open_dataset(folders, folds=3, **quiet())
    rows = list(csv.DictReader(split_csv(data).splitlines()))
    assert [(r["filename"], r["label"], int(r["fold"])) for r in rows] == \
        [(c.filename, c.category, c.fold) for c in data.clips]


def test_stratified_folds_follow_scikit_learn():
    folds = stratified_folds([0] * 4 + [1] * 8, 4, seed=3)
    assert Counter(f for f, t in zip(folds, [0] * 4 + [1] * 8, strict=True) if t == 0) == {1: 1, 2: 1, 3: 1, 4: 1}


def test_labels_csv_without_folds_gets_the_split(tmp_path):
    data = open_dataset(make_labels_csv(tmp_path / "d", {"b": 5, "a": 6}), folds=5, **quiet())
    assert data.classes == ("a", "b") and data.layout == "labels.csv" and data.folds == (1, 2, 3, 4, 5)


def test_labels_csv_folds_are_kept(tmp_path):
    data = open_dataset(make_labels_csv(tmp_path / "d", {"b": 4, "a": 4}, folds=2), folds=5, **quiet())
    assert data.folds == (1, 2)
    assert [c.fold for c in data.clips] == [k % 2 + 1 for k in range(4)] * 2
    assert data.split["method"] == "labels.csv fold column"


def test_clips_are_cropped_and_padded_to_the_configured_duration(folders):
    data = open_dataset(folders, folds=5, clip_seconds=0.3, **quiet())
    assert data.clip_samples == round(0.3 * 44100)
    assert all(len(data.load_samples(i)) == data.clip_samples for i in range(4))
    longest = open_dataset(folders, folds=5, **quiet())  # default: the longest clip when all are under 5 s
    assert longest.clip_samples == pytest.approx(0.5 * 1.25 * 44100, abs=2)
    x = np.arange(1, 6, dtype=np.float32)
    assert fit_clip(x, 3).tolist() == [1, 2, 3] and fit_clip(x, 7).tolist() == [1, 2, 3, 4, 5, 0, 0]


def test_the_check_table_lists_classes_durations_and_rates(folders):
    reports = []
    open_dataset(folders, folds=5, report=reports.append)
    table = reports[0]
    assert table.startswith("dataset check: folders in")
    assert "Hammer blows" in table and "3 classes, 18 readable clips, 0 unreadable" in table
    drill = next(line for line in table.splitlines() if line.startswith("drill"))
    assert drill.split()[1] == "5" and "22050, 44100, 48000" in drill and "0.38-0.62" in drill


# -- what cannot train is refused, with its reason --------------------------------------------


def test_a_class_with_fewer_clips_than_folds_is_refused(folders):
    with pytest.raises(DatasetError, match=r"fewer clips than the 6 folds of the split: drill \(5\)"):
        open_dataset(folders, folds=6, **quiet())


def test_no_audio_at_all_is_refused(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "notes.txt").write_text("not audio")
    with pytest.raises(DatasetError, match="no audio at all"):
        open_dataset(tmp_path / "d", **quiet())


def test_loose_audio_files_without_classes_are_refused_not_downloaded_over(tmp_path, folders):
    (tmp_path / "d").mkdir()
    shutil.copy(next(folders.glob("saw/*.wav")), tmp_path / "d" / "x.wav")
    with pytest.raises(DatasetError, match="holds audio files but no classes"):
        open_dataset(tmp_path / "d", download=False, **quiet())


def test_a_csv_naming_missing_files_is_refused_with_their_names_and_lines(tmp_path):
    root = make_labels_csv(tmp_path / "d", {"a": 5, "b": 5})
    (root / "clips" / "a_3.wav").unlink()
    with open(root / "labels.csv", "a") as f:
        f.write("clips/ghost.wav,b\n")
    with pytest.raises(DatasetError, match=r"names 2 file\(s\) that do not exist: clips/a_3.wav \(line 5\); "
                                           r"clips/ghost.wav \(line 12\)"):
        open_dataset(root, **quiet())


def test_an_unreadable_file_is_refused_with_the_reason(folders_copy):
    (folders_copy / "saw" / "saw-1.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 3)
    reports = []
    with pytest.raises(DatasetError, match=r"not readable audio .*saw/saw-1.wav: ") as err:
        open_dataset(folders_copy, report=reports.append)
    assert "unreadable: saw/saw-1.wav" in reports[0]  # the table came first, with the reason
    assert "1 file(s)" in str(err.value)


@pytest.mark.parametrize("row, reason", [
    ("../outside.wav,a", "outside the dataset folder"),
    ("/etc/passwd.wav,a", "outside the dataset folder"),
    ("clips/a_0.txt,a", "is not a wav/flac/mp3/ogg file"),
    ("clips/a_1.wav,", "an empty label"),
    ("clips/a_0.wav,a", "a file listed twice"),
])
def test_bad_csv_rows_are_refused_with_the_line(tmp_path, row, reason):
    root = make_labels_csv(tmp_path / "d", {"a": 5, "b": 5})
    with open(root / "labels.csv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DatasetError, match=f"line 12: ([^;]* )?{reason}"):
        open_dataset(root, **quiet())


def test_a_csv_without_the_columns_is_refused(tmp_path):
    root = make_labels_csv(tmp_path / "d", {"a": 5, "b": 5})
    (root / "labels.csv").write_text("path,class\nclips/a_0.wav,a\n")
    with pytest.raises(DatasetError, match="needs a header with the columns filename,label"):
        open_dataset(root, **quiet())


def test_a_csv_fold_column_with_a_gap_is_refused(tmp_path):
    root = make_labels_csv(tmp_path / "d", {"a": 4, "b": 4}, folds=2)
    text = (root / "labels.csv").read_text().replace(",2\n", ",3\n")
    (root / "labels.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"skips fold\(s\) 2"):
        open_dataset(root, **quiet())


def test_the_class_count_flag_must_match_the_data(folders):
    with pytest.raises(DatasetError, match="has 3 classes .* but --num-classes is 50"):
        open_dataset(folders, num_classes=50, **quiet())
