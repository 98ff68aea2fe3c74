"""Reading activations: the ``cpu`` slot engine's prefill against the model's own forward pass (``hf``).

Workload: the first 64 records of the bundled Voyager dataset, each answer's mean
residual stream per layer (``where="response"``), 8 chats a batch, in the dtype
``load_model`` picks, under the base model alone and under base and a steering at the
middle layer mixed in one call. ``hf`` (the model's own forward over right-padded
batches) is the baseline, measured in the same run; the ratio is ``cpu`` tokens/s over
``hf`` tokens/s. Also printed: how far the two readings are apart (max absolute
difference over every layer, relative to the largest activation).

    python benchmarks/activations.py [--records 64] [--out benchmarks/results/activations.json]
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


def _read(model: ps.LoadedModel, data: Any, conditions: dict[str, Any], backend: str) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    acts = ps.activations.collect(model, data, adapters=conditions, backend=backend, progress=False)
    seconds = time.perf_counter() - started
    return float(acts.manifest["timings"]["tokens"]) / seconds, acts.means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/activations.json")
    args = parser.parse_args()
    model = ps.load_model()
    described = machine(model.dtype)
    data = ps.datasets.load("voyager")
    data = ps.datasets.ChatDataset.from_records("voyager", data.records[: args.records])
    hidden, layers = int(model.config.hidden_size), int(model.config.num_hidden_layers)
    vector = np.random.default_rng(0).standard_normal(hidden).astype(np.float32)
    steer = ps.Steer(vector / np.linalg.norm(vector), alpha=4.0, layer=layers // 2)
    result: dict[str, Any] = {"machine": described, "workload": {"records": len(data.records), "batch": 8}}
    _read(model, ps.datasets.ChatDataset.from_records("warm", data.records[:2]), {"base": None}, "cpu")  # warm-up
    for label, conditions in (("base", {"base": None}), ("base + steering mixed", {"base": None, "away": steer})):
        hf_rate, hf_means = _read(model, data, conditions, "hf")
        cpu_rate, cpu_means = _read(model, data, conditions, "cpu")
        apart = float(np.abs(cpu_means - hf_means).max() / np.abs(hf_means).max())
        result[label] = {"hf_tokens_per_s": round(hf_rate, 1), "cpu_tokens_per_s": round(cpu_rate, 1),
                         "ratio_cpu_to_hf": round(cpu_rate / hf_rate, 3), "max_relative_difference": apart}  # fmt: skip
        print(f"{label:<22} hf {hf_rate:8.1f} tok/s   cpu {cpu_rate:8.1f} tok/s   {cpu_rate / hf_rate:5.2f}x hf   "
              f"readings apart by {apart:.1e} of the largest")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
