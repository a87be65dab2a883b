"""Classify a folder of audio files into a CSV, in batches.

    python -m core.classify_folder DIR --out results.csv [--checkpoint PATH] [--top-k 3] [--batch-size 16]

Files are decoded a chunk at a time (memory stays bounded however big the
folder), clips of equal length share forward passes (ESC-50's clips are all
5 s), and a file that cannot be read becomes a row with its error, never a
crash. A tqdm bar shows progress on stderr. `serve_modal.py::classify` runs
the same `classify_items` on Modal GPUs, one chunk per input.

CSV columns (one row per file, in path order):

    file, status ("ok" | "error"), label, confidence, top_k ("label:0.8123;..."),
    duration_s, error (code: message)
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.audio import AudioError, decode_audio
from core.checkpoint import CheckpointError
from core.inference import Predictor
from core.settings import Settings

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64"})
COLUMNS = ["file", "status", "label", "confidence", "top_k", "duration_s", "error"]


def find_audio_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) with an audio suffix, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def error_row(name: str, code: str, message: str) -> dict:
    return {"file": name, "status": "error", "label": "", "confidence": "", "top_k": "",
            "duration_s": "", "error": f"{code}: {message}"}


def classify_items(predictor: Predictor, items: list[tuple[str, bytes]], top_k: int = 3,
                   batch_size: int = 16, max_seconds: float | None = 30.0) -> list[dict]:
    """(name, file bytes) pairs -> one CSV row each, in the same order.

    Undecodable files become error rows; the rest go through
    `Predictor.predict_batch` (equal lengths batched, up to `batch_size`).
    """
    rows: list[dict | None] = [None] * len(items)
    clips, slots, durations = [], [], []
    for i, (name, data) in enumerate(items):
        try:
            audio = decode_audio(data, max_seconds=max_seconds)
        except AudioError as err:
            rows[i] = error_row(name, err.code, str(err))
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
                "duration_s": f"{duration:.3f}", "error": "",
            }
    return rows  # type: ignore[return-value]


def read_chunks(files: list[Path], root: Path, size: int) -> Iterator[list[tuple[str, bytes | OSError]]]:
    """Chunks of (path relative to root, bytes or the OSError reading it raised)."""
    for start in range(0, len(files), size):
        chunk: list[tuple[str, bytes | OSError]] = []
        for path in files[start : start + size]:
            try:
                chunk.append((str(path.relative_to(root)), path.read_bytes()))
            except OSError as err:
                chunk.append((str(path.relative_to(root)), err))
        yield chunk


def classify_folder(predictor: Predictor, folder: Path, top_k: int = 3, batch_size: int = 16,
                    max_seconds: float | None = 30.0, progress: bool = True) -> Iterable[dict]:
    """Rows for every audio file under `folder`, chunk by chunk (a generator)."""
    from tqdm import tqdm

    files = find_audio_files(folder)
    with tqdm(total=len(files), unit="file", desc="classifying", disable=not progress, file=sys.stderr) as bar:
        for chunk in read_chunks(files, Path(folder), batch_size):
            unreadable = {name: err for name, err in chunk if isinstance(err, OSError)}
            readable = [(name, data) for name, data in chunk if not isinstance(data, OSError)]
            done = {r["file"]: r for r in classify_items(predictor, readable, top_k, batch_size, max_seconds)}
            for name, _ in chunk:
                err = unreadable.get(name)
                yield done[name] if err is None else error_row(name, "unreadable", str(err))
            bar.update(len(chunk))


def write_csv(rows: Iterable[dict], out: Path) -> tuple[int, int]:
    """Write rows (streaming, header first); returns (ok, errors)."""
    ok = errors = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            ok, errors = (ok + 1, errors) if row["status"] == "ok" else (ok, errors + 1)
    return ok, errors


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m core.classify_folder", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of audio files (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results.csv"), help="CSV to write")
    parser.add_argument("--checkpoint", type=Path, default=settings.checkpoint,
                        help="checkpoint (default: AUDIO_CNN_CHECKPOINT, else newest runs/*/best.pt)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--max-seconds", type=float, default=settings.max_audio_seconds,
                        help="longer files become error rows")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    try:
        predictor = Predictor.from_settings(args.checkpoint, settings.runs_dir)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    if not predictor.info.trained:
        print("WARNING: no checkpoint found; an UNTRAINED model gives meaningless labels.", file=sys.stderr)
    rows = classify_folder(predictor, args.folder, args.top_k, args.batch_size, args.max_seconds,
                           progress=not args.no_progress)
    ok, errors = write_csv(rows, args.out)
    print(f"{ok + errors} files: {ok} classified, {errors} errors -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
