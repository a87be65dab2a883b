"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

    with atomic_open(path, "wb") as f:      # stream into a temp file beside `path` ...
        torch.save(payload, f)              # ... renamed over `path` when the block succeeds
    atomic_write(path, text_or_bytes)       # the one-shot form

The temp file lives in the same folder (a rename is only atomic within one
file system), is named `.<name>.<random>.tmp` so that folder scans that match
real names never pick it up, and is removed when the block raises (Ctrl-C
included). `fsync=True` also flushes it to disk before the rename, for files
that must survive a power cut (checkpoints); `mtime` sets the new file's
modification time (the Volume sync keeps remote times).

This is the one way the project writes a file that anything may read
concurrently: checkpoints, run JSON, the feature cache, the clip store, Volume
syncs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, fsync: bool = False,
                mtime: float | None = None, encoding: str | None = None) -> Iterator[IO]:
    """A file object for a temp file beside `path`; renamed over `path` when the block succeeds.

    `mode` is "wb" or "w" (text, `encoding` default UTF-8). Parent folders are created.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="" if text else None) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = False) -> None:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb", fsync=fsync) as f:
        f.write(data)
