"""The line every benchmark prints first: which CPU path its figures measured."""

from __future__ import annotations

from typing import Any

import torch

from persona_space.provenance import cpu


def machine(dtype: torch.dtype | str) -> dict[str, Any]:
    """Print and return the CPU model, its vector ISA, bf16 support, the dtype measured and the threads.

    Figures differ by CPU kind: bfloat16 products run about 4x faster than float32
    with AVX-512 BF16 or AMX, and far slower than float32 on AVX2 alone. Run with
    ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` an AVX-512 CPU measures torch's
    AVX2 kernels (a proxy for a CPU without AVX-512, printed as capped).
    """
    info = cpu()
    name = str(dtype).removeprefix("torch.")
    described = {**info, "dtype": name, "threads": torch.get_num_threads()}
    bf16 = "native bf16" if info["fast_bf16"] else "no native bf16"
    cap = f", capped by {info['isa_cap']}" if "isa_cap" in info else ""
    print(f"CPU {info['model']}: ISA {info['isa']} ({bf16}{cap}); measuring {name}, {described['threads']} threads")
    return described
