"""What the Ray backend costs on one machine, and what N machines would give.

Workload: the embedded SmolLM2 samples 32 identity prompts x 4 samples x 32 new
tokens (end-of-turn ignored, so every run makes the same tokens), in the dtype
``load_model`` picks. Measured in the same run:

* in-process: ``backend="cpu"`` with all of this machine's threads (the baseline);
* Ray on a local instance: 1 worker holding every CPU with one shard, 2 workers
  with half each and one shard per worker, and 2 workers with shards of 16 (the
  cost of fine shards: each is a small batch); for each the first call (actors
  start and load the model) and the steady state (a second call on warm
  actors), as tokens per second and as a ratio to the in-process figure, and
  the share of rows equal to the in-process table (in bfloat16 a different batch
  shape moves some logits by a rounding step, which can change a sampled token;
  in float32 the tests find every row equal).

Then the arithmetic for N machines: with shards that each machine runs at its
in-process rate times the measured steady-state Ray efficiency, N machines give
N times that (shards are independent), plus one actor start per worker. The
cost of a million samples follows from the rate. Figures on a GPU are not
measured here (this benchmark runs where it is started).

    python benchmarks/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

import persona_space as ps
from _machine import machine
from persona_space.engine import RayBackend
from persona_space.probes import load as load_probes

NEW_TOKENS = 32


def run(model: ps.LoadedModel, probes: ps.probes.ProbeSet, n: int, backend: Any) -> tuple[float, float, Any]:
    """(tokens per second, seconds, table) of one ``ps.sample`` call."""
    start = time.perf_counter()
    samples = ps.sample(
        model, probes, n=n, max_new_tokens=NEW_TOKENS, ignore_eos=True, progress=False, backend=backend, seed=1
    )
    seconds = time.perf_counter() - start
    return float(samples.df["n_tokens"].sum()) / seconds, seconds, samples.df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 prompts x 2 samples")
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args()
    import ray

    model = ps.load_model()
    described = machine(model.dtype)
    cpus = os.cpu_count() or 1
    probes = ps.probes.ProbeSet("scale", load_probes("identity+paraphrases").probes[: 16 if args.quick else 32])
    n = 2 if args.quick else 4
    tokens = len(probes) * n * NEW_TOKENS
    print(f"workload: {len(probes)} prompts x {n} samples x {NEW_TOKENS} tokens = {tokens} tokens; {cpus} CPUs")

    run(model, ps.probes.ProbeSet("warmup", probes.probes[:2]), 1, "cpu")
    local_rate, local_s, reference = run(model, probes, n, "cpu")
    print(f"  in-process cpu backend      {local_rate:8.1f} tokens/s  ({local_s:.1f} s)")

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    results: dict[str, Any] = {
        "machine": described,
        "workload": {"prompts": len(probes), "samples": n, "new_tokens": NEW_TOKENS, "tokens": tokens},
        "in_process_tokens_per_s": round(local_rate, 1),
        "ray": {},
    }
    try:
        total = len(probes) * n
        for workers, shard in ((1, total), (2, -(-total // 2)), (2, 16)):
            backend = RayBackend(model, workers=workers, cpus_per_worker=cpus / workers, shard_size=shard)
            start = time.perf_counter()
            backend.start()
            ray.get([actor.pid.remote() for actor in backend.actors])  # actors up and holding the model
            startup = time.perf_counter() - start
            first_rate, _, _ = run(model, probes, n, backend)
            steady_rate, _, table = run(model, probes, n, backend)
            same = float((table["text"] == reference["text"]).mean())
            key = f"{workers}x{shard}"
            results["ray"][key] = {
                "workers": workers,
                "shard_size": shard,
                "startup_s": round(startup, 1),
                "first_call_tokens_per_s": round(first_rate, 1),
                "steady_tokens_per_s": round(steady_rate, 1),
                "steady_ratio_vs_in_process": round(steady_rate / local_rate, 3),
                "rows_equal_in_process": round(same, 3),
            }
            print(
                f"  ray, {workers} worker(s) x {cpus / workers:g} CPU, shards of {shard:3d}: startup {startup:4.1f} s, "
                f"first call {first_rate:6.1f} tokens/s, steady {steady_rate:6.1f} tokens/s = "
                f"{steady_rate / local_rate:.2f}x in-process; {same:.0%} of rows equal"
            )
            backend.shutdown()
    finally:
        ray.shutdown()

    efficiency = max(v["steady_ratio_vs_in_process"] for v in results["ray"].values() if v["shard_size"] > 16)
    startup = max(v["startup_s"] for v in results["ray"].values())
    per_sample = NEW_TOKENS
    print(f"\nN machines like this one (steady Ray efficiency {efficiency:.2f}, actor start {startup:.0f} s):")
    projection = []
    for machines in (1, 4, 16, 64):
        rate = machines * local_rate * efficiency
        hours = (1_000_000 * per_sample / rate + startup) / 3600
        projection.append({"machines": machines, "tokens_per_s": round(rate, 1), "hours_per_million_samples": hours})
        print(
            f"  {machines:3d} machine(s): {rate:9.0f} tokens/s; a million {per_sample}-token samples in {hours:7.1f} h"
        )
    results["projection"] = projection
    results["projection_note"] = (
        "N x in-process rate x measured Ray efficiency; assumes shards never wait on the driver, which holds "
        "while a shard takes far longer than its round trip (here shards of 16 samples take seconds)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {out}; torch threads in the driver: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
