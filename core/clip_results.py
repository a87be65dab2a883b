"""Per-clip results of a model on one fold: predictions.csv and embeddings.npz in a run folder.

    predictions.csv   one row per clip of the fold, in the dataset's order:
                      file,fold,target,predicted,confidence,loss,top1,p1,...,top5,p5
                      (class names; confidence = probability of `predicted`;
                      loss = -ln p(target), cross-entropy without label smoothing)
    embeddings.npz    embeddings (N, D) float32: the pooled features the classifier reads
                      (after global average pooling, before dropout and the linear layer);
                      files (N,) the same file names, in the same order; checkpoint_id ()
                      the content id (core.checkpoint) of the weights that computed them

Training writes both for the fold it reports (core.training; each fold of a
cross-validation); for any checkpoint on any ESC-50-layout folder:

    python -m core.clip_results runs/first/best.pt --data-dir data/ESC-50-master --fold 5

writes them beside the checkpoint (or into --out). Both files are written
atomically; predictions.csv last, so a reader that sees it sees both.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.atomic_write import atomic_open, atomic_write

PREDICTIONS = "predictions.csv"
EMBEDDINGS = "embeddings.npz"
TOP = 5
MAX_BYTES = 20 * 2**20  # a predictions.csv of 20,000 clips is ~3 MB
COLUMNS = ["file", "fold", "target", "predicted", "confidence", "loss"] + \
          [c for k in range(1, TOP + 1) for c in (f"top{k}", f"p{k}")]


@torch.no_grad()
def logits_and_embeddings(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                          batch_of: Callable[[torch.Tensor], torch.Tensor], indices: Sequence[int],
                          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Clips `indices` -> logits (N, classes) and pooled features (N, D), both float32.

    `forward(x)` maps `batch_of(idx)` (batch, n_mels, frames) to logits; the
    pooled features are read from `model.pool` with a forward hook (the model
    must be in eval mode: dropout off, BatchNorm fixed).
    """
    pooled: list[torch.Tensor] = []
    handle = model.pool.register_forward_hook(lambda _m, _i, out: pooled.append(torch.flatten(out, 1).float().cpu()))
    logits = []
    try:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        for start in range(0, len(idx), batch_size):
            logits.append(forward(batch_of(idx[start : start + batch_size])).float().cpu())
    finally:
        handle.remove()
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(logits).numpy(), torch.cat(pooled).numpy()


def clip_table(logits: np.ndarray, targets: Sequence[int], files: Sequence[str], folds: Sequence[int],
               target_names: Sequence[str], class_names: Sequence[str]) -> pd.DataFrame:
    """The predictions.csv table: logits (N, classes), true targets (N,) -> one row per clip (COLUMNS)."""
    z = logits.astype(np.float64)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    rows = np.arange(len(z))
    order = np.argsort(-p, axis=1, kind="stable")[:, :TOP]
    t = np.asarray(targets, dtype=np.int64)
    table = pd.DataFrame({
        "file": list(files), "fold": np.asarray(folds, dtype=np.int64),
        "target": [target_names[i] for i in t], "predicted": [class_names[i] for i in order[:, 0]],
        "confidence": p[rows, order[:, 0]], "loss": -log_p[rows, t],
    })
    for k in range(min(TOP, p.shape[1])):
        table[f"top{k + 1}"] = [class_names[i] for i in order[:, k]]
        table[f"p{k + 1}"] = p[rows, order[:, k]]
    return table


def write_clip_results(folder: str | Path, table: pd.DataFrame, embeddings: np.ndarray,
                       checkpoint_id: str | None = None) -> None:
    """embeddings.npz (with the content id of the weights, core.checkpoint), then predictions.csv,
    atomically, into `folder`."""
    folder = Path(folder)
    with atomic_open(folder / EMBEDDINGS, "wb") as f:
        np.savez_compressed(f, embeddings=embeddings.astype(np.float32), files=np.asarray(table["file"], dtype=str),
                            checkpoint_id=np.asarray(checkpoint_id or ""))
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write(folder / PREDICTIONS, buf.getvalue())


def read_predictions(path: str | Path, max_rows: int = 20_000) -> pd.DataFrame:
    """A predictions.csv as a DataFrame (ValueError with the reason for a file that is not one).

    At most `max_rows` rows and MAX_BYTES are read (ESC-50's folds have 400 clips):
    a file on a synced Volume is hostile input like any other.
    """
    try:
        if Path(path).stat().st_size > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES // 2**20} MB")
        table = pd.read_csv(path, nrows=max_rows)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{Path(path).name} cannot be read: {err}") from None
    missing = [c for c in COLUMNS[:6] if c not in table.columns]
    if missing:
        raise ValueError(f"{Path(path).name} lacks the columns {', '.join(missing)}.")
    for column in ("confidence", "loss"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


SORTS = ("loss", "confidence")


def filter_clips(table: pd.DataFrame, target: str | None = None, predicted: str | None = None,
                 wrong_only: bool = False, sort: str = "loss") -> pd.DataFrame:
    """The rows for one true and/or predicted class (None: any), optionally only mistakes,
    sorted by `sort` ("loss" or "confidence") from the highest; ties keep the file order.

    Mistakes sorted by confidence are the "most confident mistakes".
    """
    rows = table
    if target is not None:
        rows = rows[rows["target"] == target]
    if predicted is not None:
        rows = rows[rows["predicted"] == predicted]
    if wrong_only:
        rows = rows[rows["predicted"] != rows["target"]]
    if sort not in SORTS:
        raise ValueError(f"sort by one of {', '.join(SORTS)}, not {sort!r}")
    return rows.sort_values(sort, ascending=False, kind="stable")


def clip_audio_path(root: str | Path | None, file: str, max_bytes: int) -> Path | None:
    """`<root>/audio/<file>` when it is a file of at most `max_bytes` inside that folder, else None.

    `file` comes from a predictions.csv (hostile input): "../" and absolute
    names, links out of the folder and oversized files give None.
    """
    if not root or not isinstance(file, str) or not file:
        return None
    folder = Path(root, "audio")
    try:
        path = (folder / file).resolve()
        inside = path.is_relative_to(folder.resolve())
        return path if inside and path.is_file() and path.stat().st_size <= max_bytes else None
    except (OSError, ValueError):
        return None


def compute(checkpoint: str | Path, data_dir: str | Path, fold: int, out: str | Path | None = None,
            device: str = "cpu", batch_size: int = 32) -> Path:
    """Both files for `checkpoint` on fold `fold` of the ESC-50-layout folder `data_dir`; returns the folder."""
    from core.checkpoint import load_checkpoint
    from core.datasets import DatasetError, load_dataset
    from core.feature_cache import AudioFeatures

    ckpt = load_checkpoint(checkpoint)
    data = load_dataset(data_dir, len(ckpt.classes))
    indices = data.indices([fold])
    if not indices:
        raise DatasetError(f"Fold {fold} of {data_dir} has no clips.")
    model = ckpt.build_model().to(device)
    source = AudioFeatures(data, ckpt.feature_config, device)
    logits, embeddings = logits_and_embeddings(model, lambda x: model(x.unsqueeze(1)), source.batch, indices,
                                               batch_size)
    clips = [data.clips[i] for i in indices]
    table = clip_table(logits, [c.target for c in clips], [c.filename for c in clips], [c.fold for c in clips],
                       data.classes, ckpt.classes)
    folder = Path(out) if out else Path(checkpoint).parent
    write_clip_results(folder, table, embeddings, ckpt.id)
    return folder


def main(argv: list[str] | None = None) -> int:
    from core.checkpoint import CheckpointError
    from core.datasets import DatasetError

    parser = argparse.ArgumentParser(prog="python -m core.clip_results", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a .pt file (ours, or the seed's best_model.pth)")
    parser.add_argument("--data-dir", required=True, type=Path, help="an ESC-50-layout folder (meta/esc50.csv, audio/)")
    parser.add_argument("--fold", type=int, default=5, help="the fold to predict (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the two files (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        folder = compute(args.checkpoint, args.data_dir, args.fold, args.out, args.device)
    except (CheckpointError, DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {folder / PREDICTIONS} and {folder / EMBEDDINGS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
