"""Sampling throughput of ``ps.sample`` against plain transformers, on the embedded model.

Workload: 64 distinct identity prompts (the identity probes and their
paraphrases), one sample each, exactly 64 new tokens per sample (end-of-turn
ignored so that every method produces the same number of tokens), temperature
1.0, in the dtype ``load_model`` picks (bfloat16 on CPUs with AVX-512 BF16).

Measured: ``backend="cpu"`` (the default where it supports the model; its
row-invariant path, with the earlier path beside it where adapters are mixed) and
``backend="hf"`` (plain transformers with per-sample random streams), against
baselines measured in the same run, on the same weights and dtype:
  (a) naive: ``model.generate`` one prompt at a time (on the first 8 prompts; a rate);
  (b) batched: one ``model.generate`` call over all 64 left-padded prompts.

A second, research-shaped workload (16 probes x 16 samples, the way ``sample`` is
used) shows the effect of computing each shared prompt once, and the share of the
matmul rate at the default batch of 128 rows (64 distinct prompts fill only 64 rows,
where a step is bound by reading the weights from memory). A third samples base
plus two rank-16 all-linear LoRAs against base alone (the target: at least 0.8x),
on each path, with whether it is batch-invariant.

Also measured: the machine's matrix-product rate in the model dtype, and the
share of it that sampling reaches, two ways: counting the generated tokens only
(2 x parameters FLOP each), and counting every token the model computes (the
prompts as well: each distinct prompt once, the shared system turn once, 2 x the
parameters outside the vocabulary head each), which is the products' utilisation.
And the floor under a decode step: the model's linear products alone at the
batch's rows, weights streaming from memory in layer order (a square matmul
keeps its operands in cache, a decode step reads every weight once from
memory), whose share of the matmul rate is the ceiling of the shares above.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/sampling.py     # torch's AVX2 kernels on an AVX-512 CPU (float32)

    python benchmarks/sampling.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

import persona_space as ps
from _machine import machine
from persona_space.engine import common_prefix_length, native_state
from persona_space.probes import load as load_probes

NEW_TOKENS = 64


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of a large square matrix product in ``dtype``."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def products_step(model: ps.LoadedModel, rows: int = 64, repeats: int = 10) -> float:
    """Seconds for the linear products of one decode step alone, the floor under a step.

    Every projection of every layer and the vocabulary head at ``rows`` rows, in
    layer order, so the weights stream from memory as in a real step (a square
    matmul reuses its operands from cache). Weights are prepacked the way the cpu
    engine packs them where this torch build can; the best of ``repeats`` steps.
    """
    weights = [
        m.weight.detach()
        for m in model.base_module.modules()
        if isinstance(m, torch.nn.Linear) and m.weight.dtype == model.dtype
    ]

    def packed(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            p = torch.ops.mkldnn._reorder_linear_weight(w, 128)
            return lambda x: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
        except (RuntimeError, AttributeError):
            return lambda x: torch.nn.functional.linear(x, w)

    products = [(packed(w), torch.randn(rows, w.shape[1], dtype=model.dtype)) for w in weights]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for product, x in products:
                product(x)
            best = min(best, time.perf_counter() - start)
    return best


def hf_generate(model: ps.LoadedModel, prompts: list[list[int]]) -> int:
    """One plain ``generate`` call over left-padded ``prompts``; returns the new tokens made."""
    pad = model.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.base_module.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            pad_token_id=pad,
        )
    return int(out.shape[1] - width) * len(prompts)


def naive_rate(model: ps.LoadedModel, prompts: list[list[int]]) -> float:
    """(a) one prompt at a time."""
    start = time.perf_counter()
    tokens = sum(hf_generate(model, [ids]) for ids in prompts)
    return tokens / (time.perf_counter() - start)


def batched_rate(model: ps.LoadedModel, prompts: list[list[int]]) -> float:
    """(b) every prompt in one batched call."""
    start = time.perf_counter()
    tokens = hf_generate(model, prompts)
    return tokens / (time.perf_counter() - start)


def library_rate(
    model: ps.LoadedModel,
    probes: ps.probes.ProbeSet,
    n: int,
    seed: int = 0,
    backend: str = "cpu",
    batch: int | Literal["auto"] = "auto",
) -> tuple[float, int]:
    """Tokens per second of ``ps.sample`` on ``backend``; also the batch size it used."""
    start = time.perf_counter()
    samples = ps.sample(
        model,
        probes,
        n=n,
        temperatures=[1.0],
        max_new_tokens=NEW_TOKENS,
        ignore_eos=True,
        seed=seed,
        progress=False,
        backend=backend,
        batch_size=batch,
    )
    elapsed = time.perf_counter() - start
    tokens = int(samples.df["n_tokens"].sum())
    return tokens / elapsed, min(int(samples.manifest["backend"]["batch_size"]), len(samples))


def random_lora(model: ps.LoadedModel, folder: Path, seed: int, rank: int = 16) -> Path:
    """A random rank-``rank`` LoRA on every linear layer (non-zero B, so it changes the texts), saved to ``folder``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model.source, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    peft_model.save_pretrained(str(folder))
    return folder


def adapter_rows(
    model: ps.LoadedModel, probes: ps.probes.ProbeSet, repeats: int, base_rate: float
) -> dict[str, object]:
    """Base plus two rank-16 all-linear LoRAs against base alone, 64 prompts x 64 tokens each condition.

    On the ``cpu`` backend's row-invariant path (the default) and its earlier path
    (PEFT's LoRA layers, products on whole batches), and on ``hf`` (one row per call,
    the invariant default, on 8 prompts; and 64 rows per call). ``base_rate`` is base
    alone on the default path, measured before the adapters were attached.
    """
    import tempfile

    from persona_space.engine import CPUBackend, HFBackend

    with tempfile.TemporaryDirectory() as work:
        for name, seed in (("lora-a", 1), ("lora-b", 2)):
            model.load_adapter(random_lora(model, Path(work) / name, seed), name=name)
        mixed = {"base": None, "lora-a": "lora-a", "lora-b": "lora-b"}

        def rate(adapters: dict[str, str | None], backend: object, prompts: ps.probes.ProbeSet, seed: int) -> float:
            start = time.perf_counter()
            samples = ps.sample(
                model, prompts, adapters=adapters, n=1, temperatures=[1.0], max_new_tokens=NEW_TOKENS,
                ignore_eos=True, seed=seed, progress=False, backend=backend,  # type: ignore[arg-type]
            )  # fmt: skip
            return int(samples.df["n_tokens"].sum()) / (time.perf_counter() - start)

        few = ps.probes.ProbeSet("bench8", probes.probes[:8])
        paths: dict[str, tuple[Callable[[], object], ps.probes.ProbeSet]] = {
            "cpu (row-invariant, default)": (lambda: CPUBackend(model), probes),
            "cpu (earlier path)": (lambda: CPUBackend(model, invariant=False), probes),
            "hf (1 row per call, default; 8 prompts)": (lambda: HFBackend(model), few),
            "hf (64 rows per call)": (lambda: HFBackend(model, batch_size=64), probes),
        }
        rows: dict[str, object] = {}
        print(f"\nbase + two rank-16 all-linear LoRAs vs base alone, {len(probes)} prompts x {NEW_TOKENS} tokens each")
        for label, (make, prompts) in paths.items():
            alone = statistics.median(rate({"base": None}, make(), prompts, i) for i in range(repeats))
            both = statistics.median(rate(mixed, make(), prompts, i) for i in range(repeats))
            invariant = make().capabilities.batch_invariant  # type: ignore[attr-defined]
            rows[label] = {"base_alone": round(alone, 1), "mixed": round(both, 1), "ratio": round(both / alone, 2),
                           "batch_invariant": invariant}  # fmt: skip
            print(
                f"  {label:40s} base alone {alone:7.1f}  mixed {both:7.1f} tokens/s  ratio {both / alone:4.2f}  "
                f"batch-invariant: {invariant}"
            )
        default, earlier = rows["cpu (row-invariant, default)"], rows["cpu (earlier path)"]
        assert isinstance(default, dict) and isinstance(earlier, dict)
        rows["cpu mixed vs base alone before the adapters were attached"] = round(default["mixed"] / base_rate, 2)
        rows["cost of invariance, base alone (invariant / earlier)"] = round(
            default["base_alone"] / earlier["base_alone"], 2
        )
        rows["cost of invariance, mixed (invariant / earlier)"] = round(default["mixed"] / earlier["mixed"], 2)
        for name in ("lora-a", "lora-b"):
            model.adapters.detach(name)
    return rows


def recorded(measured: tuple[float, int], sizes: list[int]) -> float:
    """The rate of a :func:`library_rate` result, its batch size appended to ``sizes``."""
    sizes.append(measured[1])
    return measured[0]


def median_of(repeats: int, measure: Callable[[int], float]) -> tuple[float, list[float]]:
    """Median of ``repeats`` measurements (this machine's timings vary by +-20 % run to run)."""
    values = [measure(i) for i in range(repeats)]
    return statistics.median(values), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, no naive baseline")
    parser.add_argument("--out", default="benchmarks/results/sampling.json")
    args = parser.parse_args()

    model = ps.load_model()
    params = sum(p.numel() for p in model.base_module.parameters())
    flop_per_token = 2 * params
    probes = ps.probes.ProbeSet("bench", load_probes("identity+paraphrases").probes[:64])
    prompts = [model.encode(p.prompt) for p in probes]
    head = model.base_module.get_output_embeddings().weight.numel()
    distinct = sorted(set(map(tuple, prompts)))
    prefix = common_prefix_length(distinct)
    prompt_flop = (prefix + sum(len(p) - prefix for p in distinct)) * 2 * (params - head)
    print(f"model {model.name}, {params / 1e6:.1f}M parameters, dtype {model.dtype}, threads {torch.get_num_threads()}")
    cpu_path = machine(model.dtype)
    kernels = native_state()
    print(f"native decode kernels: {'in use' if kernels['in_use'] else 'not used'} ({kernels['reason']})")

    library_rate(model, ps.probes.ProbeSet("warmup", probes.probes[:4]), 1)  # first-call costs out of the timing
    repeats = 1 if args.quick else 3
    sizes: list[int] = []
    lib, lib_all = median_of(repeats, lambda i: recorded(library_rate(model, probes, 1, seed=i), sizes))
    seconds = len(prompts) * NEW_TOKENS / lib  # the median run's time
    slots = sizes[-1]
    batched, batched_all = median_of(max(1, repeats - 1), lambda i: batched_rate(model, prompts))
    hf, hf_all = median_of(max(1, repeats - 1), lambda i: library_rate(model, probes, 1, i, "hf", len(prompts))[0])
    naive = None if args.quick else naive_rate(model, prompts[:8])
    peak, _ = median_of(3, lambda i: matmul_rate(model.dtype))
    all_tokens_share = (len(prompts) * NEW_TOKENS * flop_per_token + prompt_flop) / seconds / 1e9 / peak
    step = products_step(model, slots)
    products_share = slots * flop_per_token / step / 1e9 / peak

    results: dict[str, object] = {
        "dtype": str(model.dtype),
        "machine": cpu_path,
        "native_kernels": kernels,
        "repeats": repeats,
        "library_tokens_per_s": round(lib, 1),
        "library_runs": [round(v, 1) for v in lib_all],
        "batch_size": slots,
        "hf_batched_tokens_per_s": round(batched, 1),
        "hf_batched_runs": [round(v, 1) for v in batched_all],
        "hf_naive_tokens_per_s": None if naive is None else round(naive, 1),
        "ratio_vs_batched": round(lib / batched, 2),
        "hf_backend_tokens_per_s": round(hf, 1),
        "hf_backend_runs": [round(v, 1) for v in hf_all],
        "hf_backend_ratio_vs_batched": round(hf / batched, 2),
        "ratio_vs_naive": None if naive is None else round(lib / naive, 1),
        "matmul_gflops": round(peak, 1),
        "share_of_matmul_rate": round(lib * flop_per_token / 1e9 / peak, 3),
        "share_of_matmul_rate_all_tokens": round(all_tokens_share, 3),
        "products_alone_step_ms": round(step * 1e3, 1),
        "products_alone_share_of_matmul_rate": round(products_share, 3),
        "seconds_per_step": round(seconds / NEW_TOKENS, 4),
    }
    print(f"\n64 distinct prompts x {NEW_TOKENS} new tokens (median of {repeats})")
    print(f"  ps.sample            {lib:8.1f} tokens/s   (batch {slots})  runs {results['library_runs']}")
    print(f"  HF batched generate  {batched:8.1f} tokens/s   ratio {lib / batched:5.2f}x")
    print(f"  backend='hf'         {hf:8.1f} tokens/s   ratio {hf / batched:5.2f}x of HF batched generate")
    if naive is not None:
        print(f"  HF naive generate    {naive:8.1f} tokens/s   ratio {lib / naive:5.1f}x")
    share = lib * flop_per_token / 1e9 / peak
    print(f"  matmul rate {peak:.0f} GFLOP/s; sampling uses {all_tokens_share:.1%} of it counting every token")
    print(f"  the model computes ({share:.1%} counting the generated tokens only)")
    print(
        f"  the linear products alone, weights streaming from memory at {slots} rows: {step * 1e3:.1f} ms a step "
        f"({products_share:.1%} of the matmul rate, the ceiling of the share); sampling takes "
        f"{seconds / NEW_TOKENS * 1e3:.1f} ms a step, prompts included"
    )
    targets = {
        "cpu >= 2x HF batched generate": lib / batched >= 2.0,
        f"cpu >= 60% of the matmul rate at {slots} rows (64 sequences, every token computed)": all_tokens_share >= 0.6,
        "hf within 10% of HF batched generate": hf / batched >= 0.9,
    }
    results["targets"] = targets
    for target, met in targets.items():
        print(f"  target {target}: {'met' if met else 'NOT met'}")

    shared = ps.probes.ProbeSet("bench16", probes.probes[:16])
    shared_prompts = [prompts[i] for i in range(16) for _ in range(16)]
    sizes16: list[int] = []
    lib16, lib16_all = median_of(repeats, lambda i: recorded(library_rate(model, shared, 16, seed=i), sizes16))
    batched16, _ = median_of(1, lambda i: batched_rate(model, shared_prompts))
    slots16 = sizes16[-1]
    distinct16 = sorted(set(map(tuple, prompts[:16])))
    prefix16 = common_prefix_length(distinct16)
    prompt_flop16 = (prefix16 + sum(len(p) - prefix16 for p in distinct16)) * 2 * (params - head)
    seconds16 = len(shared_prompts) * NEW_TOKENS / lib16
    share16 = (len(shared_prompts) * NEW_TOKENS * flop_per_token + prompt_flop16) / seconds16 / 1e9 / peak
    step16 = products_step(model, slots16)
    products_share16 = slots16 * flop_per_token / step16 / 1e9 / peak
    results["shared_prompts_tokens_per_s"] = round(lib16, 1)
    results["shared_prompts_runs"] = [round(v, 1) for v in lib16_all]
    results["shared_prompts_batch_size"] = slots16
    results["shared_prompts_hf_batched_tokens_per_s"] = round(batched16, 1)
    results["shared_prompts_ratio_vs_batched"] = round(lib16 / batched16, 2)
    results["shared_prompts_ratio_vs_naive"] = None if naive is None else round(lib16 / naive, 1)
    results["shared_prompts_share_of_matmul_rate_all_tokens"] = round(share16, 3)
    results["shared_prompts_products_alone_share_of_matmul_rate"] = round(products_share16, 3)
    print(f"\n16 probes x 16 samples x {NEW_TOKENS} new tokens (256 sequences, median of {repeats})")
    print(f"  ps.sample            {lib16:8.1f} tokens/s   (batch {slots16})  runs {results['shared_prompts_runs']}")
    print(f"  HF batched generate  {batched16:8.1f} tokens/s   ratio {lib16 / batched16:5.2f}x (one call)")
    if naive is not None:
        print(f"  HF naive generate    {naive:8.1f} tokens/s   ratio {lib16 / naive:5.1f}x")
    print(
        f"  {share16:.1%} of the matmul rate counting every token; the linear products alone at {slots16} rows: "
        f"{products_share16:.1%}"
    )
    targets[f"cpu >= 60% of the matmul rate at {slots16} rows (256 sequences)"] = share16 >= 0.6
    print(f"  target {list(targets)[-1]}: {'met' if targets[list(targets)[-1]] else 'NOT met'}")

    adapters = adapter_rows(model, probes, repeats, lib)
    results["adapters"] = adapters
    default = adapters["cpu (row-invariant, default)"]
    hf_invariant = adapters["hf (1 row per call, default; 8 prompts)"]
    assert isinstance(default, dict) and isinstance(hf_invariant, dict)
    targets["cpu: base + two adapters >= 0.8x base alone"] = default["ratio"] >= 0.8
    targets["hf: base + two adapters >= 0.8x base alone"] = hf_invariant["ratio"] >= 0.8
    for target in list(targets)[-2:]:
        print(f"  target {target}: {'met' if targets[target] else 'NOT met'}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
