"""Backends that run in this process on one loaded model: which exist, and which ``"auto"`` picks."""

from __future__ import annotations

import importlib.util
from typing import Literal

from persona_space.engine._arch import supports
from persona_space.engine._cpu import CPUBackend
from persona_space.engine._hf import DEFAULT_BATCH, HFBackend
from persona_space.engine._host import Host
from persona_space.engine._requests import Backend
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS, ScoreMethod
from persona_space.errors import BackendUnavailableError

LOCAL_BACKENDS: tuple[str, ...] = ("auto", "hf", "cpu", "vllm")


def cpu_supports(model: Host) -> bool:
    """Whether the ``cpu`` backend's slot engine can drive this model's architecture."""
    return supports(model.base_module)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def auto_backend_name(model: Host) -> Literal["cpu", "hf", "vllm"]:
    """``"auto"``: ``vllm`` on a GPU where it is installed, else the ``cpu`` engine where it supports the
    architecture, else ``hf``. On a CPU the ``cpu`` engine is faster than vLLM's CPU build, so it stays."""
    if model.device.type == "cuda" and vllm_installed():
        return "vllm"
    return "cpu" if cpu_supports(model) else "hf"


def local_backend(
    model: Host,
    name: str,
    *,
    batch_size: int | Literal["auto"] = "auto",
    score_method: ScoreMethod = "auto",
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
) -> Backend:
    """A backend of this process for ``model`` by name (``auto``, ``hf``, ``cpu``, ``vllm``)."""
    chosen = auto_backend_name(model) if name == "auto" else name
    if chosen == "cpu":
        return CPUBackend(
            model,
            batch_size=batch_size,
            score_method=score_method,
            batch_tokens=batch_tokens,
            max_row_tokens=max_row_tokens,
        )
    if chosen == "hf":
        return HFBackend(
            model,
            batch_size=DEFAULT_BATCH if batch_size == "auto" else batch_size,
            batch_tokens=batch_tokens,
            max_row_tokens=max_row_tokens,
        )
    if chosen == "vllm":
        from persona_space.engine._vllm import VLLMBackend

        return VLLMBackend(model, batch_tokens=batch_tokens, max_row_tokens=max_row_tokens)
    raise BackendUnavailableError(f"backend {name!r} does not run in-process; expected one of {LOCAL_BACKENDS}")
