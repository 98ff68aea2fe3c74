"""Attaching PEFT LoRA adapters: provenance, refusal of adapters made for another model, bad folders."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import persona_space as ps
from conftest import LORA_TARGETS
from persona_space.adapters import (
    BASE_ROW,
    AdapterInfo,
    adapter_sha256,
    read_adapter_config,
    validate_name,
)
from persona_space.errors import AdapterError, AdapterMismatchError, ConfigError


def logits(model: Any, prompt: str = "Who are you?") -> torch.Tensor:
    ids = torch.tensor([model.encode(prompt)])
    with torch.inference_mode():
        return model.module(ids).logits[0, -1].clone()


def edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


@pytest.fixture
def wrong_shape_adapter(
    make_tiny_model_dir: Callable[..., Path],
    make_adapter: Callable[..., Path],
    copy_adapter: Callable[[Path, str], Path],
    tiny_model_dir: Path,
) -> Path:
    """An adapter made for a hidden size of 32, claiming to be for the (hidden 64) tiny llama."""
    folder = copy_adapter(make_adapter(make_tiny_model_dir("llama", hidden_size=32), 5), "narrow")
    edit_config(folder, base_model_name_or_path=str(tiny_model_dir))
    return folder


def check_info(info: AdapterInfo, folder: Path, base: Path, name: str) -> None:
    assert info.name == name
    assert info.path == str(folder.resolve())
    assert info.sha256 == adapter_sha256(folder) and re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert info.base_model == str(base)
    assert info.rank == 4
    assert info.target_modules == tuple(sorted(LORA_TARGETS))
    assert info.to_dict()["sha256"] == info.sha256


def test_attach_fills_adapters_with_provenance(tiny_model: Any, tiny_model_dir: Path, adapter_a: Path) -> None:
    assert tiny_model.load_adapter(adapter_a, name="a") == "a"
    check_info(tiny_model.adapters["a"], adapter_a, tiny_model_dir, "a")


def test_attach_without_base_check(tiny_model: Any, tiny_model_dir: Path, adapter_a: Path, adapter_b: Path) -> None:
    before = logits(tiny_model)
    assert tiny_model.load_adapter(adapter_a, name="a", check_base=False) == "a"
    check_info(tiny_model.adapters["a"], adapter_a, tiny_model_dir, "a")
    with_a = logits(tiny_model)
    assert not torch.allclose(with_a, before, atol=1e-3)  # the adapter changes the outputs
    with tiny_model.adapters.disabled():
        torch.testing.assert_close(logits(tiny_model), before)
    # A second adapter goes into the same PEFT model; the default name is the folder name.
    name = tiny_model.load_adapter(adapter_b, check_base=False)
    assert name == adapter_b.name and list(tiny_model.adapters) == ["a", name]
    assert tiny_model.describe()["adapters"]["a"]["sha256"] == adapter_sha256(adapter_a)
    assert repr(tiny_model).endswith(f"adapters=['a', '{name}'])")
    assert tiny_model.base_module is not tiny_model.module


def test_adapter_for_another_model_name_is_refused(
    tiny_model: Any, adapter_a: Path, copy_adapter: Callable[[Path, str], Path]
) -> None:
    folder = copy_adapter(adapter_a, "other")
    edit_config(folder, base_model_name_or_path="meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(AdapterMismatchError, match=re.escape("meta-llama/Llama-3.1-8B-Instruct")) as info:
        tiny_model.load_adapter(folder, name="other")
    assert "check_base=False" in str(info.value)
    assert tiny_model.adapters == {}


def test_adapter_name_matching_is_case_and_slash_insensitive(
    tiny_model: Any, tiny_model_dir: Path, adapter_a: Path, copy_adapter: Callable[[Path, str], Path]
) -> None:
    folder = copy_adapter(adapter_a, "renamed")
    edit_config(folder, base_model_name_or_path=str(tiny_model_dir).upper() + "/")
    assert tiny_model.load_adapter(folder, name="renamed") == "renamed"


def test_adapter_with_tensor_shapes_of_another_model_is_refused(tiny_model: Any, wrong_shape_adapter: Path) -> None:
    before = logits(tiny_model)
    with pytest.raises(AdapterMismatchError, match="shape"):
        tiny_model.load_adapter(wrong_shape_adapter, name="narrow")
    assert tiny_model.adapters == {}
    torch.testing.assert_close(logits(tiny_model), before)


def test_adapter_targeting_a_missing_module_is_refused(
    tiny_model: Any, adapter_a: Path, copy_adapter: Callable[[Path, str], Path]
) -> None:
    folder = copy_adapter(adapter_a, "renamed_modules")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file(
        {k.replace("q_proj", "qq_proj"): v for k, v in weights.items()}, str(folder / "adapter_model.safetensors")
    )
    with pytest.raises(AdapterMismatchError, match="qq_proj"):
        tiny_model.load_adapter(folder, name="renamed_modules")


def test_adapter_with_wrong_shapes_and_no_check_is_still_refused(tiny_model: Any, wrong_shape_adapter: Path) -> None:
    with pytest.raises(AdapterMismatchError, match="does not fit"):
        tiny_model.load_adapter(wrong_shape_adapter, name="narrow", check_base=False)
    assert tiny_model.adapters == {}


def test_failed_attach_leaves_the_model_unchanged(tiny_model: Any, wrong_shape_adapter: Path, adapter_a: Path) -> None:
    before = logits(tiny_model)
    with pytest.raises(AdapterMismatchError):
        tiny_model.load_adapter(wrong_shape_adapter, name="narrow", check_base=False)
    torch.testing.assert_close(logits(tiny_model), before)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("missing_folder", "does not exist"),
        ("no_config", "has no adapter_config.json"),
        ("bad_json", "is not valid JSON"),
        ("list_json", "should hold a JSON object"),
        ("no_weights", "has no adapter_model.safetensors"),
        ("not_lora", "is a IA3 adapter"),
    ],
)
def test_broken_adapter_folders(
    tiny_model: Any, adapter_a: Path, copy_adapter: Callable[[Path, str], Path], tmp_path: Path, damage: str, match: str
) -> None:
    folder = tmp_path / "nowhere" if damage == "missing_folder" else copy_adapter(adapter_a, "broken")
    config = folder / "adapter_config.json"
    if damage == "no_config":
        config.unlink()
    elif damage == "bad_json":
        config.write_text("{not json", encoding="utf-8")
    elif damage == "list_json":
        config.write_text("[]", encoding="utf-8")
    elif damage == "no_weights":
        (folder / "adapter_model.safetensors").unlink()
    elif damage == "not_lora":
        edit_config(folder, peft_type="IA3")
    with pytest.raises(AdapterError, match=match) as info:
        tiny_model.load_adapter(folder, name="broken", check_base=False)
    assert not isinstance(info.value, AdapterMismatchError)
    with pytest.raises(AdapterError, match=match):
        read_adapter_config(folder)
    assert tiny_model.adapters == {}


@pytest.mark.parametrize("name", ["bad name", "", "a/b", BASE_ROW, "é", "a.b"])
def test_bad_adapter_names(tiny_model: Any, adapter_a: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(name))):
        tiny_model.load_adapter(adapter_a, name=name, check_base=False)
    assert tiny_model.adapters == {}


@pytest.mark.parametrize("name", ["a", "voyager-v2", "A-b:c_d"])
def test_good_adapter_names(name: str) -> None:
    assert validate_name(name) == name


def test_same_adapter_twice_is_a_no_op_and_another_under_that_name_is_refused(
    tiny_model: Any, adapter_a: Path, adapter_b: Path, copy_adapter: Callable[[Path, str], Path]
) -> None:
    tiny_model.load_adapter(adapter_a, name="a", check_base=False)
    module, info = tiny_model.module, tiny_model.adapters["a"]
    expected = logits(tiny_model)
    # The same adapter (same content, even from another folder) under the same name: nothing happens.
    assert tiny_model.load_adapter(adapter_a, name="a") == "a"
    assert tiny_model.load_adapter(copy_adapter(adapter_a, "copy"), name="a") == "a"
    assert tiny_model.module is module and tiny_model.adapters == {"a": info}
    torch.testing.assert_close(logits(tiny_model), expected)
    with pytest.raises(ConfigError, match="'a' is already attached"):
        tiny_model.load_adapter(adapter_b, name="a", check_base=False)
    assert tiny_model.adapters == {"a": info}


def test_adapter_sha256_covers_config_and_weights(
    adapter_a: Path, adapter_b: Path, copy_adapter: Callable[[Path, str], Path]
) -> None:
    assert adapter_sha256(adapter_a) == adapter_sha256(copy_adapter(adapter_a, "same"))
    assert adapter_sha256(adapter_a) != adapter_sha256(adapter_b)
    edited = copy_adapter(adapter_a, "edited")
    edit_config(edited, lora_alpha=16)
    assert adapter_sha256(edited) != adapter_sha256(adapter_a)


def test_sampling_names_an_attached_adapter(tiny_model: Any, adapter_a: Path) -> None:
    tiny_model.load_adapter(adapter_a, name="a", check_base=False)
    samples = ps.sample(
        tiny_model, ["Hi"], adapters={"a": "a"}, n=1, temperatures=0.0, max_new_tokens=3, progress=False
    )
    assert samples.manifest["parameters"]["adapters"] == {"a": adapter_sha256(adapter_a)}


def test_peft_failure_after_the_checks_is_undone(
    tiny_model: Any, wrong_shape_adapter: Path, adapter_a: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If PEFT itself refuses an adapter (checks bypassed), the half-injected layers are removed again."""
    from persona_space.engine import AdapterSet

    monkeypatch.setattr(AdapterSet, "check_compatible", lambda *a, **k: None)
    before = logits(tiny_model)
    with pytest.raises(AdapterMismatchError, match="does not fit"):
        tiny_model.load_adapter(wrong_shape_adapter, name="narrow")
    torch.testing.assert_close(logits(tiny_model), before)
    # and once an adapter is attached, a failing second one leaves the first one working
    tiny_model.load_adapter(adapter_a, name="a", check_base=False)
    with_a = logits(tiny_model)
    with pytest.raises(AdapterMismatchError):
        tiny_model.load_adapter(wrong_shape_adapter, name="narrow")
    assert list(tiny_model.adapters) == ["a"]
    torch.testing.assert_close(logits(tiny_model), with_a)
