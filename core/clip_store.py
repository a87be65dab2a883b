"""ClipStore: the analysed clips of this dashboard, kept by content hash so links can reopen them.

A link `?clip=<hash>` only carries the hash; the bytes stay on the machine
that runs the dashboard. The store is a plain folder of `<hash>.audio`
files, bounded by total size: when a `put` pushes it over the cap, the least
recently used clips go first (`get` refreshes a clip's time, so a link that
is being opened stays alive).

Where it lives: `Settings.clips_dir` (AUDIO_CNN_CLIPS_DIR) if set, else
`default_clips_dir()`: `$XDG_CACHE_HOME/audio-cnn/clips` (`~/.cache/audio-cnn/clips`). A cache dir,
not the runs folder: clips are disposable, the runs folder may be a synced
Modal Volume, and the repository stays clean. Several dashboard processes
may share one folder: writes are atomic (core.atomic_write), and a clip
that another process evicts between listing and reading is simply missing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from core.atomic_write import atomic_write

SUFFIX = ".audio"
HASH_CHARS = 16  # 64 bits of sha256: plenty for one dashboard's clips, short enough for a URL
_HASH_RE = re.compile(rf"[0-9a-f]{{{HASH_CHARS}}}")


def clip_hash(data: bytes) -> str:
    """The id of a clip: the first 16 hex digits of the sha256 of its file bytes."""
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def is_clip_hash(text: str | None) -> bool:
    """True for a well-formed clip id (so a URL can never name a path outside the store)."""
    return bool(text) and bool(_HASH_RE.fullmatch(text))  # not match + "$": "$" also matches before a final "\n"


def default_clips_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/audio-cnn/clips`, else `~/.cache/audio-cnn/clips`."""
    env = os.environ if env is None else env
    cache = (env.get("XDG_CACHE_HOME") or "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "audio-cnn" / "clips"


class ClipStore:
    """A folder of clips by content hash, at most `max_bytes` in total (least recently used evicted)."""

    def __init__(self, root: str | Path, max_bytes: int = 256 * 1024 * 1024):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes

    def path_of(self, key: str) -> Path:
        if not is_clip_hash(key):
            raise ValueError(f"not a clip id: {key!r}")
        return self.root / f"{key}{SUFFIX}"

    def put(self, data: bytes) -> str:
        """Store `data` (if new) and return its hash. A clip larger than the whole cap is not kept."""
        key = clip_hash(data)
        path = self.path_of(key)
        if path.exists():
            _touch(path)
            return key
        if len(data) > self.max_bytes:
            return key  # keeping it would evict everything else and still break the cap
        atomic_write(path, data)  # readers see the whole clip or none
        self.evict(keep=key)
        return key

    def get(self, key: str) -> bytes | None:
        """The clip's bytes, or None when it was never stored, was evicted, or `key` is malformed."""
        if not is_clip_hash(key):
            return None
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        _touch(path)
        return data

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and is_clip_hash(key) and self.path_of(key).exists()

    def keys(self) -> list[str]:
        """Stored clip ids, least recently used first."""
        return [p.name[: -len(SUFFIX)] for p, _ in self._entries()]

    def total_bytes(self) -> int:
        return sum(size for _, size in self._entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete least recently used clips until the total fits the cap; returns the evicted ids."""
        entries = self._entries()
        total = sum(size for _, size in entries)
        evicted = []
        for path, size in entries:
            if total <= self.max_bytes:
                break
            key = path.name[: -len(SUFFIX)]
            if key == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            evicted.append(key)
        return evicted

    def _entries(self) -> list[tuple[Path, int]]:
        """(path, size) of every stored clip, oldest access first; tolerates concurrent deletes."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.glob(f"*{SUFFIX}"):
            if not is_clip_hash(path.name[: -len(SUFFIX)]):
                continue  # temp files and strangers are not ours to count or delete
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime_ns, path.name, path, st.st_size))
        found.sort()
        return [(path, size) for _, _, path, size in found]


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass
