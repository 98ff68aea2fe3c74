"""The fused native kernels of the cpu engine's decode step, and the eager fallback.

The kernels must do what the eager operations do (bit for bit in bfloat16 on the
kernel level, to float32 rounding otherwise), the decode step through them must
give the eager step's logits on every supported architecture, and every way they
can be unavailable (switched off, no compiler, a model they do not implement)
must leave generation on the eager path with the reason recorded.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import persona_space as ps
from conftest import MODEL_TYPES
from persona_space.engine import AdapterRouter, Completion, GenerateRequest, _native
from persona_space.engine._slots import generate
from persona_space.engine._stack import DecoderStack

pytestmark = pytest.mark.skipif(
    _native.kernels() is None, reason=f"native kernels unavailable here: {_native.native_state()['reason']}"
)


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Build state forgotten and a private cache folder, restored afterwards."""
    monkeypatch.setenv("PERSONA_SPACE_CACHE", str(tmp_path / "cache"))
    _native._load.cache_clear()
    yield
    _native._load.cache_clear()


def _assert_like_eager(kernels: _native.NativeKernels, dtype: torch.dtype, hd: int, groups: int) -> None:
    pairs = _native._compare(kernels, dtype, hd, groups)
    assert set(pairs) == {"add_rms_norm", "silu_mul", "decode_attention", "prefill_attention"}
    for name, (got, want) in pairs.items():
        assert got.dtype == want.dtype == dtype, name
        if dtype == torch.bfloat16:  # same roundings at the same places: equal bits
            assert torch.equal(got, want), (name, hd, groups)
        else:
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6, msg=f"{name} hd={hd} groups={groups}")


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("hd", [8, 12, 16, 24, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_kernel_does_what_the_eager_operations_do(dtype: torch.dtype, hd: int, groups: int) -> None:
    kernels = _native.kernels()
    assert kernels is not None
    _assert_like_eager(kernels, dtype, hd, groups)


_HAS_AVX2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@pytest.mark.parametrize(
    "capability",
    [
        pytest.param("AVX2", marks=pytest.mark.skipif(not _HAS_AVX2, reason="this CPU has no AVX2")),
        "DEFAULT",  # no vector code: the plain loops
    ],
)
def test_builds_for_narrower_instruction_sets_do_what_eager_does(
    capability: str, fresh_build: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library as a CPU with AVX2 only, or with neither, would build it: 8-lane vectors, or plain loops."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("instruction-set flags are chosen on x86 only")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    kernels = _native.kernels()
    assert kernels is not None, _native.native_state()["reason"]
    assert "-mno-avx512f" in kernels.info.flags
    assert ("-mno-avx2" in kernels.info.flags) == (capability == "DEFAULT")
    for dtype in (torch.float32, torch.bfloat16):
        for hd in (8, 12, 64, 128):
            for groups in (1, 3):
                _assert_like_eager(kernels, dtype, hd, groups)


def _decode_both(model: Any, steps: int = 3) -> tuple[list[torch.Tensor], list[torch.Tensor], DecoderStack]:
    """Logits of a few decode steps with uneven row lengths, fused and eager, from one prefilled cache."""
    stack = DecoderStack(model.base_module, invariant=False)  # toggles its fused and eager decode steps
    gen = torch.Generator().manual_seed(1)
    rows, width = 6, 9
    tokens = torch.randint(0, 200, (rows, width), generator=gen)
    lengths = torch.tensor([9, 4, 7, 1, 9, 5])
    index = torch.arange(rows)
    fused, eager = [], []
    with torch.inference_mode():
        cache = stack.allocate(rows, width + steps + 1)
        stack.prefill(cache, tokens, lengths, index, index)
        other = copy.deepcopy(cache)
        native = stack.native
        for step in range(steps):
            nxt = torch.randint(0, 200, (rows,), generator=gen)
            positions = lengths + step
            stack.native = native
            fused.append(stack.decode(cache, nxt, positions))
            stack.native = None
            eager.append(stack.decode(other, nxt, positions))
        stack.native = native
        for a, b in zip(cache.keys + cache.values, other.keys + other.values, strict=True):
            for r in range(rows):  # positions past a row's length are never read: compare the real ones
                span = int(lengths[r]) + steps
                assert torch.allclose(a[r, :, :span].float(), b[r, :, :span].float(), atol=0.05, rtol=0.02)
    return fused, eager, stack


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_fused_decode_gives_the_eager_logits_in_float32(tiny_model: Any) -> None:
    fused, eager, stack = _decode_both(tiny_model)
    assert stack.native is not None
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fused_decode_gives_the_eager_logits_in_bfloat16(
    make_tiny_model_dir: Callable[..., Path], model_type: str
) -> None:
    model = ps.load_model(str(make_tiny_model_dir(model_type)), device="cpu", dtype="bfloat16")
    fused, eager, stack = _decode_both(model)
    assert stack.native is not None
    for a, b in zip(fused, eager, strict=True):
        # Both round to bfloat16 at the same places; only the order of float32 sums differs.
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.02)
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_switched_off_the_engine_runs_eager_and_says_so(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_native.ENV, "0")
    assert DecoderStack(tiny_model.base_module).native is None
    state = _native.native_state()
    assert state["in_use"] is False and _native.ENV in state["reason"] and state["env"] == f"{_native.ENV}=0"


def test_a_failed_build_falls_back_with_its_reason(fresh_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_compiler", lambda: "false")  # a "compiler" that always fails
    assert _native.kernels() is None
    state = _native.native_state()
    assert state["in_use"] is False and "build failed" in state["reason"]
    assert not list((Path(_native._embedded.cache_root()) / "kernels").glob("*.so"))  # nothing half-written


def test_an_unwritable_cache_falls_back(tmp_path: Path, fresh_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PERSONA_SPACE_CACHE", str(blocker))  # its "kernels" folder cannot be made
    assert _native.kernels() is None
    assert "cannot write the kernel cache" in _native.native_state()["reason"]


def test_a_library_that_disagrees_is_not_used(fresh_build: None, monkeypatch: pytest.MonkeyPatch) -> None:
    honest = _native._compare

    def off_by_one(
        kernels: Any, dtype: torch.dtype, hd: int, groups: int
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        pairs = honest(kernels, dtype, hd, groups)
        got, want = pairs["silu_mul"]
        pairs["silu_mul"] = (got + 1, want)
        return pairs

    monkeypatch.setattr(_native, "_compare", off_by_one)
    assert _native.kernels() is None
    assert "silu_mul (head size 12, GQA group 1) disagrees" in _native.native_state()["reason"]


def test_the_build_is_cached_and_reused(fresh_build: None) -> None:
    assert _native.kernels() is not None
    built = list((Path(_native._embedded.cache_root()) / "kernels").glob("ps_kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    _native._load.cache_clear()
    assert _native.kernels() is not None
    assert built[0].stat().st_mtime_ns == stamp


def _greedy(model: Any, new: int = 6) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Greedy tokens from the engine (no stop tokens) and from the model's own full forward passes."""
    prompt = tuple(model.encode("Who are you?"))
    done: dict[int, Completion] = {}
    job = GenerateRequest(
        key=0, prompt_ids=prompt, adapter=None, temperature=0.0, top_p=1.0, max_new_tokens=new, seed=0
    )
    generate(
        DecoderStack(model.base_module),
        AdapterRouter(model.module),
        [job],
        slots=1,
        stop_ids=frozenset(),
        on_complete=lambda c: done.setdefault(c.key, c),
    )
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(new):
            ids.append(int(model.module(torch.tensor([ids])).logits[0, -1].argmax()))
    return done[0].token_ids, tuple(ids[len(prompt) :])


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_the_eager_fallback_still_matches_the_model(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_native.ENV, "0")
    engine, reference = _greedy(tiny_model)
    assert engine == reference


def test_a_model_the_kernels_do_not_implement_runs_eager(make_tiny_model_dir: Callable[..., Path]) -> None:
    model = ps.load_model(str(make_tiny_model_dir("llama", hidden_act="gelu")), device="cpu", dtype="float32")
    assert DecoderStack(model.base_module).native is None
    engine, reference = _greedy(model)
    assert engine == reference


def test_manifests_record_the_kernels_in_use(tiny_model: Any) -> None:
    samples = ps.sample(tiny_model, ["Who are you?"], n=1, max_new_tokens=2, progress=False, backend="cpu")
    recorded = samples.manifest["backend"]["native_kernels"]
    assert recorded["in_use"] is True and recorded["reason"] == "built and checked"
    assert "-O3" in recorded["flags"]
