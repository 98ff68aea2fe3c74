"""The grain of a basin map: sub-basins from HDBSCAN, basins from merging them.

HDBSCAN on a UMAP reduction finds tight groups: a persona that talks about three
things ("Maria, a nurse: the ward, her family, her garden") becomes three groups.
Those are kept as *sub-basins*. *Basins* merge sub-basins whose centroids (in the
embedding space, cosine) are closer to one another than to the rest:

1. average-linkage clustering of the sub-basin centroids;
2. the cut at the widest gap between successive merge heights (the dendrogram's
   clearest jump from "variations of one thing" to "different things"), never
   merging everything into one basin;
3. kept only if the heights jump there by at least :data:`MIN_JUMP` (the merge
   above the gap at least 1.35 times as high as the one below); otherwise there is
   no level above the sub-basins and basins are the sub-basins themselves.

Measured: six templated personas with three sub-themes each, embedded by MiniLM,
merge at 0.10-0.38 within a persona and from 0.56 between personas (jump 1.48):
basins match the personas exactly (adjusted Rand 1.0) and sub-basins the themes
(0.97-1.0). Five unrelated planted personas merge at 0.79-1.05 (largest jump
1.17): nothing is merged. Silhouettes of both partitions are recorded too.

A fixed number of basins (``grain=k``) cuts the same dendrogram at ``k``;
``grain="fine"`` keeps the sub-basins as basins. The choice and the figures behind
it are recorded in ``BasinMap.grain_``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from persona_space.errors import ConfigError

Grain = Literal["auto", "fine"] | int
SILHOUETTE_SAMPLE = 3000
MIN_JUMP = 1.35


def check_grain(grain: Any) -> Grain:
    """``"auto"``, ``"fine"`` or a number of basins >= 1."""
    if grain in ("auto", "fine"):
        return grain  # type: ignore[no-any-return]
    if isinstance(grain, bool) or not isinstance(grain, int) or grain < 1:
        raise ConfigError(f"grain must be 'auto', 'fine' or a number of basins >= 1, got {grain!r}")
    return grain


def merge_sub_basins(
    vectors: np.ndarray, sub_labels: np.ndarray, grain: Grain, *, seed: int = 0
) -> tuple[dict[int, int], dict[str, Any]]:
    """Map each sub-basin id to its basin id (noise, -1, stays -1), and describe the choice.

    ``vectors`` are the normalised embeddings of the samples that ``sub_labels`` label.
    Basin ids are numbered by size, largest first.
    """
    subs = [int(s) for s in np.unique(sub_labels) if s >= 0]
    info: dict[str, Any] = {"grain": grain, "sub_basins": len(subs)}
    identity = {s: s for s in subs}
    if grain == "fine" or len(subs) < 2 or (len(subs) < 3 and grain == "auto"):
        return _renumber(identity, sub_labels), {**info, "criterion": "sub-basins are the basins", "basins": len(subs)}
    from scipy.cluster.hierarchy import fcluster, linkage

    centroids = np.stack([vectors[sub_labels == s].mean(axis=0) for s in subs])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    tree = linkage(centroids, method="average", metric="cosine")
    heights = tree[:, 2]
    info["merge_heights"] = [round(float(h), 4) for h in heights]
    if isinstance(grain, int):
        k = min(grain, len(subs))
        cut = fcluster(tree, k, criterion="maxclust")
        parents = {s: int(c) for s, c in zip(subs, cut, strict=True)}
        return _renumber(parents, sub_labels), {**info, "criterion": f"{k} basins asked for", "basins": k}
    # cutting between merge i and i + 1 leaves len(subs) - (i + 1) basins; never a single one
    gaps = np.diff(heights)
    widest = int(np.argmax(gaps))
    k = len(subs) - (widest + 1)
    cut = fcluster(tree, k, criterion="maxclust")
    parents = {s: int(c) for s, c in zip(subs, cut, strict=True)}
    merged = np.array([parents.get(int(s), -1) for s in sub_labels])
    below, above = float(heights[widest]), float(heights[widest + 1])
    jump = above / below if below > 0 else float("inf")
    info.update(
        gap=[round(below, 4), round(above, 4)],
        jump=round(jump, 3),
        silhouette_merged=_silhouette(vectors, merged, seed),
        silhouette_sub_basins=_silhouette(vectors, sub_labels, seed),
    )
    if jump >= MIN_JUMP:
        criterion = (
            f"widest gap in the sub-basin dendrogram (average linkage, cosine), a jump of {jump:.2f}x "
            f"(at least {MIN_JUMP}x)"
        )
        return _renumber(parents, sub_labels), {**info, "criterion": criterion, "basins": k}
    criterion = f"sub-basins are the basins: the widest dendrogram gap is a jump of only {jump:.2f}x (< {MIN_JUMP}x)"
    return _renumber(identity, sub_labels), {**info, "criterion": criterion, "basins": len(subs)}


def _silhouette(vectors: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Mean silhouette (cosine) of the non-noise samples; -1 when it is undefined (fewer than two groups)."""
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    groups = np.unique(labels[keep])
    if len(groups) < 2 or keep.sum() <= len(groups):
        return -1.0
    sample = min(int(keep.sum()), SILHOUETTE_SAMPLE)
    score = silhouette_score(vectors[keep], labels[keep], metric="cosine", sample_size=sample, random_state=seed)
    return round(float(score), 4)


def _renumber(parents: dict[int, int], sub_labels: np.ndarray) -> dict[int, int]:
    """Basin ids 0, 1, ... by size (samples), largest first; ties by the smallest sub-basin id."""
    sizes: dict[int, int] = {}
    first: dict[int, int] = {}
    for sub, parent in parents.items():
        sizes[parent] = sizes.get(parent, 0) + int((sub_labels == sub).sum())
        first[parent] = min(first.get(parent, sub), sub)
    order = sorted(sizes, key=lambda p: (-sizes[p], first[p]))
    rank = {p: i for i, p in enumerate(order)}
    return {sub: rank[parent] for sub, parent in parents.items()}
