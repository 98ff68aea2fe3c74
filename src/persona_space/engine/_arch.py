"""Which architectures the ``cpu`` backend's slot engine drives (light: no torch at import)."""

from __future__ import annotations

from typing import Any

from persona_space.errors import UnsupportedModelError

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
PACK_ENV = "PERSONA_SPACE_PACKED_LINEAR"  # "0" turns off the oneDNN-prepacked weights


def supports(causal_lm: Any) -> bool:
    """Whether the slot engine can drive ``causal_lm`` (its type, with a decoder holding ``layers``)."""
    model_type = getattr(getattr(causal_lm, "config", None), "model_type", None)
    inner = getattr(causal_lm, "model", None)
    return model_type in SUPPORTED_MODEL_TYPES and inner is not None and hasattr(inner, "layers")


def check_supported(causal_lm: Any) -> None:
    """Raise :class:`UnsupportedModelError` unless the slot engine can drive ``causal_lm``."""
    if not supports(causal_lm):
        model_type = getattr(getattr(causal_lm, "config", None), "model_type", None)
        raise UnsupportedModelError(
            f"the cpu backend cannot generate with model type {model_type!r}; it drives "
            f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))} (backend='hf' runs any causal LM)"
        )
