"""Classify a folder of audio files into a CSV, chunk by chunk, resumable.

    python -m core.classify_folder DIR --out results.csv [--checkpoint PATH] [--top-k 3] [--batch-size 16]

The folder is streamed: only its file names are listed up front, and files
are read one chunk at a time (at most `in_flight` chunks are in memory, and a
file larger than AUDIO_CNN_MAX_BODY_MB is an error row without being read).
Rows are appended to the CSV as each chunk comes back, so an interrupted run
keeps what it has; running the same command again continues it, skipping
the files already in the CSV (`--overwrite` starts over). A file that cannot
be read or decoded becomes a row with its own error, never a crash; a chunk
that fails as a whole (a lost Modal container) gives each of its files that
chunk's error, and those files are tried again on the next run. A tqdm bar
shows progress on stderr. `serve_modal.py::classify` runs the same
`classify_to_csv` with its chunks classified on Modal GPUs.

CSV columns (one row per file; in path order for a fresh local run, in
arrival order when chunks run in parallel):

    file, status ("ok" | "error"), label, confidence, top_k ("label:0.8123;..."),
    duration_s, error (code: message), checkpoint (the model's id, or "untrained")
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from core.atomic_write import atomic_write

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64"})
COLUMNS = ["file", "status", "label", "confidence", "top_k", "duration_s", "error", "checkpoint"]
# Error codes of causes outside the file (I/O, a lost container): a rerun tries those files again.
RETRIED_CODES = frozenset({"unreadable", "remote_error"})

Item = tuple[str, bytes]                       # (path relative to the folder, file bytes)
ClassifyChunk = Callable[[list[Item]], list[dict]]


class TooLarge(OSError):
    """A file over the size limit: not read, and not tried again by a rerun."""


class ResultsCsvError(ValueError):
    """--out names a file this tool cannot continue (the message says what to do)."""


@dataclass(frozen=True)
class Tally:
    ok: int          # rows with status ok in the CSV now
    errors: int      # rows with status error in the CSV now
    skipped: int     # files already done by an earlier run (not classified again)


def find_audio_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) with an audio suffix, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def error_row(name: str, code: str, message: str, checkpoint: str = "") -> dict:
    return {"file": name, "status": "error", "label": "", "confidence": "", "top_k": "",
            "duration_s": "", "error": f"{code}: {message}", "checkpoint": checkpoint}


def checkpoint_label(predictor) -> str:
    """What the checkpoint column says for `predictor`: its id, or "untrained"."""
    return predictor.info.checkpoint_id if predictor.info.trained else "untrained"


def classify_items(predictor, items: list[Item], top_k: int = 3, batch_size: int = 16,
                   max_seconds: float | None = 30.0) -> list[dict]:
    """(name, file bytes) pairs -> one CSV row each, in the same order.

    Undecodable files become error rows; the rest go through
    `Predictor.predict_batch` (equal lengths batched, up to `batch_size`).
    """
    from core.audio import AudioError, decode_audio

    model = checkpoint_label(predictor)
    rows: list[dict | None] = [None] * len(items)
    clips, slots, durations = [], [], []
    for i, (name, data) in enumerate(items):
        try:
            audio = decode_audio(data, max_seconds=max_seconds)
        except AudioError as err:
            rows[i] = error_row(name, err.code, str(err), model)
            continue
        clips.append(audio.samples)
        slots.append(i)
        durations.append(audio.duration)
    if clips:
        for i, duration, preds in zip(slots, durations, predictor.predict_batch(clips, top_k, batch_size), strict=True):
            rows[i] = {
                "file": items[i][0], "status": "ok", "label": preds[0].label,
                "confidence": f"{preds[0].confidence:.4f}",
                "top_k": ";".join(f"{p.label}:{p.confidence:.4f}" for p in preds),
                "duration_s": f"{duration:.3f}", "error": "", "checkpoint": model,
            }
    return rows  # type: ignore[return-value]


def read_chunks(files: list[Path], root: Path, size: int,
                max_bytes: int | None = None) -> Iterator[list[tuple[str, bytes | OSError]]]:
    """Chunks of (path relative to root, bytes or the OSError reading it raised), read lazily.

    A file over `max_bytes` is not read: its TooLarge (an OSError) says so.
    """
    for start in range(0, len(files), size):
        chunk: list[tuple[str, bytes | OSError]] = []
        for path in files[start : start + size]:
            name = path.relative_to(root).as_posix()
            try:
                if max_bytes is not None and path.stat().st_size > max_bytes:
                    raise TooLarge(f"{path.stat().st_size / 1e6:.1f} MB is over the {max_bytes / 1e6:.1f} MB "
                                   "limit (AUDIO_CNN_MAX_BODY_MB); not read")
                chunk.append((name, path.read_bytes()))
            except OSError as err:
                chunk.append((name, err))
        yield chunk


# -- the CSV: rows kept from an earlier run, then rows appended as they come -------------------


def read_done(out: Path, checkpoint: str) -> dict[str, dict]:
    """The rows of an existing results CSV that a rerun keeps (ok, or an error of the file itself).

    ResultsCsvError when `out` is not this tool's CSV, or was written by another checkpoint.
    A row cut short by an interruption is dropped (its file is classified again).
    """
    try:
        with open(out, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsCsvError(f"Cannot read {out} to continue it ({err}); pass --overwrite or another --out.") from None
    reader = csv.DictReader(io.StringIO(text))
    if text and reader.fieldnames != COLUMNS:
        raise ResultsCsvError(f"{out} is not a results CSV of this tool (columns {reader.fieldnames}); "
                              "pass another --out, or --overwrite to replace it.")
    done = {}
    for row in reader:
        if None in row or any(row.get(c) is None for c in COLUMNS) or row["status"] not in ("ok", "error"):
            continue  # the last line of an interrupted write
        if row["status"] == "error" and row["error"].split(":", 1)[0] in RETRIED_CODES:
            continue
        if row["checkpoint"] != checkpoint:
            raise ResultsCsvError(f"{out} holds results of checkpoint {row['checkpoint']!r}, this run classifies "
                                  f"with {checkpoint!r}: pass --overwrite to start over, or another --out.")
        done[row["file"]] = row
    return done


class ResultsWriter:
    """Appends rows to the CSV and flushes each chunk: a killed run loses at most the chunk in flight."""

    def __init__(self, out: Path, kept: list[dict]):
        out.parent.mkdir(parents=True, exist_ok=True)
        head = io.StringIO()
        csv.DictWriter(head, fieldnames=COLUMNS).writeheader()
        csv.DictWriter(head, fieldnames=COLUMNS).writerows(kept)
        atomic_write(out, head.getvalue())  # the earlier run's kept rows, without its retried or cut rows
        self.file = open(out, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS)
        self.ok = sum(r["status"] == "ok" for r in kept)
        self.errors = len(kept) - self.ok

    def write(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)
        self.file.flush()
        ok = sum(r["status"] == "ok" for r in rows)
        self.ok, self.errors = self.ok + ok, self.errors + len(rows) - ok

    def close(self) -> None:
        self.file.close()


def classify_to_csv(folder: Path, out: Path, classify_chunk: ClassifyChunk, *, checkpoint: str,
                    chunk_size: int = 16, in_flight: int = 1, overwrite: bool = False,
                    max_bytes: int | None = None, progress: bool = True) -> Tally:
    """Classify every audio file under `folder` into `out`, continuing an earlier run of it.

    `classify_chunk(items)` returns one row per (name, bytes) item (classify_items
    locally, a Modal call on Modal); when it raises, each file of that chunk
    gets a "remote_error" row naming that exception. Up to `in_flight` chunks
    run at once (threads: for remote calls). `checkpoint`: the model's id (or
    "untrained"), checked against the rows kept from an earlier run.
    """
    from tqdm import tqdm

    folder = Path(folder)
    done = {} if overwrite else read_done(out, checkpoint)
    files = [p for p in find_audio_files(folder) if p.relative_to(folder).as_posix() not in done]
    writer = ResultsWriter(out, list(done.values()))

    def run(chunk: list[tuple[str, bytes | OSError]]) -> list[dict]:
        rows = {name: error_row(name, "too_large" if isinstance(data, TooLarge) else "unreadable", str(data),
                                checkpoint)
                for name, data in chunk if isinstance(data, OSError)}
        items = [(name, data) for name, data in chunk if not isinstance(data, OSError)]
        try:
            rows.update((row["file"], row) for row in (classify_chunk(items) if items else []))
        except Exception as err:  # the whole chunk failed: its files say why, and are retried next time
            why = f"{type(err).__name__}: {err}"
            rows.update((name, error_row(name, "remote_error", why, checkpoint)) for name, _ in items)
        return [rows[name] for name, _ in chunk]

    bar = tqdm(total=len(files) + len(done), initial=len(done), unit="file", desc="classifying",
               disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=in_flight) if in_flight > 1 else None
    pending: set[Future] = set()

    def collect(rows: list[dict]) -> None:
        writer.write(rows)
        bar.update(len(rows))

    try:
        for chunk in read_chunks(files, folder, chunk_size, max_bytes):
            if pool is None:
                collect(run(chunk))
                continue
            pending.add(pool.submit(run, chunk))
            if len(pending) >= in_flight:  # bounded: read the next chunk only when one came back
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    collect(future.result())
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                collect(future.result())
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        writer.close()
    return Tally(writer.ok, writer.errors, len(done))


def main(argv: list[str] | None = None) -> int:
    from core.checkpoint import CheckpointError
    from core.inference import Predictor
    from core.settings import Settings

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m core.classify_folder", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of audio files (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results.csv"),
                        help="CSV to write; an existing one is continued (files in it are skipped)")
    parser.add_argument("--overwrite", action="store_true", help="start --out over instead of continuing it")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint (default: core.checkpoint's policy: AUDIO_CNN_CHECKPOINT, "
                             "AUDIO_CNN_RUN, else the best run in AUDIO_CNN_RUNS_DIR)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (and files per chunk)")
    parser.add_argument("--max-seconds", type=float, default=settings.max_audio_seconds,
                        help="longer files become error rows")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    try:
        predictor = Predictor.from_settings(settings, args.checkpoint)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    if not predictor.info.trained:
        print("WARNING: no checkpoint found; an UNTRAINED model gives meaningless labels.", file=sys.stderr)

    def classify_chunk(items: list[Item]) -> list[dict]:
        return classify_items(predictor, items, args.top_k, args.batch_size, args.max_seconds)

    try:
        tally = classify_to_csv(args.folder, args.out, classify_chunk, checkpoint=checkpoint_label(predictor),
                                chunk_size=args.batch_size, overwrite=args.overwrite,
                                max_bytes=settings.max_body_bytes, progress=not args.no_progress)
    except ResultsCsvError as err:
        parser.exit(2, f"error: {err}\n")
    print(summary_line(tally, args.out), file=sys.stderr)
    return 0


def summary_line(tally: Tally, out: Path) -> str:
    earlier = f" ({tally.skipped} from an earlier run)" if tally.skipped else ""
    return f"{tally.ok + tally.errors} files: {tally.ok} classified, {tally.errors} errors{earlier} -> {out}"


if __name__ == "__main__":
    sys.exit(main())
