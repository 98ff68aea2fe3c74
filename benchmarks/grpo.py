"""Seconds per GRPO step with rollouts through the engine against TRL's own ``generate``, same settings.

Workload (the seed's identity steering, small): the embedded model in its default
dtype, the ``steering`` prompts, the composite ``IdentityReward`` with the rule
judge, 4 prompts x 4 answers a step, answers up to 48 tokens, LoRA rank 16 on every
linear layer, learning rate 1e-4, KL beta 0.04, seed 0. Each rollout source trains
its own adapter from the same start for the same steps, in one process:

* ``trl``: ``train_grpo(backend="trl")``, TRL's ``generate`` on the training module
  (the baseline);
* each engine backend named (``cpu`` by default; ``hf``, ``vllm`` where installed).

Printed: seconds per step (whole call over its steps), rollout tokens/s, the ratio
to the baseline, and the reward per step with each run's mean and a 95% interval
over steps (the curves are one seed each: they agree within noise, not exactly,
because the two sources draw different random answers).

    python benchmarks/grpo.py [--quick] [--steps N] [--backends cpu,hf] [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd

import persona_space as ps
from _machine import machine

PROMPTS_PER_STEP = 4
GENERATIONS = 4
NEW_TOKENS = 48
LEARNING_RATE = 1e-4


def run(
    model: ps.LoadedModel, backend: str, steps: int, out: Path, precision: Literal["auto", "float32", "bfloat16"]
) -> dict[str, Any]:
    from persona_space.judges import RuleJudge

    spec = ps.GrpoSpec(
        steps=steps, prompts_per_step=PROMPTS_PER_STEP, num_generations=GENERATIONS,
        max_completion_length=NEW_TOKENS, learning_rate=LEARNING_RATE, save_steps=10_000, precision=precision,
    )  # fmt: skip
    start = time.perf_counter()
    info = ps.train_grpo(
        model, "steering", reward=ps.IdentityReward(RuleJudge()), store=out, grpo=spec, seed=0,
        backend=backend, progress=False, name=f"bench-{backend}",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model.adapters.detach(info.name)
    log = pd.read_parquet(out / "tables" / "training_log.parquet")
    rewards = [float(r) for r in log["reward"]]
    rollout, rollout_step = None, None
    if "rollout_tokens" in log and log["rollout_seconds"].sum() > 0:
        rollout = float(log["rollout_tokens"].sum() / log["rollout_seconds"].sum())
        rollout_step = float(log["rollout_seconds"].mean())
    return {
        "backend": backend,
        "seconds_per_step": seconds / steps,
        "rollout_tokens_per_second": rollout,
        "rollout_seconds_per_step": rollout_step,
        "rewards": rewards,
        "reward_mean": statistics.fmean(rewards),
        "reward_interval": interval(rewards),
    }


def interval(values: list[float]) -> list[float]:
    """A 95% t interval for the mean over steps (normal quantile from 30 steps)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return [mean, mean]
    half = float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return [mean - half, mean + half]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 steps each instead of 12")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--backends", default="cpu", help="engine backends to compare with trl, comma-separated")
    parser.add_argument("--dtype", default="auto", help="the loaded model's dtype")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="GrpoSpec.precision: auto trains in float32 on CPU; bfloat16 keeps bf16 weights, autocast",
    )
    parser.add_argument("--out", default="benchmarks/results/grpo.json")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    steps = args.steps or (4 if args.quick else 12)
    model = ps.load_model(dtype=args.dtype)
    described = machine(model.dtype)
    print(f"model {model.name} {model.dtype}, precision {args.precision}; {steps} steps of {PROMPTS_PER_STEP} "
          f"prompts x {GENERATIONS} answers x {NEW_TOKENS} tokens")  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="ps-bench-grpo-"))
    runs: list[dict[str, Any]] = []
    try:
        for backend in ["trl", *[b.strip() for b in args.backends.split(",") if b.strip()]]:
            runs.append(run(model, backend, steps, scratch / backend, args.precision))
            got = runs[-1]
            rate = got["rollout_tokens_per_second"]
            low, high = got["reward_interval"]
            each = got["rollout_seconds_per_step"]
            rollout = "" if rate is None else f", rollouts {rate:6.1f} tok/s, {each:.2f} s/step"
            print(f"  {backend:<5} {got['seconds_per_step']:7.2f} s/step{rollout}; "
                  f"reward {got['reward_mean']:.2f} [{low:.2f}, {high:.2f}] over steps")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = runs[0]["seconds_per_step"]
    print("\nseconds per step (lower is better); speed-up against TRL's own generate:")
    for got in runs:
        got["speedup"] = baseline / got["seconds_per_step"]
        print(f"  {got['backend']:<5} {got['seconds_per_step']:7.2f} s  x{got['speedup']:.2f}")
    print("\nreward per step:")
    print("  step " + " ".join(f"{g['backend']:>7}" for g in runs))
    for i in range(steps):
        print(f"  {i + 1:>4} " + " ".join(f"{g['rewards'][i]:7.2f}" for g in runs))
    result = {"machine": described, "model": model.name, "precision": args.precision, "steps": steps,
              "prompts_per_step": PROMPTS_PER_STEP, "num_generations": GENERATIONS,
              "max_completion_length": NEW_TOKENS, "runs": runs}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
