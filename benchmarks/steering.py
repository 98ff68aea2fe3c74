"""What steering costs: sampling a steered condition against the base model, on the embedded model.

Workload: the 15 identity probes x 4 samples, exactly 48 new tokens each (end of turn
ignored), temperature 1, through ``backend="cpu"`` (its row-invariant pass) and
``backend="hf"``, in the dtype ``load_model`` picks. Each backend samples, in the same
run: the base model alone (the baseline), a steering along a random unit direction at the
middle layer alone (add, then cap), and base and steering mixed in one call. The ratio is
steered tokens/s over base tokens/s (target: at least 0.9x on ``cpu``; a steering is one
vector operation on the rows it steers, after one layer).

    python benchmarks/steering.py [--quick] [--out benchmarks/results/steering.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import persona_space as ps
from _machine import machine


def _rate(model: ps.LoadedModel, conditions: dict[str, Any], backend: str, n: int, tokens: int) -> float:
    started = time.perf_counter()
    samples = ps.sample(model, ps.probes.IDENTITY, adapters=conditions, n=n, temperatures=[1.0],
                        max_new_tokens=tokens, ignore_eos=True, backend=backend, progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    return float(samples.df["n_tokens"].sum()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 samples a probe, cpu only")
    parser.add_argument("--out", default="benchmarks/results/steering.json")
    args = parser.parse_args()
    model = ps.load_model()
    described = machine(model.dtype)
    hidden, layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    vector = np.random.default_rng(0).standard_normal(hidden).astype(np.float32)
    vector /= np.linalg.norm(vector)
    add = ps.Steer(vector, alpha=4.0, layer=layers // 2)
    cap = ps.Steer(vector, mode="cap", cap=0.0, layer=layers // 2)
    n, tokens = (2, 32) if args.quick else (4, 48)
    result: dict[str, Any] = {"machine": described, "workload": {"probes": 15, "n": n, "new_tokens": tokens}}
    for backend in ("cpu",) if args.quick else ("cpu", "hf"):
        _rate(model, {"base": None}, backend, 1, 4)  # warm-up
        base = _rate(model, {"base": None}, backend, n, tokens)
        rows = {"base alone": base}
        rows["add alone"] = _rate(model, {"away": add}, backend, n, tokens)
        rows["cap alone"] = _rate(model, {"held": cap}, backend, n, tokens)
        rows["base + add mixed"] = _rate(model, {"base": None, "away": add}, backend, n, tokens)
        result[backend] = {k: {"tokens_per_s": round(v, 1), "ratio_to_base": round(v / base, 3)}
                           for k, v in rows.items()}  # fmt: skip
        for name, value in rows.items():
            print(f"{backend:>4} {name:<18} {value:8.1f} tok/s  {value / base:5.2f}x base")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
