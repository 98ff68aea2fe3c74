"""The adapter set: the one owner of the PEFT state of a loaded model.

Every change to which LoRA adapters sit on a model goes through here: attach a
folder, detach it again, switch every adapter off for a block (the base model),
route the rows of one batch to different adapters, and inject a fresh adapter to
train. A block that changes the state temporarily is a context manager that puts
it back, whatever happens inside.

An adapter made for another base model is refused: the adapter's
``base_model_name_or_path`` must name the loaded model (any of its aliases) and
every LoRA matrix must fit the module it targets.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from persona_space._safety import check_weights_only
from persona_space.adapters import (
    AdapterInfo,
    AdapterLike,
    Member,
    adapter_sha256,
    info_for_folder,
    read_adapter_config,
    validate_name,
    weights_file,
)
from persona_space.engine._host import Host, base_module
from persona_space.engine._routing import AdapterRouter, adapters_off, route_rows
from persona_space.engine._steering import Route
from persona_space.errors import AdapterError, AdapterMismatchError, ConfigError
from persona_space.steering import Steer, check_hidden

if TYPE_CHECKING:
    import torch

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


class AdapterSet(Mapping[str, AdapterInfo]):
    """The adapters attached to one loaded model, by name (a read-only mapping to :class:`AdapterInfo`).

    >>> name = model.adapters.attach("runs/red")              # doctest: +SKIP
    >>> with model.adapters.disabled(): ...                   # the base model  # doctest: +SKIP
    >>> model.adapters.detach(name)                           # doctest: +SKIP
    """

    def __init__(self, host: Host) -> None:
        self._host = host
        self._infos: dict[str, AdapterInfo] = {}
        self._routes: dict[str, Route] = {}

    # -- the mapping --------------------------------------------------------------------------

    def __getitem__(self, name: str) -> AdapterInfo:
        return self._infos[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __repr__(self) -> str:
        return f"AdapterSet({list(self._infos)})"

    @property
    def routes(self) -> Mapping[str, Route]:
        """The steering conditions by row name: the adapter under each (or none) and its :class:`Steer`."""
        return MappingProxyType(self._routes)

    def record(self, name: str | None) -> str | dict[str, Any] | None:
        """What a manifest records of a row name: an adapter's SHA-256, a steering's description (with the
        SHA-256 of the adapter under it), ``None`` for the base model."""
        if name is None:
            return None
        route = self._routes.get(name)
        if route is None:
            return self._infos[name].sha256
        return {"steer": route.steer.describe(), "adapter": None if route.lora is None else self.record(route.lora)}

    @property
    def peft_names(self) -> frozenset[str]:
        """Every adapter PEFT holds on the model, including one being trained."""
        return frozenset(getattr(self._host.module, "peft_config", None) or {})

    # -- attach and detach ----------------------------------------------------------------------

    def attach(self, path: str | os.PathLike[str], name: str | None = None, *, check_base: bool = True) -> str:
        """Load the PEFT LoRA folder at ``path`` under ``name`` (default: the folder name); return the name.

        Re-attaching the same folder under the same name is a no-op; another folder
        under a name in use is refused.
        """
        folder = Path(path)
        config = read_adapter_config(folder)
        name = validate_name(name if name is not None else folder.resolve().name)
        sha = adapter_sha256(folder)
        existing = self._infos.get(name)
        if existing is not None:
            if existing.sha256 == sha:
                self._routes.pop(name, None)  # the name means the adapter alone again
                return name
            raise ConfigError(
                f"an adapter named {name!r} is already attached (from {existing.path}); choose another name"
            )
        if name in self.peft_names:
            raise ConfigError(f"the name {name!r} is in use by an adapter being trained; choose another name")
        self.check_compatible(folder, config, check_name=check_base)
        from peft import PeftModel

        host = self._host
        was_peft = isinstance(host.module, PeftModel)
        try:
            if was_peft:
                host.module.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            else:
                host.module = PeftModel.from_pretrained(host.module, str(folder), adapter_name=name, is_trainable=False)
        except Exception as exc:  # whatever PEFT raised, take out what it injected before re-raising
            self._remove(name, unwrap=not was_peft)
            if not isinstance(exc, (RuntimeError, ValueError, KeyError)):
                raise AdapterError(f"adapter {str(folder)!r} cannot be loaded: {exc}") from exc
            raise AdapterMismatchError(
                f"adapter {str(folder)!r} does not fit the loaded model {host.name!r}: {exc}"
            ) from exc
        host.module.eval()
        # In memory the adapter points at the loaded model's files: a later save of every adapter (a
        # trainer's checkpoint) looks for the base config there, and would ask the Hub about a bare name.
        host.module.peft_config[name].base_model_name_or_path = host.source
        self._infos[name] = info_for_folder(name, folder, config=config, sha256=sha)
        self._routes.pop(name, None)
        return name

    def detach(self, name: str) -> None:
        """Remove an attached adapter; with none left the model is the plain transformers model again."""
        if name in self._routes and name not in self._infos:
            del self._routes[name]  # a steering alone: nothing is on the model
            return
        if name not in self._infos:
            raise ConfigError(f"no adapter named {name!r} is attached; attached: {sorted(self._infos)}")
        self._routes.pop(name, None)
        for other in [n for n, r in self._routes.items() if r.lora == name]:
            del self._routes[other]  # steerings on top of it go with it
        del self._infos[name]
        others = self.peft_names - {name}
        self._remove(name, unwrap=not others)

    def attach_members(self, members: Sequence[Member]) -> dict[str, str | None]:
        """Attach each member's adapter (once); map each label to its attached name (``None`` = base model).

        An :class:`AdapterInfo` already attached with the same hash is used as it is,
        not loaded a second time.
        """
        out: dict[str, str | None] = {}
        for member in members:
            where = member.where
            if isinstance(where, Steer):
                out[member.label] = self._steer(member.label, where)
            elif where is not None:
                out[member.label] = self._attach_where(where, member.label)
                self._routes.pop(member.label, None)
            else:
                out[member.label] = None
        return out

    def _attach_where(self, where: AdapterLike, name: str) -> str:
        """Attach a member's adapter under ``name``, or the adapter already attached that it names."""
        if isinstance(where, AdapterInfo):  # as train_adapter returns
            attached = self._infos.get(where.name)
            if attached is not None and attached.sha256 == where.sha256:
                return attached.name
            where = where.path
        if isinstance(where, str) and where in self._infos and not Path(where).exists():
            return where
        return self.attach(where, name=name)

    def _steer(self, label: str, steer: Steer) -> str:
        """Register ``steer`` under the row name ``label`` (its adapter attached, or reused where attached)."""
        base = base_module(self._host.module)
        config = base.config
        check_hidden(steer, int(config.hidden_size), int(config.num_hidden_layers))
        lora = None
        where = steer.adapter
        if where is not None:
            if isinstance(where, AdapterInfo) or Path(where).exists():  # the same weights attached under any name
                sha = where.sha256 if isinstance(where, AdapterInfo) else adapter_sha256(where)
                lora = next((n for n, info in self._infos.items() if info.sha256 == sha), None)
            if lora is None:  # a folder, or the name of an attached adapter
                lora = self._attach_where(where, validate_name(f"{label}-adapter"))
        self._routes[label] = Route(lora, steer)
        return label

    @contextlib.contextmanager
    def attached(self, members: Sequence[Member]) -> Iterator[dict[str, str | None]]:
        """:meth:`attach_members` for a block: adapters it attached are detached again on exit."""
        before, routes = set(self._infos), dict(self._routes)
        try:
            yield self.attach_members(members)
        finally:
            for name in [n for n in self._infos if n not in before]:
                self.detach(name)
            self._routes.clear()
            self._routes.update({k: r for k, r in routes.items() if r.lora is None or r.lora in self._infos})

    # -- temporary states ---------------------------------------------------------------------

    def disabled(self) -> contextlib.AbstractContextManager[None]:
        """The base model: every adapter off inside the block, restored after."""
        return adapters_off(self._host.module)

    def router(self) -> AdapterRouter:
        """A router for batches whose rows use different adapters (see :class:`AdapterRouter`)."""
        return AdapterRouter(self._host.module, self._routes)

    def routing(self, rows: Sequence[str | None]) -> contextlib.AbstractContextManager[None]:
        """Inside the block every forward pass runs row ``i`` through model ``rows[i]`` (``None``: base; a
        steering condition's name: its adapter, steered)."""
        return route_rows(self._host.module, rows, self._routes)

    @contextlib.contextmanager
    def trainable(self, name: str, config: Any, dtype: torch.dtype, *, seed: int) -> Iterator[Any]:
        """Inject a fresh LoRA adapter ``name`` (a PEFT ``LoraConfig``) with the weights in ``dtype``.

        Yields the PEFT model, with ``name`` active and trainable. On exit, whatever
        happened, the adapter and any helper adapter a trainer added (TRL's GRPO
        reference copy, say) are removed, every weight is cast back to the dtype it
        had (bf16 -> fp32 -> bf16 is exact) and the model is in eval mode without
        gradients, as before. Attach the saved folder afterwards to use the result.
        """
        import torch
        from peft import PeftModel, get_peft_model

        if name in self._infos or name in self.peft_names:
            raise ConfigError(f"an adapter named {name!r} is already attached to {self._host.name!r}; pass another")
        host = self._host
        base = base_module(host.module)
        original = _dtypes(base)
        use_cache = getattr(base.config, "use_cache", None)
        was_peft = isinstance(host.module, PeftModel)
        if dtype != base.dtype:
            base.to(dtype)
        try:
            # where the base model's files are: PEFT's checkpoint saves look for its config.json there,
            # and would ask the Hub about a bare name (the saved folder names the model by its id)
            config.base_model_name_or_path = host.source
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # the LoRA A matrices are drawn here: same seed, same adapter
                if was_peft:
                    host.module.add_adapter(name, config)
                    host.module.set_adapter(name)
                else:
                    host.module = get_peft_model(host.module, config, adapter_name=name)
            yield host.module
        finally:
            with contextlib.suppress(Exception):
                base.gradient_checkpointing_disable()
            with contextlib.suppress(Exception):
                base.disable_input_require_grads()
            if use_cache is not None:
                base.config.use_cache = use_cache
            for extra in sorted(self.peft_names - set(self._infos)):
                self._remove(extra, unwrap=not self._infos)
            host.module.eval()
            for param in host.module.parameters():
                param.requires_grad_(False)
            _restore_dtypes(base, original)

    # -- checks -------------------------------------------------------------------------------

    def check_compatible(
        self, path: str | os.PathLike[str], config: Mapping[str, Any], *, check_name: bool = True
    ) -> None:
        """Refuse an adapter made for another base model: by name (unless ``check_name`` is off), then by shapes."""
        host = self._host
        base = config.get("base_model_name_or_path")
        if check_name and base and str(base).rstrip("/").lower() not in host.aliases:
            raise AdapterMismatchError(
                f"adapter {str(path)!r} was trained on {base!r}, but the loaded model is {host.name!r} "
                f"(accepted names: {', '.join(sorted(host.aliases))}); pass check_base=False to attach it anyway"
            )
        weights = weights_file(Path(path))
        if weights is None:
            return
        if weights.suffix != ".safetensors":  # PEFT unpickles it: only what the weights-only loader reads
            check_weights_only([weights], "adapter weights")
            return
        from safetensors import safe_open

        modules = dict(base_module(host.module).named_modules())
        try:
            handle = safe_open(str(weights), framework="pt")
        except Exception as exc:  # safetensors raises its own error type for a damaged header
            raise AdapterError(f"adapter weights {str(weights)!r} cannot be read: {exc}") from exc
        with handle as fh:
            for key in fh.keys():  # noqa: SIM118 - the safe_open handle is not iterable
                match = _LORA_KEY.match(key)
                if match is None:
                    continue
                name = match.group("module")
                target = modules.get(name)
                if target is None:
                    raise AdapterMismatchError(
                        f"adapter {str(path)!r} targets module {name!r}, which the loaded model {host.name!r} lacks"
                    )
                shape = tuple(fh.get_slice(key).get_shape())
                expected_in = getattr(target, "in_features", None)
                expected_out = getattr(target, "out_features", None)
                bad = (match.group("ab") == "A" and expected_in is not None and shape[-1] != expected_in) or (
                    match.group("ab") == "B" and expected_out is not None and shape[0] != expected_out
                )
                if bad:
                    raise AdapterMismatchError(
                        f"adapter {str(path)!r} tensor {key!r} has shape {shape}, which does not fit "
                        f"{name!r} of {host.name!r} (in={expected_in}, out={expected_out}); "
                        "the adapter was made for another base model"
                    )

    def _remove(self, name: str, *, unwrap: bool) -> None:
        """Take adapter ``name`` out of every LoRA layer; with ``unwrap`` put the plain layers back.

        Also undoes what a failed PEFT load injected, so the model computes what it did before.
        """
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer

        host = self._host
        base = base_module(host.module)
        is_peft = isinstance(host.module, PeftModel)
        if is_peft and not unwrap:
            remaining = [a for a in host.module.peft_config if a != name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # PEFT notes the deleted adapter was active
                if remaining and host.module.active_adapter == name:
                    host.module.set_adapter(remaining[0])  # an adapter that stays is active while this one goes
        for module_name, module in list(base.named_modules()):
            if not isinstance(module, LoraLayer):
                continue
            if unwrap:
                parent_name, _, child = module_name.rpartition(".")
                parent = base.get_submodule(parent_name) if parent_name else base
                setattr(parent, child, module.get_base_layer())
            elif name in module.lora_A or name in getattr(module, "lora_embedding_A", {}):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    module.delete_adapter(name)
                if not module.lora_A and not getattr(module, "lora_embedding_A", {}):
                    # no adapter left in this layer: the plain layer goes back (a LoRA wrapper around the head
                    # with nothing in it still makes TRL's GRPO refuse the model, and costs a call per pass)
                    parent_name, _, child = module_name.rpartition(".")
                    parent = base.get_submodule(parent_name) if parent_name else base
                    setattr(parent, child, module.get_base_layer())
        if is_peft and not unwrap:
            host.module.peft_config.pop(name, None)
        if unwrap:
            if hasattr(base, "peft_config"):
                del base.peft_config  # left on the base model by PEFT's injection
            host.module = base
        for param in host.module.parameters():  # set_adapter above makes the remaining adapter trainable
            param.requires_grad_(False)


def _dtypes(module: Any) -> dict[str, torch.dtype]:
    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    return {name: t.dtype for name, t in tensors if t.is_floating_point()}


def _restore_dtypes(module: Any, dtypes: dict[str, torch.dtype]) -> None:
    """Cast every parameter and buffer back to the dtype it had (rotary buffers stay float32)."""
    for name, param in module.named_parameters():
        if name in dtypes and param.dtype != dtypes[name]:
            param.data = param.data.to(dtypes[name])
    for name, buffer in list(module.named_buffers()):
        if name in dtypes and buffer.dtype != dtypes[name]:
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            owner._buffers[leaf] = buffer.to(dtypes[name])
