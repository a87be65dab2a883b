"""A fold in the model's embedding space: embeddings.npz -> a 2-D picture, and where a new clip lands.

    load_embeddings(path)                  embeddings.npz (core.clip_results) -> Embeddings, checked
    project(x, method)                     (N, D) -> (N, 2) with PCA, t-SNE (scikit-learn) or UMAP (umap-learn)
    neighbours(x, query, k)                the k nearest clips to `query` by cosine distance
    place(x, xy, query, k)                 where `query` lands in the picture: the mean position of its k
                                           nearest neighbours (t-SNE and UMAP have no transform for new points)

Every method is seeded: the same file gives the same picture.
UMAP is used when umap-learn is installed (it is optional: it brings numba).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_BYTES = 64 * 2**20          # the file, compressed or not
MAX_POINTS = 5_000              # ESC-50 has 2,000 clips; t-SNE of 2,000 takes ~30 s on 2 cores, so a
                                # larger (hostile) file would hold a session's thread for minutes
TSNE_EXACT_MAX = 1000            # exact t-SNE is O(N^2): 3 s for 400 points here, Barnes-Hut 7 s


class EmbeddingsError(ValueError):
    """An embeddings.npz that cannot be used (the message says why)."""


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray          # (N, D) float32
    files: list[str]             # (N,)
    checkpoint_id: str           # the weights that computed them ("" when unknown)


def methods() -> tuple[str, ...]:
    """The projections available here: PCA and t-SNE always, UMAP when umap-learn is installed."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return ("pca", "tsne")
    return ("pca", "tsne", "umap")


def load_embeddings(path: str | Path) -> Embeddings:
    """Read and check an embeddings.npz (no pickles; sizes bounded): EmbeddingsError otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise EmbeddingsError(f"{path.name} is larger than {MAX_BYTES // 2**20} MB.")
        with np.load(path, allow_pickle=False) as npz:
            if "embeddings" not in npz.files or "files" not in npz.files:
                raise EmbeddingsError(f"{path.name} lacks the arrays 'embeddings' and 'files'.")
            vectors, files = npz["embeddings"], npz["files"]
            checkpoint = str(npz["checkpoint_id"]) if "checkpoint_id" in npz.files else ""
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        if isinstance(err, EmbeddingsError):
            raise
        raise EmbeddingsError(f"{path.name} is not a readable embeddings file: {err}") from None
    if vectors.ndim != 2 or files.ndim != 1 or len(files) != len(vectors) or not len(vectors):
        raise EmbeddingsError(f"{path.name}: embeddings {vectors.shape} and files {files.shape} do not match.")
    if len(vectors) > MAX_POINTS or not np.issubdtype(vectors.dtype, np.floating):
        raise EmbeddingsError(f"{path.name}: at most {MAX_POINTS} float vectors, got {len(vectors)} of {vectors.dtype}.")
    vectors = vectors.astype(np.float32)
    if not np.isfinite(vectors).all():
        raise EmbeddingsError(f"{path.name} holds NaN or infinite values.")
    return Embeddings(vectors, [str(f) for f in files], checkpoint)


def project(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) float32. Features are standardised first (each has its own scale)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))).astype(np.float32)
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(z).astype(np.float32)
    if method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        # PCA to 50 dimensions first (van der Maaten's recipe), 500 iterations, and exact
        # gradients up to TSNE_EXACT_MAX points: measured faster than Barnes-Hut there.
        z = PCA(n_components=min(50, *z.shape), random_state=seed).fit_transform(z)
        tsne = TSNE(n_components=2, perplexity=float(min(30.0, (len(z) - 1) / 3)), init="pca", random_state=seed,
                    max_iter=500, method="exact" if len(z) <= TSNE_EXACT_MAX else "barnes_hut")
        return tsne.fit_transform(z).astype(np.float32)
    if method == "umap" and "umap" in methods():
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=seed)
        return reducer.fit_transform(z).astype(np.float32)
    raise ValueError(f"Unknown projection {method!r}; choose one of: {', '.join(methods())}.")


def neighbours(x: np.ndarray, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k rows of `x` (N, D) nearest to `query` (D,) by cosine distance, nearest first,
    and their distances (0 = same direction, 2 = opposite)."""
    x = np.asarray(x, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if q.shape != x.shape[1:]:
        raise ValueError(f"The clip's embedding has {q.shape[0] if q.ndim else 0} features, the fold's "
                         f"{x.shape[1]}: they come from different models.")
    sims = (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q) + 1e-12)
    order = np.argsort(-sims, kind="stable")[: max(1, min(k, len(x)))]
    return order, 1.0 - sims[order]


def place(x: np.ndarray, xy: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    """Where `query` (D,) lands among the projected points `xy` (N, 2): its k neighbours' mean position."""
    order, _ = neighbours(x, query, k)
    return np.asarray(xy, dtype=np.float32)[order].mean(axis=0)
