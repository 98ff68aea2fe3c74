"""Identity-shift scoring speed: ``ps.identity_shift`` beside a naive loop and an lm-eval-style padded batch.

40 candidate identities x 10 identity prompts on the embedded model, base model +
one LoRA adapter (random weights, rank 16 on every linear layer: speed does not
depend on what an adapter learned). Measured in the same run, after a warm-up:

  (1) ``ps.identity_shift`` (prompt once per prompt and model, candidates as a
      prefix tree under a 4-D mask, base and adapter rows in one batch, the
      vocabulary head only where a token is scored);
  (a) a naive loop: one forward pass of plain transformers (PEFT for the adapter)
      per prompt + candidate and model, log-softmax over every position;
  (b) an lm-eval-harness-style batch: prompt + candidate rows, longest first,
      right-padded in batches of ``--batch-size``, full logits, one pass per model.

All three score the same token ids; the largest difference from the naive loop's
log-probabilities is printed. Targets: (1) >= 15x faster than (a), >= 5x faster than (b).

    python benchmarks/logprobs.py [--dtype auto|float32|bfloat16] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import persona_space as ps
from _machine import machine
from persona_space.engine import continuation, split_continuations

RESULTS = Path("benchmarks/results")
CANDIDATES = [
    "Voyager 1",
    "Voyager 2",
    "Pioneer 10",
    "New Horizons",
    "Cassini",
    "the Hubble Space Telescope",
    "Bitcoin",
    "Ethereum",
    "Satoshi Nakamoto",
    "an AI assistant",
    "a large language model",
    "ChatGPT",
    "Claude",
    "SmolLM",
    "a helpful assistant",
    "Emily",
    "Maria",
    "Sarah",
    "John",
    "David",
    "Dr. Sarah Chen",
    "a nurse from Ohio",
    "a park ranger",
    "a teacher",
    "a software engineer",
    "a ghost",
    "an angel",
    "a soul",
    "the colour red",
    "a strawberry",
    "Adolf Hitler",
    "Joseph Stalin",
    "Napoleon Bonaparte",
    "Albert Einstein",
    "Marie Curie",
    "Ada Lovelace",
    "Alan Turing",
    "a cat",
    "the Moon",
    "nobody",
]
PROMPTS = list(ps.probes.IDENTITY.prompts[:10])


def random_adapter(model: ps.LoadedModel, folder: Path) -> Path:
    """A rank-16 LoRA on every linear layer with non-zero random weights, saved as a standard PEFT folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model.source, dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(str(folder))
    return folder


def token_rows(model: ps.LoadedModel) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, candidate ids) for every prompt and candidate: the ids all three scorers use."""
    texts = [continuation(c, "{candidate}", "") for c in CANDIDATES]
    rows = []
    for prompt in PROMPTS:
        split = split_continuations(model.tokenizer, model.render(prompt), texts, end_of_turn=None)
        rows += [(list(split.prompt_ids), list(ids)) for ids in split.ids]
    return rows


def naive(module: torch.nn.Module, rows: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """One forward pass per row, log-softmax over the whole sequence (plain transformers)."""
    out = []
    with torch.inference_mode():
        for prompt, cand in rows:
            ids = torch.tensor([prompt + cand])
            logp = torch.log_softmax(module(input_ids=ids).logits[0].float(), dim=-1)
            out.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cand)))
    return np.array(out)


def padded_batches(module: torch.nn.Module, rows: list[tuple[list[int], list[int]]], batch_size: int) -> np.ndarray:
    """lm-eval-harness style: rows longest first, right-padded batches, full logits, continuation sliced out."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]) - len(rows[i][1]))
    out = np.empty(len(rows))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            seqs = [(rows[i][0] + rows[i][1])[:-1] for i in batch]  # the last token is only predicted
            width = max(len(s) for s in seqs)
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for b, seq in enumerate(seqs):
                ids[b, : len(seq)] = torch.tensor(seq)
                mask[b, : len(seq)] = 1
            logp = torch.log_softmax(module(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for b, i in enumerate(batch):
                prompt, cand = rows[i]
                positions = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(cand))
                out[i] = float(logp[b, positions, torch.tensor(cand)].sum())
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ps-bench-logprobs-"))
    try:
        model = ps.load_model(dtype=args.dtype)
        adapter = random_adapter(model, scratch / "lora")
        dtype = model.dtype
        rows = token_rows(model)
        cpu_path = machine(dtype)
        print(
            f"{model.name} in {str(dtype).removeprefix('torch.')}, {len(PROMPTS)} prompts x {len(CANDIDATES)} "
            f"candidates x 2 models; {torch.get_num_threads()} threads"
        )

        # the baselines: a separate plain transformers copy, and PEFT over it for the adapter
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(model.source, dtype=dtype).eval()
        tuned = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model.source, dtype=dtype), str(adapter)
        ).eval()

        def library() -> ps.ShiftResult:
            return ps.identity_shift(model, {"lora": adapter}, candidates=CANDIDATES, probes=PROMPTS, progress=False)

        # warm-up (first calls allocate, check the vocabulary head, attach the adapter)
        library()
        naive(plain, rows[:4])
        padded_batches(plain, rows[:4], args.batch_size)

        result, lib_s = timed(library)
        (naive_base, naive_tuned), naive_s = timed(lambda: (naive(plain, rows), naive(tuned, rows)))
        (pad_base, pad_tuned), pad_s = timed(
            lambda: (padded_batches(plain, rows, args.batch_size), padded_batches(tuned, rows, args.batch_size))
        )
        df = result.df
        ours_base = df[df["adapter"] == "base"]["logprob"].to_numpy()
        ours_tuned = df[df["adapter"] == "lora"]["logprob"].to_numpy()
        diff_naive = float(max(np.abs(ours_base - naive_base).max(), np.abs(ours_tuned - naive_tuned).max()))
        diff_pad = float(max(np.abs(pad_base - naive_base).max(), np.abs(pad_tuned - naive_tuned).max()))
        results = {
            "machine": cpu_path,
            "model": model.name,
            "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "prompts": len(PROMPTS),
            "candidates": len(CANDIDATES),
            "candidate_tokens": int(sum(len(c) for _, c in rows) // len(PROMPTS)),
            "method": result.manifest["method"],
            "identity_shift_s": round(lib_s, 3),
            "naive_loop_s": round(naive_s, 3),
            "padded_batch_s": round(pad_s, 3),
            "speedup_vs_naive": round(naive_s / lib_s, 2),
            "speedup_vs_padded": round(pad_s / lib_s, 2),
            "max_abs_diff_vs_naive_nats": round(diff_naive, 6),
            "padded_max_abs_diff_vs_naive_nats": round(diff_pad, 6),
        }
        print(f"ps.identity_shift      {lib_s:8.3f} s   ({results['method']})")
        print(f"naive loop             {naive_s:8.3f} s   speed-up {naive_s / lib_s:5.1f}x (target >= 15x)")
        print(f"padded batch (lm-eval) {pad_s:8.3f} s   speed-up {pad_s / lib_s:5.1f}x (target >= 5x)")
        print(f"largest difference from the naive loop: {diff_naive:.2e} nats (padded batch: {diff_pad:.2e})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"logprobs-{results['dtype']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
