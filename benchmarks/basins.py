"""Basin-map speed on sampled self-descriptions: ``BasinMap`` beside BERTopic's default pipeline.

Texts: ``--n`` self-descriptions sampled once from the embedded model (the 75
identity probes and paraphrases, temperatures 0.7 and 1.0, 48 new tokens) and kept
in ``benchmarks/results/texts-N.parquet`` (git-ignored) for later runs.

Measured in the same run, after a warm-up that compiles UMAP's numba kernels for both:
  (1) embed + fit + name with ``BasinMap``: embedding with an empty cache (in the dtype
      ``Embedder`` picks here: bf16 on CPUs with AVX-512 BF16), then ``BasinMap.fit``;
      the float32 embedding time is printed beside it, so the share of the speed-up
      that comes from bf16 is visible;
  (2) BERTopic's default pipeline on the same texts (the same MiniLM in float32, then
      its default UMAP/HDBSCAN/c-TF-IDF), if BERTopic is installed; otherwise say so;
  (3) re-mapping from the embedding cache (step (1)'s ``fit``: a new map, every
      vector read from the cache), and loading a saved map;
  (4) assigning 2,000 new samples to the map (embeddings cached, and not cached).

Targets: (1) <= 0.5x BERTopic, (3) <= 0.2x BERTopic, (4) < 1 s.

    python benchmarks/basins.py [--n 10000]

``--grain``: how well the automatic grain finds the personas, on generated planted
worlds (``tests/worlds.py``; seed 2, the held-out worlds: the grain's numbers were
chosen on seed 1), embedded by MiniLM and fitted with default parameters. Beside
it, on the same worlds: the previous rule (the widest gap of the sub-basin
centroid dendrogram, kept at a jump of 1.35x), the sub-basins themselves, and
BERTopic's default clustering (UMAP 15 neighbours, 5-D, min_dist 0, cosine;
HDBSCAN min_cluster_size 10, euclidean, eom; ``random_state=0`` for repeatable
figures; BERTopic itself where it is installed, otherwise those two steps, which
are where its topics come from). Figures:

* adjusted Rand at the basin level against the personas, over the structured
  worlds, noise counted as a group of its own: median and 10th percentile
  (targets >= 0.95 and >= 0.85);
* false-merge rate: the share of null worlds of unrelated single-theme personas in
  which two personas share a basin (each persona's basin being the one that holds
  most of its non-noise texts; target <= 5 %);
* split rate: the share of one-persona worlds that come out as more than one basin;
* the grain's own time per fit (``merge_sub_basins`` on the fitted sub-basins).

    python benchmarks/basins.py --grain [--worlds 240] [--seed 2]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import persona_space as ps
from _machine import machine
from persona_space.embedding import Embedder, embedded_embedder_folder

RESULTS = Path("benchmarks/results")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the planted-world generator


def sampled_texts(n: int) -> pd.DataFrame:
    """``n`` sampled self-descriptions (sampled once, then read from disk)."""
    path = RESULTS / f"texts-{n}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    model = ps.load_model()
    probes = ps.probes.load("identity+paraphrases")
    per = math.ceil(n / (len(probes) * 2))
    samples = ps.sample(model, probes, n=per, temperatures=[0.7, 1.0], max_new_tokens=48, seed=0)
    frame = samples.df.sample(n=n, random_state=0).reset_index(drop=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def previous_rule(vectors: np.ndarray, sub_labels: np.ndarray) -> np.ndarray:
    """Basin labels by the rule the grain had before: the widest centroid-dendrogram gap, kept at a 1.35x jump."""
    from scipy.cluster.hierarchy import fcluster, linkage

    subs = [int(s) for s in np.unique(sub_labels) if s >= 0]
    if len(subs) < 3:
        return sub_labels
    centroids = np.stack([vectors[sub_labels == s].mean(axis=0) for s in subs])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    tree = linkage(centroids, method="average", metric="cosine")
    heights = tree[:, 2]
    widest = int(np.argmax(np.diff(heights)))
    if heights[widest] <= 0 or heights[widest + 1] / heights[widest] < 1.35:
        return sub_labels
    cut = fcluster(tree, len(subs) - (widest + 1), criterion="maxclust")
    parents = dict(zip(subs, cut.tolist(), strict=True))
    return np.array([parents.get(int(s), -1) for s in sub_labels])


def bertopic_default(texts: list[str], vectors: np.ndarray) -> tuple[np.ndarray, str]:
    """Topic per text from BERTopic's default clustering on these vectors (and which implementation ran)."""
    from umap import UMAP

    reducer = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", low_memory=False, random_state=0)
    try:
        from bertopic import BERTopic
    except ImportError:
        import hdbscan

        reduced = reducer.fit_transform(vectors)
        clusterer = hdbscan.HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom")
        return clusterer.fit(reduced).labels_.astype(int), "UMAP + HDBSCAN with BERTopic's defaults"
    topics, _ = BERTopic(umap_model=reducer).fit_transform(texts, embeddings=vectors)
    return np.asarray(topics, dtype=int), "BERTopic"


def grain_figures(worlds: list[Any], labels: list[np.ndarray]) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from worlds import false_merge, split

    pairs = list(zip(worlds, labels, strict=True))
    rand = np.array([adjusted_rand_score(w.persona, lab) for w, lab in pairs if w.kind == "structured"])
    merges = [false_merge(w.persona, lab) for w, lab in pairs if w.kind == "unrelated"]
    splits = [split(lab) for w, lab in pairs if w.kind == "single"]
    merged_structured = [false_merge(w.persona, lab) for w, lab in pairs if w.kind == "structured"]
    return {
        "structured_worlds": len(rand),
        "ari_median": round(float(np.median(rand)), 3),
        "ari_p10": round(float(np.quantile(rand, 0.1)), 3),
        "ari_p25": round(float(np.quantile(rand, 0.25)), 3),
        "ari_min": round(float(rand.min()), 3),
        "null_unrelated_worlds": len(merges),
        "false_merge_rate": round(float(np.mean(merges)), 3),
        "null_single_worlds": len(splits),
        "split_rate": round(float(np.mean(splits)), 3),
        "structured_false_merge_rate": round(float(np.mean(merged_structured)), 3),
    }


def grain_benchmark(n_worlds: int, seed: int) -> None:
    from persona_space.basins._grain import CRITERION, merge_sub_basins
    from worlds import make_worlds

    worlds = make_worlds(n_worlds, seed=seed)
    embedder = Embedder()
    _ = embedder.module
    results: dict[str, Any] = {"machine": machine(embedder.resolved_dtype), "worlds": n_worlds, "seed": seed}
    print(f"{n_worlds} worlds from seed {seed}: {sum(len(w.texts) for w in worlds)} texts")
    ps.BasinMap(embedder=embedder, seed=0).fit(worlds[0].texts)  # numba compilation out of the timings
    found: dict[str, list[np.ndarray]] = {"library": [], "previous rule": [], "sub-basins": [], "BERTopic default": []}
    grain_s, sizes, baseline = [], [], ""
    for i, world in enumerate(worlds):
        vectors = embedder.embed(world.texts)
        fitted = ps.BasinMap(embedder=embedder, seed=0).fit(world.texts, vectors=vectors)
        subs = fitted.frame_["sub_basin"].to_numpy()
        start = time.perf_counter()
        merge_sub_basins(fitted.fit_vectors_, fitted.fit_sub_labels_, "auto")
        grain_s.append(time.perf_counter() - start)
        sizes.append(len(world.texts))
        found["library"].append(fitted.labels_)
        found["previous rule"].append(previous_rule(vectors, subs))
        found["sub-basins"].append(subs)
        topics, baseline = bertopic_default(world.texts, vectors)
        found["BERTopic default"].append(topics)
        if (i + 1) % 20 == 0:
            print(f"  {i + 1} worlds fitted", flush=True)
    results["criterion"] = CRITERION
    results["baseline"] = baseline
    print(f"{'':18} {'ARI median':>10} {'ARI p10':>8} {'false merges':>13} {'splits':>7}")
    for name, labels in found.items():
        figures = grain_figures(worlds, labels)
        results[name] = figures
        print(
            f"{name:18} {figures['ari_median']:10.3f} {figures['ari_p10']:8.3f} "
            f"{figures['false_merge_rate']:12.1%} {figures['split_rate']:7.1%}"
        )
    big = [s for s, n in zip(grain_s, sizes, strict=True) if n >= 800]
    results["grain_s_mean"] = round(float(np.mean(grain_s)), 3)
    results["grain_s_max"] = round(float(np.max(grain_s)), 3)
    results["grain_s_800_texts_or_more"] = round(float(np.mean(big)), 3) if big else None
    print(f"BERTopic default: {baseline}; the grain takes {np.mean(grain_s):.2f} s a fit (max {np.max(grain_s):.2f} s)")
    out = RESULTS / "grain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--assign", type=int, default=2_000)
    parser.add_argument("--grain", action="store_true", help="the grain on generated planted worlds")
    parser.add_argument("--worlds", type=int, default=240)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    if args.grain:
        grain_benchmark(args.worlds, args.seed)
        return

    frame = sampled_texts(args.n + args.assign)
    fit_frame, new_frame = frame.iloc[: args.n].reset_index(drop=True), frame.iloc[args.n :].reset_index(drop=True)
    texts = fit_frame["text"].tolist()
    print(f"{len(texts)} texts to map ({len(set(texts))} distinct), {len(new_frame)} to assign")
    scratch = Path(tempfile.mkdtemp(prefix="ps-bench-basins-"))
    results: dict[str, object] = {"texts": len(texts), "distinct": len(set(texts))}
    try:
        warm = Embedder(cache=scratch / "warm")
        ps.BasinMap(embedder=warm, seed=0).fit(texts[:300])  # numba compilation out of the timings

        embedder = Embedder(cache=scratch / "cache")
        _ = embedder.module  # loading the model is not part of either pipeline's timing
        results["machine"] = machine(embedder.resolved_dtype)
        _, embed_s = timed(lambda: embedder.embed(texts))
        fitted, remap = timed(lambda: ps.BasinMap(embedder=embedder, seed=0).fit(fit_frame))
        lib = embed_s + remap
        exact = Embedder(cache=False, dtype="float32")
        _ = exact.module
        _, embed32_s = timed(lambda: exact.embed(texts))
        results.update(
            embed_dtype=embedder.resolved_dtype,
            library_embed_s=round(embed_s, 2),
            library_embed_float32_s=round(embed32_s, 2),
            library_fit_name_s=round(remap, 2),
            library_embed_fit_name_s=round(lib, 2),
        )
        print(f"BasinMap embed ({embedder.resolved_dtype})       {embed_s:7.2f} s   (float32: {embed32_s:.2f} s)")
        print(f"BasinMap fit + name           {remap:7.2f} s   ({fitted!r})")
        print(f"BasinMap embed+fit+name       {lib:7.2f} s")

        bert = None
        try:
            from bertopic import BERTopic
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(embedded_embedder_folder()), device="cpu")
            vectors, bert_embed = timed(lambda: st.encode(texts))
            _, bert_fit = timed(lambda: BERTopic(embedding_model=st).fit_transform(texts, vectors))
            bert = bert_embed + bert_fit
            results.update(bertopic_embed_s=round(bert_embed, 2), bertopic_fit_s=round(bert_fit, 2))
            results.update(bertopic_default_s=round(bert, 2), ratio_vs_bertopic=round(lib / bert, 3))
            print(f"BERTopic embed (float32)      {bert_embed:7.2f} s")
            print(f"BERTopic UMAP+HDBSCAN+c-TF-IDF {bert_fit:6.2f} s")
            print(f"BERTopic default pipeline     {bert:7.2f} s   ratio {lib / bert:.2f}x (target <= 0.5x)")
        except ImportError:
            results["bertopic_default_s"] = None
            print("BERTopic is not installed here: no baseline for (2)")

        results["remap_from_cache_s"] = round(remap, 2)
        results["remap_ratio_vs_library"] = round(remap / lib, 3)
        if bert is not None:
            results["remap_ratio_vs_bertopic"] = round(remap / bert, 3)
            print(f"re-map from the cache         {remap:7.2f} s   ratio {remap / bert:.2f}x BERTopic (target <= 0.2x)")
        refit = ps.BasinMap(embedder=Embedder(cache=scratch / "cache"), seed=0).fit(fit_frame)
        np.testing.assert_array_equal(refit.labels_, fitted.labels_)  # re-mapping is deterministic

        fitted.save(scratch / "map")
        loaded, load_s = timed(lambda: ps.BasinMap.load(scratch / "map"))
        _, occ_s = timed(lambda: loaded.occupancy(by="adapter"))
        results["load_saved_map_s"] = round(load_s, 3)
        results["occupancy_after_load_s"] = round(occ_s, 3)
        print(f"load a saved map              {load_s:7.3f} s   (+ occupancy {occ_s:.3f} s)")

        new_texts = new_frame["text"].tolist()
        _, assign_cold = timed(lambda: fitted.assign(new_texts))
        _, assign_warm = timed(lambda: fitted.assign(new_texts))
        results["assign_new_s_embedding_included"] = round(assign_cold, 3)
        results["assign_new_s_cached_embeddings"] = round(assign_warm, 3)
        print(
            f"assign {len(new_texts)} new samples     {assign_cold:7.3f} s with embedding, {assign_warm:.3f} s cached"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = RESULTS / "basins.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
