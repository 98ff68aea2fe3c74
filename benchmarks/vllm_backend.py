"""The ``vllm`` backend against the ``cpu`` backend, on the embedded model, in one process.

Run in the environment of ``make vllm-env`` (vLLM's CPU build, or vLLM on a GPU):

    .venv-vllm/bin/python benchmarks/vllm_backend.py [--dtype float32|bfloat16] [--quick]

Workloads (as ``benchmarks/sampling.py``): 64 distinct identity prompts x 64 new
tokens, temperature 1, end-of-turn ignored; then base plus two rank-16 all-linear
LoRAs mixed in one run against base alone. Printed beside each other: the two
backends' tokens/s, the engine's start-up time, and the largest difference of
vLLM's prompt log-probabilities from the ``hf`` scorer (float32 only; the scoring
check of the backend).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import persona_space as ps
from _machine import machine
from persona_space.engine import resolve_backend
from persona_space.probes import load as load_probes
from sampling import NEW_TOKENS, random_lora


def rate(model: ps.LoadedModel, probes: ps.probes.ProbeSet, adapters: dict[str, str | None], backend: str) -> float:
    start = time.perf_counter()
    samples = ps.sample(
        model, probes, adapters=adapters, n=1, temperatures=[1.0], max_new_tokens=NEW_TOKENS, ignore_eos=True,
        seed=0, progress=False, backend=backend,
    )  # fmt: skip
    return int(samples.df["n_tokens"].sum()) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from persona_space.engine._vllm import import_vllm, release

    version = str(getattr(import_vllm(), "__version__", "unknown"))

    model = ps.load_model(dtype=args.dtype)
    described = machine(model.dtype)
    print(f"vllm {version}, model {model.name}, dtype {model.dtype}")
    probes = ps.probes.ProbeSet("bench", load_probes("identity+paraphrases").probes[:64])
    repeats = 1 if args.quick else 3
    start = time.perf_counter()
    rate(model, ps.probes.ProbeSet("warm", probes.probes[:2]), {"base": None}, "vllm")  # starts the engine
    startup = time.perf_counter() - start
    rate(model, ps.probes.ProbeSet("warm", probes.probes[:2]), {"base": None}, "cpu")
    threads = torch.get_num_threads()
    results: dict[str, object] = {
        "machine": described,
        "vllm": version,
        "dtype": args.dtype,
        "engine_start_s": round(startup, 1),
        "torch_threads_after_start": threads,
    }
    print(f"engine start (first call, model load included) {startup:.1f} s; torch threads after it: {threads}")
    with tempfile.TemporaryDirectory() as work:
        for name, seed in (("lora-a", 1), ("lora-b", 2)):
            model.load_adapter(random_lora(model, Path(work) / name, seed), name=name)
        mixed: dict[str, str | None] = {"base": None, "lora-a": "lora-a", "lora-b": "lora-b"}
        for backend in ("vllm", "cpu"):
            alone = statistics.median(rate(model, probes, {"base": None}, backend) for _ in range(repeats))
            both = statistics.median(rate(model, probes, mixed, backend) for _ in range(repeats))
            results[backend] = {"base_alone": round(alone, 1), "mixed": round(both, 1), "ratio": round(both / alone, 2)}
            print(
                f"  {backend:5s} base alone {alone:7.1f}  base + 2 LoRAs {both:7.1f} tokens/s  ratio {both / alone:.2f}"
            )
        v, c = results["vllm"], results["cpu"]
        assert isinstance(v, dict) and isinstance(c, dict)
        print(
            f"  vllm / cpu: base alone {v['base_alone'] / c['base_alone']:.2f}x, mixed {v['mixed'] / c['mixed']:.2f}x"
        )
        shift = ps.identity_shift(model, {"a": "lora-a"}, candidates=["Voyager 1", "Maria", "an AI assistant"],
                                  probes=list(probes.probes[:8]), backend=resolve_backend(model, "vllm"),
                                  progress=False)  # fmt: skip
        check = shift.manifest["backend"]["score_check"]
        results["score_check"] = check
        print(f"  scoring: {shift.manifest['backend']['scorer']} ({check['reason']})")
    release(model)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
