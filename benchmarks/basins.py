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
from _machine import machine
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
