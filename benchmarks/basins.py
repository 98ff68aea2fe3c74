"""Basin-map speed on sampled self-descriptions: ``BasinMap`` beside BERTopic's default pipeline.

Texts: ``--n`` self-descriptions sampled once from the embedded model (the 75
identity probes and paraphrases, temperatures 0.7 and 1.0, 48 new tokens) and kept
in ``benchmarks/results/texts-N.parquet`` (git-ignored) for later runs.

Measured in the same run, after a warm-up that compiles UMAP's numba kernels for both:
  (1) embed + fit + name with ``BasinMap`` (empty embedding cache);
  (2) BERTopic's default pipeline on the same texts (same MiniLM model, its default
      UMAP/HDBSCAN/c-TF-IDF), if BERTopic is installed; otherwise say so;
  (3) re-mapping from the embedding cache (a new ``BasinMap.fit``), and loading a saved map;
  (4) assigning 2,000 new samples to the map (embeddings cached, and not cached).

    python benchmarks/basins.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import persona_space as ps
from persona_space.embedding import Embedder, embedded_embedder_folder

RESULTS = Path("benchmarks/results")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--assign", type=int, default=2_000)
    args = parser.parse_args()

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
        fitted, lib = timed(lambda: ps.BasinMap(embedder=embedder, seed=0).fit(fit_frame))
        results["library_embed_fit_name_s"] = round(lib, 2)
        print(f"BasinMap embed+fit+name       {lib:7.2f} s   ({fitted!r})")

        try:
            from bertopic import BERTopic
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(embedded_embedder_folder()), device="cpu")
            _, bert = timed(lambda: BERTopic(embedding_model=st).fit_transform(texts))
            results["bertopic_default_s"] = round(bert, 2)
            results["ratio_vs_bertopic"] = round(lib / bert, 3)
            print(f"BERTopic default pipeline     {bert:7.2f} s   ratio {lib / bert:.2f}x (target <= 0.5x)")
        except ImportError:
            results["bertopic_default_s"] = None
            print("BERTopic is not installed here: no baseline for (2)")

        refit, remap = timed(lambda: ps.BasinMap(embedder=Embedder(cache=scratch / "cache"), seed=0).fit(fit_frame))
        results["remap_from_cache_s"] = round(remap, 2)
        results["remap_ratio"] = round(remap / lib, 3)
        print(f"re-map from the cache         {remap:7.2f} s   ratio {remap / lib:.2f}x (target <= 0.2x)")
        np.testing.assert_array_equal(refit.labels_, fitted.labels_)

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
