"""Sync the runs folder of a Modal Volume to a local runs folder.

Public API
    modal_configured(env=None) -> bool       Modal credentials in the environment or a config file?
    sync_runs(local_dir, volume_name="audio-cnn-runs", *, volume=None, remote_dir="/",
              skip=DEFAULT_SKIP, progress=None) -> SyncResult
                                             copy new and changed files; raises VolumeSyncError
    volume_run_checkpoints(volume, volume_name) -> list[RunCheckpoint]
                                             every <run>/best.pt on the Volume with its summary.json,
                                             for core.checkpoint.choose_run (what a deploy pins)
    SyncProgress, SyncResult, VolumeSyncError

Incremental: a manifest in the local folder (MANIFEST) remembers the remote
size and mtime of every file copied; a file is copied again only when either
changed remotely or its local copy is gone or altered. Each file is written to a
temporary name and renamed, so a reader never sees half a file, and gets the
remote mtime, so run status ("running" = recently written) means the same here
as on the Volume. Files deleted on the Volume are kept locally.

`modal` is imported only inside `_open_volume`: core imports without it, and tests
pass a fake `volume` with the SDK's method names (iterdir, read_file; entries with
path, type, mtime, size).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.atomic_write import atomic_open, atomic_write

MANIFEST = ".volume-sync.json"
# last.pt only lets a run continue on Modal (~250 MB); best.pt is what the local backend loads.
DEFAULT_SKIP = ("last.pt",)
NOT_CONFIGURED = (
    "Modal is not configured: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (in the environment "
    "or .streamlit/secrets.toml), or run `modal setup` to create ~/.modal.toml."
)


class VolumeSyncError(RuntimeError):
    """The sync could not run; the message says why and what to do."""


@dataclass(frozen=True)
class SyncProgress:
    """Passed to the progress callback after every chunk and every file."""

    files_done: int
    files_total: int      # files to copy (unchanged ones are not counted)
    bytes_done: int
    bytes_total: int
    path: str             # the file being copied, relative to the runs folder


@dataclass(frozen=True)
class SyncResult:
    copied: tuple[str, ...]   # relative paths, in copy order
    unchanged: int
    bytes_copied: int


def modal_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when Modal credentials exist: both token env vars, or a config file with a token."""
    env = os.environ if env is None else env
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    config = Path(env.get("MODAL_CONFIG_PATH") or Path.home() / ".modal.toml")
    try:
        return "token_id" in config.read_text(encoding="utf-8")
    except OSError:
        return False


def sync_runs(local_dir: str | Path, volume_name: str = "audio-cnn-runs", *,
              volume: Any = None, remote_dir: str = "/", skip: tuple[str, ...] = DEFAULT_SKIP,
              progress: Callable[[SyncProgress], None] | None = None) -> SyncResult:
    """Copy the files under `remote_dir` of the Volume into `local_dir`, changed ones only.

    `volume`: an object with the modal.Volume methods used here; None opens
    `volume_name` with the Modal SDK. `skip`: file-name patterns not copied.
    Raises VolumeSyncError (not configured, no such Volume, listing failed).
    """
    local_dir = Path(local_dir)
    if volume is None:
        volume = _open_volume(volume_name)
    prefix = remote_dir.strip("/")
    entries = _list_files(volume, volume_name, remote_dir)
    manifest = _read_manifest(local_dir, volume_name)
    todo, unchanged = [], 0
    for entry in entries:
        remote = entry.path.lstrip("/")
        relative = remote[len(prefix):].lstrip("/") if prefix else remote
        target = _safe_target(local_dir, relative)
        if target is None or any(fnmatch.fnmatch(target.name, p) for p in skip):
            continue
        seen = manifest.get(relative)
        if seen == {"size": entry.size, "mtime": entry.mtime} and _size(target) == entry.size:
            unchanged += 1
        else:
            todo.append((entry, remote, relative, target))
    total = sum(entry.size for entry, *_ in todo)
    done_bytes, copied = 0, []
    try:
        for entry, remote, relative, target in todo:
            def report(n: int, relative: str = relative, start: int = done_bytes) -> None:
                if progress is not None:
                    progress(SyncProgress(len(copied), len(todo), start + n, total, relative))

            written = _copy(volume, remote, target, entry.mtime, report)
            done_bytes += written
            copied.append(relative)
            manifest[relative] = {"size": entry.size, "mtime": entry.mtime}
            report(written)
    finally:
        if copied:  # what was copied stays copied, even when a later file fails
            _write_manifest(local_dir, volume_name, manifest)
    return SyncResult(tuple(copied), unchanged, done_bytes)


def volume_run_checkpoints(volume: Any, volume_name: str) -> list:
    """Every run folder on the Volume that holds a best.pt, as core.checkpoint.RunCheckpoint.

    Reads only the listing and each such run's summary.json (never a checkpoint).
    Raises VolumeSyncError when the Volume cannot be listed.
    """
    from core.checkpoint import RunCheckpoint, parse_summary  # lazily: core.checkpoint imports torch

    entries = {entry.path.lstrip("/"): entry for entry in _list_files(volume, volume_name, "/")}
    found = []
    for path, entry in sorted(entries.items()):
        run = PurePosixPath(path).parent
        if PurePosixPath(path).name != "best.pt" or str(run) == "." or ".." in run.parts:
            continue
        summary = f"{run}/summary.json"
        try:
            data = b"".join(volume.read_file(summary)) if summary in entries else None
        except Exception as exc:
            raise VolumeSyncError(f"Reading {summary} from Modal Volume {volume_name!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        found.append(RunCheckpoint(str(run), parse_summary(data), float(entry.mtime)))
    return found


def _open_volume(name: str) -> Any:
    if not modal_configured():
        raise VolumeSyncError(NOT_CONFIGURED)
    try:
        import modal
    except ImportError as exc:
        raise VolumeSyncError(f"The modal package is not installed ({exc}).") from exc
    return modal.Volume.from_name(name)  # lazy: errors surface on first use, in _list_files


def _list_files(volume: Any, name: str, remote_dir: str) -> list:
    try:
        entries = list(volume.iterdir(remote_dir, recursive=True))
    except FileNotFoundError as exc:
        raise VolumeSyncError(f"No folder {remote_dir!r} on Modal Volume {name!r}.") from exc
    except Exception as exc:
        raise VolumeSyncError(_explain(exc, name)) from exc
    return [e for e in entries if getattr(e.type, "name", e.type) in ("FILE", 1)]


def _explain(exc: Exception, name: str) -> str:
    """A sentence for a failure of the Modal SDK (its exception types, matched by name)."""
    kind = type(exc).__name__
    if kind == "NotFoundError":
        return (f"Modal Volume {name!r} does not exist (check AUDIO_CNN_VOLUME, or create it "
                f"with `modal volume create {name}`).")
    if kind == "AuthError":
        return f"Modal rejected the credentials ({exc}). {NOT_CONFIGURED}"
    return f"Could not list Modal Volume {name!r}: {kind}: {exc}"


def _safe_target(local_dir: Path, relative: str) -> Path | None:
    """The local path for a remote file, or None if it would land outside local_dir."""
    parts = PurePosixPath(relative).parts
    if not parts or ".." in parts or parts[-1] == MANIFEST:
        return None
    return local_dir.joinpath(*parts)


def _copy(volume: Any, remote: str, target: Path, mtime: int,
          report: Callable[[int], None]) -> int:
    """Stream one file to a temporary name beside `target`, then rename. Returns bytes."""
    written = 0
    try:
        with atomic_open(target, "wb", mtime=mtime) as out:  # Ctrl-C leaves no half file either
            for chunk in volume.read_file(remote):
                out.write(chunk)
                written += len(chunk)
                report(written)
    except Exception as exc:
        raise VolumeSyncError(f"Copying {remote!r} to {target} failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    return written


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _read_manifest(local_dir: Path, volume_name: str) -> dict:
    try:
        data = json.loads((local_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("volume") == volume_name else {}


def _write_manifest(local_dir: Path, volume_name: str, files: dict) -> None:
    atomic_write(local_dir / MANIFEST, json.dumps({"volume": volume_name, "files": files}, indent=1))
