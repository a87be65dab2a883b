"""A stand-in for a modal.Volume (Modal's cloud is the one thing tests cannot reach).

It has the SDK's method names and returns the SDK's own FileEntry/FileEntryType
types; `from_folder` mirrors a local runs folder, as a Volume mounted at /runs holds it.
"""

from __future__ import annotations

from pathlib import Path

from modal.volume import FileEntry, FileEntryType


class NotFoundError(Exception):
    """Named like modal.exception.NotFoundError, which the SDK raises for a missing Volume."""


class FakeVolume:
    """In-memory Volume: iterdir/listdir list FileEntry objects, read_file yields chunks."""

    def __init__(self, files: dict[str, tuple[bytes, int]] | None = None, missing: bool = False):
        self.files = dict(files or {})  # path -> (content, mtime)
        self.missing = missing
        self.reads: list[str] = []

    def iterdir(self, path: str, *, recursive: bool = True):
        if self.missing:
            raise NotFoundError("Volume 'audio-cnn-runs' not found")
        prefix = path.strip("/")
        dirs = set()
        for name, (content, mtime) in sorted(self.files.items()):
            if prefix and not name.startswith(prefix + "/"):
                continue
            parent = name.rsplit("/", 1)[0] if "/" in name else ""
            if parent and parent not in dirs:
                dirs.add(parent)
                yield FileEntry(path=parent, type=FileEntryType.DIRECTORY, mtime=mtime, size=0)
            yield FileEntry(path=name, type=FileEntryType.FILE, mtime=mtime, size=len(content))

    def listdir(self, path: str, *, recursive: bool = False):
        return list(self.iterdir(path, recursive=recursive))

    def read_file(self, path: str):
        self.reads.append(path)
        content = self.files[path][0]
        for i in range(0, len(content), 1000):
            yield content[i:i + 1000]

    @classmethod
    def from_folder(cls, root: Path) -> FakeVolume:
        """Every file under `root`, by its path relative to root, with its mtime (whole seconds)."""
        return cls({p.relative_to(root).as_posix(): (p.read_bytes(), int(p.stat().st_mtime))
                    for p in sorted(Path(root).rglob("*")) if p.is_file()})
