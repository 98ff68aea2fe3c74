"""What the engine needs from a loaded model: a structural type, so the engine never imports ``models``.

:class:`persona_space.models.LoadedModel` satisfies it; so does anything else
holding a transformers causal LM, its tokenizer and an adapter set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from persona_space.adapters import AdapterInfo


class Recipe(Protocol):
    """How to load the same model again in another process (a Ray worker): picklable."""

    def load(self, device: str) -> Host: ...


class Host(Protocol):
    """A loaded chat model as the engine sees it.

    ``module`` is the transformers model, or the PEFT model wrapping it once an
    adapter is attached; only the adapter set reassigns it.
    """

    module: Any
    tokenizer: Any
    name: str
    source: str
    dtype: torch.dtype
    device: torch.device
    aliases: frozenset[str]

    @property
    def adapters(self) -> Mapping[str, AdapterInfo]: ...

    @property
    def base_module(self) -> Any: ...

    @property
    def config(self) -> Any: ...

    @property
    def end_of_turn_ids(self) -> tuple[int, ...]: ...

    def recipe(self) -> Recipe: ...


def base_module(module: Any) -> Any:
    """The transformers model underneath any PEFT wrapper."""
    get_base = getattr(module, "get_base_model", None)
    return get_base() if callable(get_base) else module
