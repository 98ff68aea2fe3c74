"""Nearest neighbours in the embedding space (cosine, normalised vectors), and quieting UMAP."""

from __future__ import annotations

import warnings

import numpy as np


def exact_knn(vectors: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows by cosine distance, itself first (UMAP's precomputed-kNN format)."""
    import torch

    data = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    n = len(data)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = data[start : start + block] @ data.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = float("inf")  # a point is its own nearest neighbour
        top, idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
        top[:, 0] = 1.0
        indices[start : start + block] = idx.numpy()
        distances[start : start + block] = (1.0 - top).clamp(0.0, 2.0).numpy()
    return indices, distances


def nearest_distance(queries: np.ndarray, pool: np.ndarray, *, exclude_self: bool, block: int = 2048) -> np.ndarray:
    """Cosine distance from each query to its nearest pool vector (all rows normalised)."""
    out = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ pool.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        out[start : start + block] = 1.0 - sims.max(axis=1)
    return out


class quiet(warnings.catch_warnings):
    """UMAP warns that a fixed random_state forces one thread: expected here, not news."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.filterwarnings("ignore", message=".*(n_jobs|random_state|gradient function).*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        warnings.simplefilter("ignore", ImportWarning)  # umap's note that TensorFlow (ParametricUMAP) is absent
