"""Datasets on disk: read and check one before training, and say which folds do what.

    load_dataset(root)            -> Dataset: ESC-50's parsed, checked clips (DatasetError names what is wrong)
    read_metadata(root)           meta/esc50.csv -> [Clip], with the line number of anything malformed
    Split(train_folds, val, test) which folds train, pick the checkpoint, and get reported
    cross_validation_splits()     the k-fold protocol (ESC-50's official one at k = 5)
    fit_clip(samples, n)          crop/pad a clip to n samples: the one rule, in training and serving

Getting ESC-50 onto the disk is core/esc50_download.py's job, reading a
dataset of your own (class subfolders, labels.csv) core/custom_datasets.py's;
turning clips into log-mel batches is core/feature_cache.py's.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
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


def fit_clip(samples: np.ndarray, length: int) -> np.ndarray:
    """(n,) float32 -> (length,) float32: the first `length` samples, zero-padded at the end when short.

    The one crop/pad rule: training applies it to every clip (Dataset.load_samples)
    and serving to what the model classifies (core.inference, from the
    checkpoint's `clip_seconds`), so both see clips the same way.
    """
    out = np.zeros(length, dtype=np.float32)
    n = min(len(samples), length)
    out[:n] = samples[:n]
    return out


@dataclass(frozen=True)
class Dataset:
    """A checked dataset. `classes[target]` is the class name; clips are in listing order.

    `layout` is "esc50", "folders" or "labels.csv"; `audio_dir` the folder that
    clip filenames are relative to; `folds` the fold numbers present (1..k);
    `split` says where the folds came from ("esc50", "labels.csv" or the seeded
    stratified split core.custom_datasets made).
    """

    root: Path
    clips: tuple[Clip, ...]
    classes: tuple[str, ...]
    clip_samples: int          # every clip is padded (zeros) or cut to this many samples at 44.1 kHz
    layout: str = "esc50"
    audio_dir: Path | None = None
    folds: tuple[int, ...] = FOLDS
    split: dict = field(default_factory=lambda: {"method": "esc50"}, hash=False, compare=False)

    def path(self, clip: Clip) -> Path:
        return (self.audio_dir or self.root / "audio") / clip.filename

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
            shown = f"audio/{clip.filename}" if self.layout == "esc50" else clip.filename
            raise DatasetError(f"{shown} cannot be decoded: {err}") from None
        return fit_clip(x, self.clip_samples)


ESC50 = Dataset  # the name this class had while ESC-50 was the only layout


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
    folds: int = 5             # the dataset's folds are 1..folds

    def __post_init__(self):
        used = [*self.train_folds, self.val_fold] + ([self.test_fold] if self.test_fold else [])
        if any(not 1 <= f <= self.folds for f in used):
            raise DatasetError(f"Folds are 1-{self.folds}; got train {list(self.train_folds)}, "
                               f"val {self.val_fold}, test {self.test_fold}.")
        if len(set(used)) != len(used) or not self.train_folds:
            raise DatasetError(f"Train folds {list(self.train_folds)}, validation fold {self.val_fold} "
                               f"and test fold {self.test_fold} must be different folds.")

    @property
    def protocol(self) -> str:
        return "holdout" if self.test_fold else "fixed-schedule"


def cross_validation_splits(folds: int = 5) -> list[Split]:
    """k-fold protocol (ESC-50's official one at 5): each fold is validated on once, trained on k-1 times."""
    every = range(1, folds + 1)
    return [Split(tuple(f for f in every if f != k), k, folds=folds) for k in every]


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


def load_dataset(root: str | Path, num_classes: int | None = None, check_audio: bool = True,
                 clip_seconds: float | None = None) -> Dataset:
    """Read and check an ESC-50 folder before any training starts.

    Checks: the CSV (see read_metadata), targets 0..n-1 all present with one
    name each (n = num_classes when given, else however many the CSV names),
    every fold non-empty, and (check_audio) every listed file present and
    readable as audio. The first problem found raises DatasetError. Clips are
    cut/padded to `clip_seconds` (None: the longest clip, at most 5 s).
    """
    root = Path(root)
    clips = read_metadata(root)
    names: dict[int, str] = {}
    for clip in clips:
        if names.setdefault(clip.target, clip.category) != clip.category:
            raise DatasetError(f"meta/esc50.csv names target {clip.target} both "
                               f"{names[clip.target]!r} and {clip.category!r}.")
    targets = sorted(names)
    if num_classes is None and targets != list(range(len(targets))):
        raise DatasetError(f"meta/esc50.csv has targets {targets[0]}-{targets[-1]} with gaps: targets must be "
                           f"0-{len(targets) - 1}, one per class.")
    num_classes = len(targets) if num_classes is None else num_classes
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
    return Dataset(root, tuple(clips), tuple(names[t] for t in targets), clip_length(longest, clip_seconds))


DEFAULT_CLIP_SECONDS = 5.0


def clip_length(longest: int, clip_seconds: float | None = None) -> int:
    """Samples every clip is cut/padded to: `clip_seconds`, else the longest clip capped at 5 s.

    A dataset of 1 s clips trains on 1 s (no padding to burn compute on); one
    of long recordings on their first 5 s (ESC-50's length, the seed's window).
    """
    if clip_seconds:
        return max(1, round(clip_seconds * SAMPLE_RATE))
    cap = round(DEFAULT_CLIP_SECONDS * SAMPLE_RATE)
    return min(longest, cap) if longest else cap
