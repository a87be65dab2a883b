"""ESC-50 on disk: download and verify, read meta/esc50.csv, check the folder, cache features.

    prepare(data_dir)             an ESC-50 root folder (meta/esc50.csv + audio/), downloading
                                  the official archive into data_dir when none is there
    load_dataset(root, 50)        -> ESC50: parsed, checked clips (DatasetError names what is wrong)
    Split(train_folds, val, test) which folds train, pick the checkpoint, and get reported
    CachedFeatures / AudioFeatures  batches of log-mel spectrograms for clip indices

The archive is GitHub's zip of the ESC-50 repository. GitHub does not promise
byte-identical archives, so the default check is structural: the size the
server announced, every member's CRC-32, and the dataset itself (2000 clips in
5 folds, 50 classes). Pass `sha256` to pin an exact archive. An interrupted
download leaves `<name>.zip.part`; the next call resumes it with an HTTP Range
request (or starts over when the server ignores ranges).

The feature cache stores each clip's log-mel spectrogram once, float16, under
`<cache_dir>/logmel-<key>/`, where the key hashes the FeatureConfig (without
its normalisation, which is applied when a batch is read) and the clip length.
Later epochs (and later runs with the same features) read arrays, not audio.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from core.audio import SAMPLE_RATE, AudioError, decode_audio
from core.features import FeatureConfig, LogMel

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
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


# -- download -------------------------------------------------------------------------


def find_root(data_dir: str | Path) -> Path | None:
    """`data_dir` itself or a direct subfolder (ESC-50-master) holding meta/esc50.csv, else None."""
    data_dir = Path(data_dir)
    if (data_dir / "meta" / "esc50.csv").is_file():
        return data_dir
    found = sorted(p.parent.parent for p in data_dir.glob("*/meta/esc50.csv"))
    return found[0] if found else None


def prepare(data_dir: str | Path, url: str = ESC50_URL, sha256: str | None = None,
            download: bool = True, progress: bool = True) -> Path:
    """The ESC-50 root inside `data_dir`; downloads and extracts the archive once if missing."""
    data_dir = Path(data_dir)
    root = find_root(data_dir)
    if root is not None:
        return root
    if not download:
        raise DatasetError(f"No ESC-50 dataset in {data_dir}: expected meta/esc50.csv and audio/ "
                           "there or in a subfolder (downloading is switched off).")
    archive = download_archive(url, data_dir / "ESC-50.zip", sha256=sha256, progress=progress)
    root = extract_archive(archive, data_dir)
    archive.unlink()
    return root


def download_archive(url: str, dest: str | Path, sha256: str | None = None,
                     progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` (resuming `dest.part`), check size, CRCs and the optional sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "audio-cnn"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is already whole (or stale): start over
            part.unlink()
            return download_archive(url, dest, sha256, progress, timeout)
        raise DatasetError(f"Downloading {url} failed: HTTP {err.code} {err.reason}.") from None
    except (urllib.error.URLError, OSError) as err:
        raise DatasetError(f"Cannot download {url}: {getattr(err, 'reason', err)}.") from None
    with response:
        resumed = have > 0 and response.status == 206
        have = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc="ESC-50", disable=not progress
        ) as bar:
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, OSError):
                pass  # the size check below reports it and keeps the part for a resume
    size = part.stat().st_size
    if total is not None and size != total:
        raise DatasetError(f"The download of {url} stopped at {size:,} of {total:,} bytes; "
                           f"run again to resume it ({part}).")
    try:
        verify_archive(part, sha256)
    except DatasetError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest


def verify_archive(path: str | Path, sha256: str | None = None) -> None:
    """DatasetError unless `path` is a zip whose members all pass their CRC (and whose sha256 matches)."""
    path = Path(path)
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            raise DatasetError(f"{path.name} has sha256 {digest.hexdigest()}, expected {sha256}: "
                               "the archive is corrupted or not the expected one.")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DatasetError(f"{path.name} is not a readable zip archive (corrupted download?): {err}") from None
    except Exception as err:  # zlib.error and friends from a damaged deflate stream
        raise DatasetError(f"{path.name} is corrupted: {err}") from None
    if bad is not None:
        raise DatasetError(f"{path.name} is corrupted: member {bad} fails its CRC check.")


def extract_archive(archive: str | Path, data_dir: str | Path) -> Path:
    """Unpack an ESC-50 zip into `data_dir`; returns the folder that holds meta/esc50.csv."""
    data_dir = Path(data_dir)
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        if any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise DatasetError(f"{Path(archive).name} contains paths outside its folder; not extracting.")
        csvs = [n for n in names if n == "meta/esc50.csv" or n.endswith("/meta/esc50.csv")]
        if not csvs:
            raise DatasetError(f"{Path(archive).name} has no meta/esc50.csv: not an ESC-50 archive.")
        prefix = csvs[0][: -len("meta/esc50.csv")]
        final = data_dir / (prefix.rstrip("/") or "ESC-50")
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
        try:
            z.extractall(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp / prefix if prefix else tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# -- metadata and checks ----------------------------------------------------------------

_FILENAME = re.compile(r"(\d+)-([^-]+)-([^-]+)-(\d+)\.wav")


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


# -- features --------------------------------------------------------------------------


def _raw_db(config: FeatureConfig) -> FeatureConfig:
    return replace(config, norm_mean=0.0, norm_std=1.0)


def cache_key(config: FeatureConfig, clip_samples: int) -> str:
    text = json.dumps({"features": _raw_db(config).to_dict(), "clip_samples": clip_samples, "v": 1},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CachedFeatures:
    """All clips' log-mels in memory, (clips, n_mels, frames) float16, built once into a disk cache."""

    def __init__(self, dataset: ESC50, config: FeatureConfig, cache_dir: str | Path | None = None,
                 device: torch.device | str = "cpu", progress: bool = True, batch_size: int = 32):
        self.config = config
        cache_dir = Path(cache_dir) if cache_dir else dataset.root / ".feature-cache"
        self.folder = cache_dir / f"logmel-{cache_key(config, dataset.clip_samples)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "features.json").write_text(json.dumps(
            {"features": _raw_db(config).to_dict(), "clip_samples": dataset.clip_samples}, indent=2))
        paths = [self.folder / (Path(c.filename).stem + ".npy") for c in dataset.clips]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        logmel = LogMel(_raw_db(config)).to(device)
        for start in tqdm(range(0, len(missing), batch_size), desc="feature cache",
                          disable=not progress or not missing):
            chunk = missing[start : start + batch_size]
            waves = torch.from_numpy(np.stack([dataset.load_samples(i) for i in chunk])).to(device)
            with torch.no_grad():
                specs = logmel(waves).to(torch.float16).cpu().numpy()
            for i, spec in zip(chunk, specs):
                _save_npy(paths[i], spec)
        self.built = len(missing)
        self.features = torch.from_numpy(np.stack([np.load(p) for p in paths]))
        self.device = torch.device(device)
        if self.device.type == "cuda":  # ESC-50 is ~220 MB at float16: keep it next to the model
            self.features = self.features.to(self.device)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) float32 normalised dB on the device."""
        x = self.features[indices.to(self.features.device)].to(self.device).float()
        return (x - self.config.norm_mean) / self.config.norm_std


class AudioFeatures:
    """Decode and compute each batch from the audio files (no cache): the slow path, for comparison."""

    def __init__(self, dataset: ESC50, config: FeatureConfig, device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.device = torch.device(device)
        self.logmel = LogMel(config).to(self.device)

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        waves = np.stack([self.dataset.load_samples(int(i)) for i in indices])
        with torch.no_grad():
            return self.logmel(torch.from_numpy(waves).to(self.device))


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
