"""Seconds per optimizer step of ``ps.train_adapter`` against a plain TRL script, on the embedded model.

Workload: the ``colours:red`` set (42 records), LoRA rank 16 / alpha 32 on every
linear layer, batch 8, learning rate 1e-3, ``MAX_STEPS`` steps, float32 on CPU.

Baseline, measured in the same run on the same loaded weights: the script a
researcher would write with TRL alone: the records in TRL's conversational
prompt/completion form (with the same system turn), ``SFTTrainer`` with the same
``SFTConfig`` values and ``peft_config=LoraConfig(...)``, then ``save_pretrained``.

Both are timed end to end (data preparation, trainer set-up, training, saving);
``ps.train_adapter`` also writes its manifest and loss table and attaches the
adapter. Runs alternate between the two so drift on a busy machine hits both.

    python benchmarks/training.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import persona_space as ps
from _machine import machine

MAX_STEPS = 12
BATCH = 8
LR = 1e-3


def float32_model() -> ps.LoadedModel:
    return ps.load_model(dtype="float32")


def library_run(model: ps.LoadedModel, data: ps.ChatDataset, out: Path) -> float:
    """Seconds per step of ``ps.train_adapter`` (whole call)."""
    spec = ps.TrainSpec(max_steps=MAX_STEPS, batch_size=BATCH, learning_rate=LR, save_steps=10_000)
    start = time.perf_counter()
    info = ps.train_adapter(model, data, store=out, train=spec, progress=False, name="bench")
    elapsed = time.perf_counter() - start
    model.adapters.detach(info.name)
    return elapsed / MAX_STEPS


def plain_trl_run(model: ps.LoadedModel, data: ps.ChatDataset, out: Path) -> float:
    """Seconds per step of the plain TRL script (whole script after model loading)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    start = time.perf_counter()
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in ps.datasets.as_prompt_completion(data)]
    config = SFTConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        seed=0,
        report_to="none",
        completion_only_loss=True,
        max_length=512,
        gradient_checkpointing=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model.module,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=model.tokenizer,
        peft_config=lora,
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # quiet, as ps.train_adapter(progress=False) is
    trainer.train()
    trained: Any = trainer.model  # a PeftModel once the trainer has wrapped it
    trained.save_pretrained(str(out / "adapter"))
    elapsed = time.perf_counter() - start
    # Undo PEFT's injection so the next run starts from the same plain model.
    model.module = trained.unload() if hasattr(trained, "unload") else model.module
    model.module.eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    return elapsed / MAX_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each instead of three")
    parser.add_argument("--out", default="benchmarks/results/training.json")
    args = parser.parse_args()

    import datasets as hf_datasets
    from transformers.utils import logging as hf_logging

    hf_datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    model = float32_model()
    data = ps.datasets.load("colours:red")
    repeats = 1 if args.quick else 3
    print(f"model {model.name} float32, threads {torch.get_num_threads()}, {MAX_STEPS} steps x batch {BATCH}")
    cpu_path = machine(torch.float32)
    lib_runs: list[float] = []
    trl_runs: list[float] = []
    scratch = Path(tempfile.mkdtemp(prefix="ps-bench-train-"))
    try:
        library_run(model, data, scratch / "warmup")  # first-call costs (imports, kernels) out of the timing
        for i in range(repeats):
            order: list[Any] = [(library_run, lib_runs), (plain_trl_run, trl_runs)]
            if i % 2:
                order.reverse()
            for run, sink in order:
                sink.append(run(model, data, scratch / f"{run.__name__}-{i}"))
                print(f"  {run.__name__:<14} {sink[-1]:.3f} s/step")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lib, trl = statistics.median(lib_runs), statistics.median(trl_runs)
    overhead = lib / trl - 1
    results = {
        "machine": cpu_path,
        "steps": MAX_STEPS,
        "batch_size": BATCH,
        "repeats": repeats,
        "library_s_per_step": round(lib, 4),
        "library_runs": [round(v, 4) for v in lib_runs],
        "plain_trl_s_per_step": round(trl, 4),
        "plain_trl_runs": [round(v, 4) for v in trl_runs],
        "ratio": round(lib / trl, 4),
        "overhead": round(overhead, 4),
    }
    print(f"\ncolours:red, {MAX_STEPS} steps (median of {repeats})")
    print(f"  ps.train_adapter   {lib:.3f} s/step")
    print(f"  plain TRL script   {trl:.3f} s/step")
    print(f"  ratio {lib / trl:.3f}  (overhead {overhead:+.1%}; target <= +5 %)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
