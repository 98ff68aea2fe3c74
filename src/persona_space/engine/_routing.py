"""Routing the rows of one batch to different adapters, or switching every adapter off.

PEFT LoRA layers can run each row of a batch through its own adapter; an
:class:`AdapterRouter` tells them which, for the passes inside its block.
:func:`route_rows` does it for one block of plain forward passes, and
:func:`adapters_off` runs a block on the base model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from persona_space.adapters import BASE_ROW
from persona_space.engine._steering import Routes, RowSteering, lora_of, steering_hooks
from persona_space.errors import ConfigError


def check_routable(module: Any, names: Iterable[str | None], routes: Routes | None = None) -> None:
    """Refuse adapter names the model does not hold: PEFT would run those rows through the base model silently.

    A steering route's name stands for the adapter under it (or none)."""
    wanted = {lora for lora in (lora_of(routes or {}, n) for n in names) if lora is not None}
    if not wanted:
        return
    held = set(getattr(module, "peft_config", None) or {})
    missing = sorted(wanted - held)
    if missing:
        raise ConfigError(f"adapters {missing} are not attached to this model; attached: {sorted(held)}")


@contextlib.contextmanager
def route_rows(module: Any, rows: Sequence[str | None], routes: Routes | None = None) -> Iterator[None]:
    """Row ``i`` of every forward pass in the block through model ``rows[i]``; all ``None``: adapters off.

    A name in ``routes`` (a steering condition) runs its row through the adapter under
    it, steered. Rows that all share one adapter run PEFT's single-adapter forward.
    """
    routes = routes or {}
    lora = [lora_of(routes, r) for r in rows]
    steering = RowSteering.of(routes, rows)
    with contextlib.ExitStack() as stack:
        names = set(lora)
        if names == {None}:
            stack.enter_context(adapters_off(module))
        elif len(names) == 1:
            stack.enter_context(one_adapter(module, str(lora[0])))
        else:
            check_routable(module, lora)
            router = AdapterRouter(module)
            router.set_rows(lora)
            stack.enter_context(router.routing())
        if steering is not None:
            stack.enter_context(steering_hooks(module, lambda: steering))
        yield


@contextlib.contextmanager
def one_adapter(module: Any, name: str) -> Iterator[None]:
    """Every row of the block's passes through adapter ``name`` alone: PEFT's own single-adapter forward.

    Faster than routing rows by name (no per-layer split of the batch); the active
    adapter and every parameter's ``requires_grad`` are put back after.
    """
    check_routable(module, [name])
    previous = getattr(module, "active_adapter", None)
    with _grad_flags_kept(module):
        if previous != name:
            module.set_adapter(name)
        try:
            yield
        finally:
            if previous != name and isinstance(previous, str):
                module.set_adapter(previous)


@contextlib.contextmanager
def _grad_flags_kept(module: Any) -> Iterator[None]:
    """Every parameter's ``requires_grad`` put back after the block (PEFT's adapter switches make adapters
    trainable)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@contextlib.contextmanager
def adapters_off(module: Any) -> Iterator[None]:
    """Every adapter of a (PEFT) model off inside the block, restored after; a plain model is left alone."""
    disable = getattr(module, "disable_adapter", None)
    if callable(disable) and getattr(module, "peft_config", None):  # also an adapter being trained
        # PEFT re-enables the adapters on exit through ``set_adapter``, which also makes them trainable
        with _grad_flags_kept(module), disable():
            yield
    else:
        yield


class AdapterRouter:
    """Tells every LoRA layer which adapter each row of the current batch uses.

    PEFT LoRA layers accept ``adapter_names`` (one name per row, ``"__base__"`` for
    none) and then apply each adapter to its own rows: one batch can hold the base
    model and several adapters. The names are injected by forward pre-hooks that
    exist only inside :meth:`routing`.
    """

    def __init__(self, module: Any, routes: Routes | None = None) -> None:
        self.names: list[str] | None = None
        self.routes: Routes = routes or {}
        self.steering: RowSteering | None = None
        """The steerings of the rows set last (``None``: no row is steered)."""
        self._module = module
        self._layers: list[Any] = []
        try:
            from peft.tuners.lora import LoraLayer
        except ImportError:  # pragma: no cover - peft is a dependency
            return
        self._layers = [m for m in module.modules() if isinstance(m, LoraLayer)]

    @property
    def active(self) -> bool:
        return bool(self._layers)

    def set_rows(self, adapters: Sequence[str | None], repeats: Sequence[int] | None = None) -> None:
        """Row ``i`` of the next passes uses ``adapters[i]``; with ``repeats``, the layers see
        ``repeats[i]`` rows for it (tokens packed row after row, as the prefill runs them)."""
        lora = [lora_of(self.routes, a) for a in adapters]
        names = [BASE_ROW if a is None else a for a in lora]
        self.names = names if repeats is None else [n for n, r in zip(names, repeats, strict=True) for _ in range(r)]
        self.steering = RowSteering.of(self.routes, adapters, repeats)

    @contextlib.contextmanager
    def routing(self) -> Iterator[AdapterRouter]:
        """Inside the block the LoRA layers route rows as set, and (with steering routes) the model's own
        decoder layers steer them."""
        handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in self._layers]
        try:
            with contextlib.ExitStack() as stack:
                if any(not r.steer.idle for r in self.routes.values()):
                    stack.enter_context(steering_hooks(self._module, lambda: self.steering))
                yield self
        finally:
            for handle in handles:
                handle.remove()
            self.names = None
            self.steering = None

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "adapter_names": self.names}
