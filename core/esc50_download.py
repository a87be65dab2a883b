"""ESC-50's archive: download (resumable), verify, extract.

    prepare(data_dir)             an ESC-50 root folder (meta/esc50.csv + audio/), downloading
                                  the official archive into data_dir when none is there

The archive is GitHub's zip of the ESC-50 repository. GitHub does not promise
byte-identical archives, so the default check is structural: the size the
server announced, every member's CRC-32, and the dataset itself (2000 clips in
5 folds, 50 classes; core.datasets.load_dataset). Pass `sha256` to pin an
exact archive. An interrupted download leaves `<name>.zip.part`; the next call
resumes it with an HTTP Range request (or starts over when the server ignores
ranges).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from core.datasets import DatasetError

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"


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
    data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(data_dir / ".esc50-prepare.lock"):
        root = find_root(data_dir)  # another process may have prepared it while this one waited
        if root is None:
            archive = download_archive(url, data_dir / "ESC-50.zip", sha256=sha256, progress=progress)
            root = extract_archive(archive, data_dir)
            archive.unlink()
    return root


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock (flock) on `lock_path`: concurrent runs on one file system take turns.

    The second process says that it waits, then finds the dataset ready. Where
    flock does not exist (Windows) or the file system refuses it, nothing is
    locked; extraction still renames a complete folder into place, so a reader
    never sees half a dataset. (Modal containers each see their own view of a
    Volume until they commit, so two of them never write into one another's.)
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Another process is preparing ESC-50 in {lock_path.parent}; waiting for it to finish.",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # no locking on this file system: go on unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
