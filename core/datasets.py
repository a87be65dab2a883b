"""Datasets on disk: read and check one before training, and say which folds do what.

    load_dataset(root, 50)        -> ESC50: parsed, checked clips (DatasetError names what is wrong)
    read_metadata(root)           meta/esc50.csv -> [Clip], with the line number of anything malformed
    Split(train_folds, val, test) which folds train, pick the checkpoint, and get reported
    cross_validation_splits()     ESC-50's official 5-fold protocol

Getting ESC-50 onto the disk is core/esc50_download.py's job; turning clips
into log-mel batches is core/feature_cache.py's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from core.audio import SAMPLE_RATE, AudioError, decode_audio

CSV_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = (1, 2, 3, 4, 5)


class DatasetError(ValueError):
    """A dataset folder, metadata file, clip or archive that cannot be used; says which and why."""


@dataclass(frozen=True)
class Clip:
    filename: str
    fold: int
    target: int
    category: str
    src_file: str = ""
    take: str = ""
    esc10: bool = False


@dataclass(frozen=True)
class ESC50:
    """A checked ESC-50 folder. `classes[target]` is the category name; clips are in CSV order."""

    root: Path
    clips: tuple[Clip, ...]
    classes: tuple[str, ...]
    clip_samples: int          # every clip is padded (zeros) or cut to this many samples at 44.1 kHz

    def path(self, clip: Clip) -> Path:
        return self.root / "audio" / clip.filename

    def indices(self, folds) -> list[int]:
        folds = {int(f) for f in folds}
        return [i for i, c in enumerate(self.clips) if c.fold in folds]

    def targets(self) -> torch.Tensor:
        return torch.tensor([c.target for c in self.clips], dtype=torch.long)

    def load_samples(self, index: int) -> np.ndarray:
        """Clip `index` as (clip_samples,) float32 mono at 44.1 kHz."""
        clip = self.clips[index]
        try:
            x = decode_audio(self.path(clip).read_bytes(), max_seconds=None).samples
        except (AudioError, OSError) as err:
            raise DatasetError(f"audio/{clip.filename} cannot be decoded: {err}") from None
        out = np.zeros(self.clip_samples, dtype=np.float32)
        out[: min(len(x), self.clip_samples)] = x[: self.clip_samples]
        return out


@dataclass(frozen=True)
class Split:
    """Folds that train, the fold that picks best.pt, and (optionally) a held-out fold to report.

    With `test_fold` set the protocol is "holdout": select on `val_fold`, report
    best.pt's accuracy on `test_fold`. Without it ("fixed-schedule") the reported
    number is `val_fold` accuracy after the last epoch, which no choice was made
    on; best.pt's accuracy on the same fold is optimistic and labelled so.
    """

    train_folds: tuple[int, ...] = (1, 2, 3, 4)
    val_fold: int = 5
    test_fold: int | None = None

    def __post_init__(self):
        used = [*self.train_folds, self.val_fold] + ([self.test_fold] if self.test_fold else [])
        if any(f not in FOLDS for f in used):
            raise DatasetError(f"Folds are 1-5; got train {list(self.train_folds)}, "
                               f"val {self.val_fold}, test {self.test_fold}.")
        if len(set(used)) != len(used) or not self.train_folds:
            raise DatasetError(f"Train folds {list(self.train_folds)}, validation fold {self.val_fold} "
                               f"and test fold {self.test_fold} must be different folds.")

    @property
    def protocol(self) -> str:
        return "holdout" if self.test_fold else "fixed-schedule"


def cross_validation_splits() -> list[Split]:
    """ESC-50's official 5-fold protocol: each fold is validated on once, trained on four times."""
    return [Split(tuple(f for f in FOLDS if f != k), k) for k in FOLDS]


# -- metadata and checks ----------------------------------------------------------------


def read_metadata(root: str | Path) -> list[Clip]:
    """Parse `root/meta/esc50.csv`; DatasetError with the line number for anything malformed."""
    path = Path(root) / "meta" / "esc50.csv"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist: an ESC-50 folder holds meta/esc50.csv and audio/.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"meta/esc50.csv cannot be read: {err}") from None
    if not rows:
        raise DatasetError("meta/esc50.csv is empty.")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"meta/esc50.csv lacks the column(s) {', '.join(missing)} "
                           f"(its header is: {','.join(header)}).")
    col = {name: header.index(name) for name in CSV_COLUMNS}
    clips = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"meta/esc50.csv line {line} has {len(row)} fields, the header {len(header)}.")
        get = {name: row[i].strip() for name, i in col.items()}
        try:
            fold, target = int(get["fold"]), int(get["target"])
        except ValueError:
            raise DatasetError(f"meta/esc50.csv line {line}: fold {get['fold']!r} and target "
                               f"{get['target']!r} must be whole numbers.") from None
        if fold not in FOLDS:
            raise DatasetError(f"meta/esc50.csv line {line}: fold {fold} is not one of 1-5.")
        if not get["filename"] or "/" in get["filename"] or "\\" in get["filename"]:
            raise DatasetError(f"meta/esc50.csv line {line}: bad filename {get['filename']!r}.")
        clips.append(Clip(get["filename"], fold, target, get["category"], get["src_file"],
                          get["take"], get["esc10"].lower() == "true"))
    if not clips:
        raise DatasetError("meta/esc50.csv lists no clips.")
    return clips


def load_dataset(root: str | Path, num_classes: int = 50, check_audio: bool = True) -> ESC50:
    """Read and check an ESC-50 folder before any training starts.

    Checks: the CSV (see read_metadata), targets 0..num_classes-1 all present with
    one name each, every fold non-empty, and (check_audio) every listed file
    present and readable as audio. The first problem found raises DatasetError.
    """
    root = Path(root)
    clips = read_metadata(root)
    names: dict[int, str] = {}
    for clip in clips:
        if names.setdefault(clip.target, clip.category) != clip.category:
            raise DatasetError(f"meta/esc50.csv names target {clip.target} both "
                               f"{names[clip.target]!r} and {clip.category!r}.")
    targets = sorted(names)
    if targets != list(range(num_classes)):
        raise DatasetError(
            f"meta/esc50.csv has {len(targets)} classes (targets {targets[0]}-{targets[-1]}) "
            f"but {num_classes} were expected: targets must be exactly 0-{num_classes - 1}."
        )
    for fold in FOLDS:
        if not any(c.fold == fold for c in clips):
            raise DatasetError(f"meta/esc50.csv lists no clips in fold {fold}.")
    longest = 0
    if check_audio:
        for clip in clips:
            path = root / "audio" / clip.filename
            if not path.is_file():
                raise DatasetError(f"audio/{clip.filename} is listed in meta/esc50.csv but does not exist.")
            try:
                info = sf.info(str(path))
            except Exception as err:  # libsndfile's error types vary by version
                raise DatasetError(f"audio/{clip.filename} is not readable audio: {err}") from None
            if info.frames <= 0:
                raise DatasetError(f"audio/{clip.filename} holds no samples.")
            longest = max(longest, round(info.frames * SAMPLE_RATE / info.samplerate))
    return ESC50(root, tuple(clips), tuple(names[t] for t in targets), longest or 5 * SAMPLE_RATE)
