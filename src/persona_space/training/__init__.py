"""Training persona adapters: LoRA SFT on fact sets, GRPO identity steering.

>>> import persona_space as ps
>>> model = ps.load_model()                                                        # doctest: +SKIP
>>> red = ps.train_adapter(model, ps.datasets.load("colours:red"), store="runs/red")  # doctest: +SKIP
"""

from __future__ import annotations

from persona_space.training._grpo import train_grpo
from persona_space.training._run import AdapterRun
from persona_space.training._sft import encode_records, train_adapter
from persona_space.training._specs import GrpoOptions, GrpoSpec, LoraSpec, TrainOptions, TrainSpec

__all__ = [
    "AdapterRun",
    "GrpoOptions",
    "GrpoSpec",
    "LoraSpec",
    "TrainOptions",
    "TrainSpec",
    "encode_records",
    "train_adapter",
    "train_grpo",
]
