"""The grain of a basin map: sub-basins from HDBSCAN, basins from merging them.

HDBSCAN on a UMAP reduction finds tight groups: a persona that talks about three
things ("Maria, a nurse: the ward, her family, her garden") becomes three groups.
Those are kept as *sub-basins*. *Basins* merge sub-basins that are variations of
one thing (``grain="auto"``):

1. the *link* between two sub-basins is a low quantile (:data:`LINK_QUANTILE`,
   0.5 %) of the cosine distances between their texts in the embedding space: two
   sub-themes of one persona share the persona's own words in some texts (its
   name, its role), and those pairs sit close even where the sub-themes' centroids
   are apart;
2. average-linkage clustering of the sub-basins on that link;
3. the cut: every merge below :data:`MERGE_DISTANCE` (0.38) is kept, none above it;
   all may be kept (one basin) or none (the sub-basins are the basins).

The quantile and the distance were chosen (from 0.5, 1 and 2 %, and 0.36-0.46) on
120 generated planted worlds (``tests/worlds.py``, seed 1: 2-10 personas from 24
unrelated domains, 1-4 sub-themes each, 15-200 texts a persona, up to 10:1
imbalance, five sentence styles; a quarter of them null worlds) embedded by
MiniLM, and measured on 240 others (seed 2), see
:data:`VALIDATION` and ``benchmarks/basins.py --grain``. On the held-out worlds the
basins match the personas at a median adjusted Rand of 0.99 (10th percentile 0.88);
two unrelated personas share a basin in 1 of 30 null worlds (3 %) and a lone
persona stays split in 3 of 30. The previous rule (the widest gap of the centroid
dendrogram, kept at a jump of at least 1.35x) reached 0.93 and 0.53 there, merged
in 2 of 30 null worlds and split every lone persona; BERTopic's default clustering,
which does not merge, 0.59 and 0.38. Centroid distances cannot tell the two levels
apart in many worlds (the gap at the right cut is often a jump of 1.02-1.2x), the
0.5 % link can: this is why the link is not the centroid distance.

The link is in the embedder's cosine units: the figures hold for the default
MiniLM; with another embedder check ``grain_`` or choose the grain by hand.

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
LINK_QUANTILE = 0.005
MERGE_DISTANCE = 0.38
LINK_SAMPLE = 150  # texts per sub-basin that the link reads (a seeded sample of larger ones)
CRITERION = "calibrated link cut"
# Measured with MiniLM on worlds from tests/worlds.py (make_worlds(n, seed)), default BasinMap parameters.
# adjusted Rand: basin labels against the personas over the structured worlds (noise a group of its own);
# false merges: share of unrelated-persona null worlds where two personas share a basin (each persona's
# basin being the one that holds most of its texts); splits: share of one-persona worlds left in > 1 basin.
VALIDATION: dict[str, Any] = {
    "tuned_on": {
        "worlds": 120,
        "seed": 1,
        "ari_median": 0.99,
        "ari_p10": 0.856,
        "false_merges": 0.067,
        "splits": 0.067,
    },
    "held_out": {
        "worlds": 240,
        "seed": 2,
        "structured": 180,
        "ari_median": 0.99,
        "ari_p10": 0.884,
        "null_unrelated": 30,
        "false_merges": 0.033,
        "null_single": 30,
        "splits": 0.1,
    },
}


def check_grain(grain: Any) -> Grain:
    """``"auto"``, ``"fine"`` or a number of basins >= 1."""
    if grain in ("auto", "fine"):
        return grain  # type: ignore[no-any-return]
    if isinstance(grain, bool) or not isinstance(grain, int) or grain < 1:
        raise ConfigError(f"grain must be 'auto', 'fine' or a number of basins >= 1, got {grain!r}")
    return grain


def link_distances(vectors: np.ndarray, sub_labels: np.ndarray, subs: list[int], *, seed: int = 0) -> np.ndarray:
    """The :data:`LINK_QUANTILE` of the cosine distances between the texts of every two sub-basins (K x K)."""
    rng = np.random.default_rng(seed)
    members = []
    for s in subs:
        rows = np.flatnonzero(sub_labels == s)
        if len(rows) > LINK_SAMPLE:
            rows = np.sort(rng.choice(rows, size=LINK_SAMPLE, replace=False))
        members.append(np.asarray(vectors[rows], dtype=np.float32))
    # one product per sub-basin against all later ones; members padded to a common size with NaN rows
    # (ignored by nanquantile), so every pair's quantile comes from one vectorised call
    size = max(len(m) for m in members)
    padded = np.full((len(subs), size, vectors.shape[1]), np.nan, dtype=np.float32)
    for i, m in enumerate(members):
        padded[i, : len(m)] = m
    links = np.zeros((len(subs), len(subs)))
    for i in range(len(subs) - 1):
        later = padded[i + 1 :].reshape(-1, vectors.shape[1])
        distances = 1.0 - members[i] @ later.T  # (n_i, later subs x size)
        per_pair = distances.reshape(len(members[i]), len(subs) - i - 1, size).transpose(1, 0, 2)
        q = np.nanquantile(per_pair.reshape(len(subs) - i - 1, -1), LINK_QUANTILE, axis=1)
        links[i, i + 1 :] = links[i + 1 :, i] = q
    return links


def choose_merges(heights: np.ndarray) -> int:
    """How many of the (ascending) merge heights to keep: those below :data:`MERGE_DISTANCE`."""
    return int((np.asarray(heights) < MERGE_DISTANCE).sum())


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
    if grain == "fine" or len(subs) < 2:
        return _renumber(identity, sub_labels), {**info, "criterion": "sub-basins are the basins", "basins": len(subs)}
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    links = link_distances(vectors, sub_labels, subs, seed=seed)
    tree = linkage(squareform(links, checks=False), method="average")
    heights = tree[:, 2]
    info["link"] = f"{LINK_QUANTILE:.1%} quantile of the cosine distances between two sub-basins' texts"
    info["merge_heights"] = [round(float(h), 4) for h in heights]

    def cut(k: int) -> dict[int, int]:
        labels = fcluster(tree, k, criterion="maxclust")
        return {s: int(c) for s, c in zip(subs, labels, strict=True)}

    if isinstance(grain, int):
        k = min(grain, len(subs))
        return _renumber(cut(k), sub_labels), {**info, "criterion": f"{k} basins asked for", "basins": k}
    merges = choose_merges(heights)
    k = len(subs) - merges
    parents = cut(k) if merges else identity
    merged = np.array([parents.get(int(s), -1) for s in sub_labels])
    below = float(heights[merges - 1]) if merges else None
    above = float(heights[merges]) if merges < len(heights) else None
    info.update(
        threshold=MERGE_DISTANCE,
        gap=[None if below is None else round(below, 4), None if above is None else round(above, 4)],
        silhouette_merged=_silhouette(vectors, merged, seed),
        silhouette_sub_basins=_silhouette(vectors, sub_labels, seed),
        validation=VALIDATION,
    )
    if merges == 0:
        criterion = (
            f"sub-basins are the basins: {CRITERION}, no link below the threshold "
            f"{MERGE_DISTANCE} (lowest {heights[0]:.3f})"
        )
    else:
        kept = f"links up to {below:.3f} merged" + ("" if above is None else f", from {above:.3f} not")
        criterion = f"{CRITERION} at {MERGE_DISTANCE}: {kept}"
    return _renumber(parents, sub_labels), {**info, "criterion": criterion, "basins": k}


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
