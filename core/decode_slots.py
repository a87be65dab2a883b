"""Slots: at most `limit` holders at once, the rest wait (a semaphore whose limit can change).

`core.audio.DECODE_SLOTS` is the one instance that matters: it bounds how many
audio decodes run at once in this process, whoever calls (the server's
threadpool, the dashboard's in-process backend, classify_folder). A counter
under a Condition rather than a `threading.BoundedSemaphore`, because the
server and the dashboard set the limit from their Settings after import
(`configure`), and because /health and tests want to read `active` and `waiting`.
"""

from __future__ import annotations

import threading


class Slots:
    """A resizable counting semaphore; `active` holders, `waiting` callers."""

    def __init__(self, limit: int):
        self._cond = threading.Condition()
        self.limit, self.active, self.waiting = 0, 0, 0
        self.configure(limit)

    def configure(self, limit: int) -> None:
        """Change the limit; callers already holding a slot keep it."""
        if limit < 1:
            raise ValueError(f"a slot limit must be at least 1, got {limit}")
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout` seconds; False if none freed up."""
        with self._cond:
            self.waiting += 1
            try:
                if not self._cond.wait_for(lambda: self.active < self.limit, timeout=timeout):
                    return False
            finally:
                self.waiting -= 1
            self.active += 1
            return True

    def release(self) -> None:
        with self._cond:
            if self.active == 0:
                raise RuntimeError("release() without a matching acquire()")
            self.active -= 1
            self._cond.notify()
