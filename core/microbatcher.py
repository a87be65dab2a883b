"""Micro-batching: concurrent forward passes gathered into one.

A server thread that wants a forward pass calls `MicroBatcher.submit(x)` and
blocks; one worker thread collects what arrives within a short window and
runs it as a single batch, then hands each caller its own slice back.

    submit(x (n, 1, n_mels, frames), capture) -> (logits (n, classes), {name: (n, C, H, W)})

Why it pays: a CNN forward on one clip leaves most of the hardware idle (a
GPU by far, but also a CPU's vector units on small convolutions), so N clips
in one pass cost much less than N passes.

The three bounds:

- wait: the worker waits at most `max_wait_ms` after the first request of a
  batch for more to arrive; under load the queue fills while the previous
  batch runs, so a busy server hardly waits at all.
- size: a batch holds at most `max_items` clips and at most `max_cost` input
  frames in all, so a burst of 30 s clips cannot multiply peak memory.
- time: a caller waits at most `timeout_s` for its result; a wedged or
  overloaded forward then raises `ForwardTimeout` (the server's 503) instead
  of hanging the request, and a request nobody waits for any more is dropped
  before its pass runs.
- shape: only inputs of equal shape (and the same `capture` flag) share a
  pass. Padding shorter clips would change their results: global average
  pooling would average over the padding too.

Results equal unbatched ones within float tolerance: the model is in eval
mode (BatchNorm uses running statistics, dropout is off), so each row of the
batch is computed independently; only the kernels' summation order differs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

# (x (n, ...), capture) -> logits (n, classes), {name: (n, ...)} (empty without capture)
ForwardFn = Callable[[torch.Tensor, bool], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class ForwardTimeout(TimeoutError):
    """No forward pass answered within the batcher's timeout."""

    code = "model_busy"
    status = 503


@dataclass
class _Request:
    x: torch.Tensor
    capture: bool
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return (tuple(self.x.shape[1:]), self.capture, self.x.dtype, self.x.device)

    @property
    def cost(self) -> int:
        """Input frames: clips x time steps (the last axis)."""
        return int(self.x.shape[0]) * int(self.x.shape[-1])


@dataclass
class BatchStats:
    """What the worker has done so far (for /health and the benchmark)."""

    batches: int = 0        # forward passes run
    items: int = 0          # submitted tensors answered
    clips: int = 0          # rows (clips) answered
    largest: int = 0        # most clips in one forward pass

    def to_dict(self) -> dict:
        mean = self.clips / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "clips": self.clips,
                "largest": self.largest, "mean_clips_per_batch": round(mean, 2)}


class MicroBatcher:
    """Gathers concurrent `submit` calls into batched calls of `forward`.

    Thread-safe. `forward` only ever runs on the worker thread, one batch at a
    time, inside `torch.inference_mode()` (which is per thread). The worker
    starts on the first `submit`, so a process can be snapshotted (Modal
    memory snapshots) or forked before any thread exists.
    """

    def __init__(self, forward: ForwardFn, max_items: int = 16, max_wait_ms: float = 5.0,
                 max_cost: int | None = None, timeout_s: float | None = None):
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.forward = forward
        self.max_items = max_items
        self.max_wait = max_wait_ms / 1000.0
        self.max_cost = max_cost
        self.timeout = timeout_s
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._carry: _Request | None = None  # a request that did not fit the previous batch
        self._start_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closed = False

    def submit(self, x: torch.Tensor, capture: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run `x` (n, ...) through the model with whatever else is waiting; blocks until done.

        Returns this caller's rows only: logits (n, classes) and, with
        `capture`, each captured map's (n, ...) rows. Raises what the forward
        raised for this input, or ForwardTimeout after `timeout_s`.
        """
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        request = _Request(x, capture)
        self._ensure_worker()
        self._queue.put(request)
        try:
            return request.future.result(timeout=self.timeout)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError since Python 3.11
            request.future.cancel()  # still queued: the worker skips it
            raise ForwardTimeout(f"The model did not answer within {self.timeout:g} s: it is busy or stuck. "
                                 "Try again shortly.") from None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the batches already queued; later submits raise."""
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)

    # -- worker ----------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                batch = self._gather()
                if batch is None:
                    return
                # A caller that timed out cancelled its request: it needs no pass any more.
                live = [r for r in batch if r.future.set_running_or_notify_cancel()]
                for group in _group_by_key(live):
                    self._answer(group)

    def _gather(self) -> list[_Request] | None:
        """Block for one request, then take more until a bound is hit. None: closing."""
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, clips, cost = [first], first.x.shape[0], first.cost
        deadline = time.monotonic() + self.max_wait
        while clips < self.max_items:
            remaining = deadline - time.monotonic()
            try:
                # Whatever is already queued is taken at once; only an empty queue waits.
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the next _gather see it after this batch
                break
            if clips + item.x.shape[0] > self.max_items or (
                    self.max_cost is not None and cost + item.cost > self.max_cost):
                self._carry = item  # first in the next batch: arrival order is kept
                break
            batch.append(item)
            clips += item.x.shape[0]
            cost += item.cost
        return batch

    def _answer(self, group: list[_Request]) -> None:
        """One forward for the group; each future gets its rows or the exception."""
        try:
            x = group[0].x if len(group) == 1 else torch.cat([r.x for r in group])
            logits, captured = self.forward(x, group[0].capture)
        except Exception as err:  # noqa: BLE001 - handed to the callers, never swallowed
            if len(group) == 1:
                group[0].future.set_exception(err)
                return
            # One input (or the batch's size, e.g. out of GPU memory) failed the
            # pass: retry each alone so a neighbour never fails for someone else.
            for request in group:
                self._answer([request])
            return
        self._count(group, int(x.shape[0]))
        start = 0
        for request in group:
            stop = start + request.x.shape[0]
            # Slices are views: no copies, and the batch is freed when the last caller drops them.
            request.future.set_result(
                (logits[start:stop], {name: t[start:stop] for name, t in captured.items()}))
            start = stop

    def _count(self, group: list[_Request], clips: int) -> None:
        s = self.stats
        s.batches += 1
        s.items += len(group)
        s.clips += clips
        s.largest = max(s.largest, clips)


def _group_by_key(batch: list[_Request]) -> list[list[_Request]]:
    """Requests that can share one pass (equal shape, dtype, device and capture), in arrival order."""
    groups: dict[tuple, list[_Request]] = {}
    for request in batch:
        groups.setdefault(request.key, []).append(request)
    return list(groups.values())
