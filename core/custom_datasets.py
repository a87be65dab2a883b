"""Your own data: a folder of class subfolders or a labels.csv, checked and split before training.

    open_dataset(data_dir, ...)      -> Dataset, whatever the layout (ESC-50 is downloaded when absent)
    detect_layout(data_dir)          "esc50", "labels.csv", "folders" or None (nothing there yet)
    check_clips(dataset root, ...)   DatasetCheck: clips per class, durations, sample rates, unreadable files
    stratified_folds(labels, k, seed) the seeded split a dataset without folds gets (1-based fold per clip)

Layouts of `--data-dir`:

    ESC-50       meta/esc50.csv + audio/ (here or in one subfolder)
    folders      DIR/<class name>/**/*.wav|flac|mp3|ogg          (one subfolder per class)
    labels.csv   DIR/labels.csv: filename,label[,fold]; filenames relative to DIR

Classes are the sorted names (index = output unit). Without a fold column,
folds come from scikit-learn's StratifiedKFold (shuffled, `split_seed`): the
same files and seed give the same split, and the run writes it to split.csv.
Before anything trains, the check prints a table and refuses what cannot
train, with every problem at once: no audio at all, a class with fewer clips
than folds, a CSV naming missing files, unreadable files (with the reason).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

from core.audio import SAMPLE_RATE
from core.datasets import Clip, Dataset, DatasetError, clip_length, load_dataset
from core.esc50_download import ESC50_URL, find_root, prepare

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
LABELS_CSV = "labels.csv"
MAX_CSV_BYTES = 64 * 1024 * 1024   # a labels.csv of a million clips is ~50 MB; past this it is not one
SHOWN_PROBLEMS = 20                # a message lists this many files, then says how many more


def detect_layout(data_dir: str | Path) -> str | None:
    """Which layout `data_dir` holds; None when it holds no dataset yet (ESC-50 is then downloaded)."""
    data_dir = Path(data_dir)
    if find_root(data_dir) is not None:
        return "esc50"
    if (data_dir / LABELS_CSV).is_file():
        return LABELS_CSV
    if data_dir.is_dir() and any(_class_dirs(data_dir)):
        return "folders"
    return None


def open_dataset(data_dir: str | Path, *, folds: int = 5, split_seed: int = 0, clip_seconds: float | None = None,
                 num_classes: int | None = None, url: str = ESC50_URL, sha256: str | None = None,
                 download: bool = True, progress: bool = True,
                 report: Callable[[str], None] | None = print) -> Dataset:
    """The checked Dataset in `data_dir` (any layout); DatasetError says what cannot train.

    `report(text)` gets the dataset check's table before training (and before a refusal).
    `num_classes` (when given) must equal the data's class count.
    """
    layout = detect_layout(data_dir)
    if layout is None and Path(data_dir).is_dir() and any(
            p.suffix.lower() in AUDIO_EXTENSIONS for p in Path(data_dir).iterdir()):
        raise DatasetError(f"{data_dir} holds audio files but no classes: put each class's clips in a subfolder "
                           f"named after it ({data_dir}/<class>/clip.wav), or list them in {data_dir}/{LABELS_CSV} "
                           "(filename,label[,fold]).")
    if layout in (None, "esc50"):
        data = load_dataset(prepare(data_dir, url, sha256, download, progress), num_classes or None,
                            clip_seconds=clip_seconds)
        if report:
            report(check_clips(data.audio_dir or data.root / "audio",
                               [(c.filename, data.classes[c.target]) for c in data.clips]).table("ESC-50"))
        return data
    root = Path(data_dir)
    if layout == LABELS_CSV:
        listing, csv_folds, problems = _read_labels_csv(root)
        empty: list[str] = []
    else:
        (listing, empty), csv_folds, problems = _list_folders(root), None, []
    check = check_clips(root, listing, empty)
    if report:
        report(check.table(f"{layout} in {root}"))
    problems += check.problems(folds if csv_folds is None else 1)
    if problems:
        raise DatasetError(f"{root} cannot train ({layout} layout):\n  " + "\n  ".join(problems))
    classes = tuple(sorted({label for _, label in listing}))
    if num_classes and num_classes != len(classes):
        raise DatasetError(f"{root} has {len(classes)} classes ({', '.join(classes[:10])}"
                           f"{', ...' if len(classes) > 10 else ''}) but --num-classes is {num_classes}.")
    index = {name: i for i, name in enumerate(classes)}
    targets = [index[label] for _, label in listing]
    if csv_folds is None:
        fold_of = stratified_folds(targets, folds, split_seed)
        split = {"method": "stratified-k-fold", "k": folds, "seed": split_seed,
                 "library": f"scikit-learn {_sklearn_version()}", "file": "split.csv"}
    else:
        fold_of, split = csv_folds, {"method": "labels.csv fold column", "file": "split.csv"}
    present = tuple(sorted(set(fold_of)))
    clips = tuple(Clip(name, fold, target, classes[target])
                  for (name, _), fold, target in zip(listing, fold_of, targets, strict=True))
    return Dataset(root, clips, classes, clip_length(check.longest_samples, clip_seconds), layout=layout,
                   audio_dir=root, folds=present, split=split)


def stratified_folds(targets: list[int], k: int, seed: int) -> list[int]:
    """Fold (1..k) of every clip: scikit-learn's StratifiedKFold, shuffled with `seed`."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(targets)
    fold_of = np.zeros(len(y), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y), start=1):
        fold_of[held_out] = fold
    return [int(f) for f in fold_of]


def split_csv(data: Dataset) -> str:
    """The split a run trained on, as CSV text: filename,label,fold (written to the run's split.csv)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filename", "label", "fold"])
    writer.writerows([c.filename, c.category, c.fold] for c in data.clips)
    return out.getvalue()


# -- the check ------------------------------------------------------------------------------


@dataclass
class ClassStats:
    clips: int = 0
    shortest: float = float("inf")
    longest: float = 0.0
    rates: set = field(default_factory=set)


@dataclass
class DatasetCheck:
    """What check_clips found: per-class stats of readable clips, and (file, reason) of unreadable ones."""

    classes: dict[str, ClassStats]
    unreadable: list[tuple[str, str]]
    longest_samples: int = 0

    def problems(self, folds: int) -> list[str]:
        """Why this cannot train (empty when it can). `folds`: the clips each class needs at least."""
        found = []
        if not any(s.clips for s in self.classes.values()):
            found.append("no audio at all: no readable " + "/".join(e[1:] for e in AUDIO_EXTENSIONS) + " file.")
        elif len(self.classes) < 2:
            found.append(f"only one class ({next(iter(self.classes))}): a classifier needs at least two.")
        few = [f"{name} ({s.clips})" for name, s in sorted(self.classes.items()) if s.clips < folds]
        if few and any(s.clips for s in self.classes.values()):
            found.append(f"{len(few)} class(es) have fewer clips than the {folds} folds of the split: "
                         f"{_listed(few)}. Add clips, merge or remove the class, or pass --folds with fewer folds.")
        if self.unreadable:
            found.append(f"{len(self.unreadable)} file(s) are not readable audio (fix or remove them): "
                         + _listed([f"{name}: {reason}" for name, reason in self.unreadable]))
        return found

    def table(self, title: str) -> str:
        """The check as a plain-text table: class, clips, duration range (s), sample rates (Hz)."""
        width = max([5, *(len(n) for n in self.classes)])
        lines = [f"dataset check: {title}", f"{'class':<{width}}  {'clips':>5}  {'seconds':>13}  sample rates"]
        for name, s in sorted(self.classes.items()):
            span = f"{s.shortest:.2f}-{s.longest:.2f}" if s.clips else "-"
            rates = ", ".join(str(r) for r in sorted(s.rates)) or "-"
            lines.append(f"{name:<{width}}  {s.clips:>5}  {span:>13}  {rates}")
        total = sum(s.clips for s in self.classes.values())
        lines.append(f"{len(self.classes)} classes, {total} readable clips, {len(self.unreadable)} unreadable")
        lines += [f"  unreadable: {name}: {reason}" for name, reason in self.unreadable[:SHOWN_PROBLEMS]]
        if len(self.unreadable) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(self.unreadable) - SHOWN_PROBLEMS} more")
        return "\n".join(lines)


def check_clips(root: Path, listing: list[tuple[str, str]], empty: list[str] = ()) -> DatasetCheck:
    """Read every listed (filename, class)'s header (soundfile): duration, rate; why each failure failed.

    `empty`: classes known to have no clips (an empty class folder), shown with 0.
    """
    classes: dict[str, ClassStats] = {name: ClassStats() for name in empty}
    unreadable, longest = [], 0
    for name, label in listing:
        stats = classes.setdefault(label, ClassStats())
        try:
            info = sf.info(str(Path(root) / name))
        except Exception as err:  # libsndfile's error types vary by version
            unreadable.append((name, _reason(err)))
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            unreadable.append((name, "it holds no samples"))
            continue
        seconds = info.frames / info.samplerate
        stats.clips += 1
        stats.shortest, stats.longest = min(stats.shortest, seconds), max(stats.longest, seconds)
        stats.rates.add(int(info.samplerate))
        longest = max(longest, round(seconds * SAMPLE_RATE))
    return DatasetCheck(classes, unreadable, longest)


# -- the two layouts --------------------------------------------------------------------------


def _class_dirs(root: Path):
    return (p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))


def _list_folders(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(filename relative to root, class) of every audio file under a class subfolder, sorted;
    and the class folders that hold none (a class with 0 clips, which the check refuses)."""
    listing, empty = [], []
    for folder in _class_dirs(root):
        files = [p.relative_to(root).as_posix() for p in sorted(folder.rglob("*"))
                 if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts)]
        listing += [(name, folder.name) for name in files]
        if not files:
            empty.append(folder.name)
    return listing, empty


def _read_labels_csv(root: Path) -> tuple[list[tuple[str, str]], list[int] | None, list[str]]:
    """labels.csv -> (listing of existing files, their folds or None, problems). DatasetError: not such a CSV."""
    header, rows = _csv_rows(root / LABELS_CSV)
    col = {name: header.index(name) for name in ("filename", "label", "fold") if name in header}
    listing, folds, bad, missing, seen = [], [], [], [], set()
    for line, row in rows:
        if len(row) < len(header):
            bad.append(f"line {line} has {len(row)} fields, the header {len(header)}")
            continue
        name, label = row[col["filename"]].strip(), row[col["label"]].strip()
        fold = _fold(row[col["fold"]]) if "fold" in col else 0
        problem = (_bad_name(name) or ("an empty label" if not label else None)
                   or ("a file listed twice" if name in seen else None)
                   or (f"fold {row[col['fold']].strip()!r} is not a whole number >= 1" if fold is None else None))
        if problem:
            bad.append(f"line {line}: {problem}")
            continue
        seen.add(name)
        if not (root / name).is_file():
            missing.append(f"{name} (line {line})")
            continue
        listing.append((name, label))
        folds.append(fold)
    problems = [f"{LABELS_CSV} has bad rows: " + _listed(bad)] if bad else []
    if missing:
        problems.append(f"{LABELS_CSV} names {len(missing)} file(s) that do not exist: {_listed(missing)}")
    if "fold" not in col:
        return listing, None, problems
    gaps = sorted(set(range(1, max(folds, default=0) + 1)) - set(folds))
    if gaps:
        problems.append(f"{LABELS_CSV}'s fold column skips fold(s) {', '.join(map(str, gaps))}: "
                        "folds must be 1..k, each with clips.")
    return listing, folds, problems


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(lower-cased header, [(line number, cells)] of the non-blank rows); DatasetError when unreadable."""
    if path.stat().st_size > MAX_CSV_BYTES:
        raise DatasetError(f"{path} is over {MAX_CSV_BYTES // 2**20} MB: not a list of clips.")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{LABELS_CSV} cannot be read: {err}") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "filename" not in header or "label" not in header:
        first = ",".join(rows[0]) if rows else "(empty file)"
        raise DatasetError(f"{LABELS_CSV} needs a header with the columns filename,label (and optionally "
                           f"fold); its first line is: {first[:200]}")
    return header, [(n, row) for n, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)]


def _bad_name(name: str) -> str | None:
    """Why `name` cannot be a clip inside the dataset folder (None when it can)."""
    if not name:
        return "an empty filename"
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or ":" in name:
        return f"{name!r} is outside the dataset folder (filenames are relative to it)"
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        return f"{name!r} is not a {'/'.join(e[1:] for e in AUDIO_EXTENSIONS)} file"
    return None


def _fold(text: str) -> int | None:
    try:
        fold = int(text.strip())
    except ValueError:
        return None
    return fold if fold >= 1 else None


def _listed(items: list[str]) -> str:
    more = len(items) - SHOWN_PROBLEMS
    return "; ".join(items[:SHOWN_PROBLEMS]) + (f"; ... and {more} more" if more > 0 else "")


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__
