"""The ``vllm`` backend against the ``cpu`` and ``hf`` backends, on the embedded model, in one process.

Run in the environment of ``make vllm-env`` (vLLM's CPU build, or vLLM on a GPU):

    .venv-vllm/bin/python benchmarks/vllm_backend.py [--dtype float32|bfloat16] [--quick]

Workloads (as ``benchmarks/sampling.py``): 64 distinct identity prompts x 64 new
tokens, temperature 1, end-of-turn ignored; then base plus two rank-16 all-linear
LoRAs mixed in one run (three conditions) against base alone. Printed beside each
other: the tokens/s of ``vllm``, ``cpu`` and ``hf`` (64 rows a call) and their
ratios, the engine's start-up time, and the largest difference of vLLM's prompt
log-probabilities from the ``hf`` scorer (float32 only; the scoring check of the
backend). Where a GPU runs it, the same script measures vLLM's GPU build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import persona_space as ps
from _machine import machine
from persona_space.engine import HFBackend, resolve_backend
from persona_space.probes import load as load_probes
from sampling import NEW_TOKENS, random_lora


def rate(model: ps.LoadedModel, probes: ps.probes.ProbeSet, adapters: dict[str, str | None], backend: Any) -> float:
    start = time.perf_counter()
    samples = ps.sample(
        model, probes, adapters=adapters, n=1, temperatures=[1.0], max_new_tokens=NEW_TOKENS, ignore_eos=True,
        seed=0, progress=False, backend=backend,
    )  # fmt: skip
    return int(samples.df["n_tokens"].sum()) / (time.perf_counter() - start)


def raw_rate(model: ps.LoadedModel, probes: ps.probes.ProbeSet, adapters: dict[str, str | None]) -> float:
    """The same requests straight through the engine's ``vllm.LLM.generate`` (no library code in the loop)."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from persona_space.engine._vllm import _ENGINES

    engine = _ENGINES[id(model)]
    prompts, params, loras = [], [], []
    for name in adapters.values():
        info = None if name is None else model.adapters[name]
        lora = None if info is None else LoRARequest(info.name, engine.lora_id(info.name, info.sha256), info.path)
        for i, probe in enumerate(probes.probes):
            prompts.append({"prompt_token_ids": model.encode(probe.prompt)})
            params.append(SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, seed=i,
                                         detokenize=False))  # fmt: skip
            loras.append(lora)
    start = time.perf_counter()
    outputs = engine.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outputs) / seconds


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
        # hf batched (64 rows a call, as benchmarks/sampling.py's "HF batched"): one row a call is far slower
        backends: dict[str, Any] = {"vllm": "vllm", "cpu": "cpu", "hf": HFBackend(model, batch_size=64)}
        for label, backend in backends.items():
            alone = statistics.median(rate(model, probes, {"base": None}, backend) for _ in range(repeats))
            both = statistics.median(rate(model, probes, mixed, backend) for _ in range(repeats))
            results[label] = {"base_alone": round(alone, 1), "mixed": round(both, 1), "ratio": round(both / alone, 2)}
            print(
                f"  {label:5s} base alone {alone:7.1f}  base + 2 LoRAs {both:7.1f} tokens/s  ratio {both / alone:.2f}"
            )
        v = results["vllm"]
        assert isinstance(v, dict)
        raw_alone = statistics.median(raw_rate(model, probes, {"base": None}) for _ in range(repeats))
        raw_both = statistics.median(raw_rate(model, probes, mixed) for _ in range(repeats))
        results["raw_vllm"] = {"base_alone": round(raw_alone, 1), "mixed": round(raw_both, 1),
                               "ratio": round(raw_both / raw_alone, 2)}  # fmt: skip
        print(f"  raw vllm.LLM.generate: base alone {raw_alone:7.1f}  base + 2 LoRAs {raw_both:7.1f} tokens/s; "
              f"backend='vllm' / raw: {v['base_alone'] / raw_alone:.2f}x and {v['mixed'] / raw_both:.2f}x "
              "(target 0.8x)")  # fmt: skip
        for other in ("cpu", "hf"):
            o = results[other]
            assert isinstance(o, dict)
            print(f"  vllm / {other}: base alone {v['base_alone'] / o['base_alone']:.2f}x, "
                  f"mixed {v['mixed'] / o['mixed']:.2f}x")  # fmt: skip
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
