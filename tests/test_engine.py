"""The generation engine: slot-based forward passes, continuous batching, per-sample randomness.

Greedy generation through :func:`generate` + :class:`DecoderStack` must equal the
model's own ``generate(do_sample=False)`` token for token, for every supported
architecture, whatever the slot count, refills and shared prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import persona_space as ps
from conftest import EOS_ID, MODEL_TYPES
from persona_space import provenance
from persona_space.engine import AdapterRouter, Completion, choose_tokens, uniforms
from persona_space.engine import GenerateRequest as Job
from persona_space.engine import common_prefix_length as _common_prefix_length
from persona_space.engine._cache import SlotCache
from persona_space.engine._slots import _prefill_groups, generate
from persona_space.engine._stack import DecoderStack
from persona_space.engine._streams import invert_cdf, nucleus_filter
from persona_space.errors import UnsupportedModelError

PROMPTS: list[Any] = [
    "Hi",
    "Who are you?",
    "What does an ordinary day look like for you, in a few words please?",
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And another one?"},
    ],
]
MAX_NEW = 10


def _reference_greedy(module: Any, prompt_ids: tuple[int, ...], max_new_tokens: int) -> tuple[int, ...]:
    """The model's own greedy answer, cut at the first end-of-sequence token."""
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = module.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=EOS_ID,
            pad_token_id=EOS_ID,
        )
    new = out[0, len(prompt_ids) :].tolist()
    return tuple(new[: new.index(EOS_ID)] if EOS_ID in new else new)


def _expected(reference: tuple[int, ...], limit: int) -> tuple[tuple[int, ...], str]:
    """What a greedy job with ``limit`` new tokens must produce, given the untruncated reference."""
    if len(reference) < limit:  # the reference stopped on EOS before the limit
        return reference, "stop"
    return reference[:limit], "length"


def _run(
    model: Any,
    jobs: list[Job],
    *,
    slots: int,
    prefix_len: int = 0,
    stop_ids: frozenset[int] = frozenset({EOS_ID}),
    prefill_tokens: int = 4096,
) -> dict[int, Completion]:
    done: dict[int, Completion] = {}

    def on_complete(c: Completion) -> None:
        assert c.key not in done, "a job completed twice"
        done[c.key] = c

    generate(
        DecoderStack(model.base_module),
        AdapterRouter(model.module),
        jobs,
        slots=slots,
        stop_ids=stop_ids,
        on_complete=on_complete,
        prefix_len=prefix_len,
        prefill_tokens=prefill_tokens,
    )
    assert sorted(done) == sorted(j.key for j in jobs)
    return done


def _greedy_jobs(prompts: list[tuple[int, ...]], adapters: list[str | None] = [None]) -> list[Job]:  # noqa: B006
    """Several jobs per prompt and adapter, with different lengths so slots free up at different steps."""
    jobs: list[Job] = []
    limits = [MAX_NEW, 3, 7, 1, 5]
    for adapter in adapters:
        for i, prompt in enumerate(prompts):
            for r in range(2):
                jobs.append(
                    Job(
                        key=len(jobs),
                        prompt_ids=prompt,
                        adapter=adapter,
                        temperature=0.0,
                        top_p=1.0,
                        max_new_tokens=limits[(i + 2 * r) % len(limits)],
                        seed=len(jobs),
                    )
                )
    return jobs


# -- greedy equality with transformers' generate -----------------------------------------------


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_greedy_engine_matches_transformers_generate(tiny_model: Any) -> None:
    prompts = [tuple(tiny_model.encode(p)) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == len(prompts), "prompts should have different lengths"
    reference = [_reference_greedy(tiny_model.module, p, MAX_NEW) for p in prompts]
    assert any(len(set(r)) > 2 for r in reference), "the tiny model should not just repeat one token"
    prefix = _common_prefix_length(prompts)
    assert prefix > 0
    jobs = _greedy_jobs(prompts)
    for slots in (3, 5):
        for prefix_len in (0, prefix):
            done = _run(tiny_model, jobs, slots=slots, prefix_len=prefix_len)
            for job in jobs:
                tokens, reason = _expected(reference[prompts.index(job.prompt_ids)], job.max_new_tokens)
                got = done[job.key]
                assert got.token_ids == tokens, (tiny_model.config.model_type, slots, prefix_len, job)
                assert got.finish_reason == reason


@pytest.mark.parametrize(
    ("tiny_model_dir", "extra"),
    [
        ("llama", ()),
        ("qwen3", ()),
        pytest.param(  # the tiny model ties its head to the embeddings: peft warns about adapting it
            "llama",
            ("lm_head",),
            marks=[
                pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`"),
                pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers` to `True`"),
            ],
        ),
    ],
    indirect=["tiny_model_dir"],
)
def test_greedy_engine_with_mixed_lora_adapters_matches_peft_generate(
    tiny_model_dir: Path, extra: tuple[str, ...], make_adapter: Callable[..., Path]
) -> None:
    """Base and two adapters in one batch; with ``lm_head`` adapted too, the head routes per prompt."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, str(make_adapter(tiny_model_dir, 11, extra)), adapter_name="a")
    peft_model.load_adapter(str(make_adapter(tiny_model_dir, 12, extra)), adapter_name="b")
    peft_model.eval()
    model.module = peft_model  # the engine only needs the module and the tokenizer

    prompts = [tuple(model.encode(p)) for p in PROMPTS[:3]]
    reference: dict[str | None, list[tuple[int, ...]]] = {}
    with peft_model.disable_adapter():
        reference[None] = [_reference_greedy(peft_model, p, MAX_NEW) for p in prompts]
    for name in ("a", "b"):
        peft_model.set_adapter(name)
        reference[name] = [_reference_greedy(peft_model, p, MAX_NEW) for p in prompts]
    assert reference["a"] != reference[None] and reference["b"] != reference[None] and reference["a"] != reference["b"]

    jobs = _greedy_jobs(prompts, adapters=[None, "a", "b"])
    done = _run(model, jobs, slots=4, prefix_len=_common_prefix_length(prompts))
    for job in jobs:
        tokens, reason = _expected(reference[job.adapter][prompts.index(job.prompt_ids)], job.max_new_tokens)
        assert done[job.key].token_ids == tokens, job
        assert done[job.key].finish_reason == reason


def _padded_prompts(model: Any) -> tuple[list[tuple[int, ...]], torch.Tensor, torch.Tensor]:
    """Three chat prompts, right-padded into one batch, and their lengths."""
    prompts = [tuple(model.encode(p)) for p in PROMPTS[:3]]
    tokens = torch.zeros((len(prompts), max(len(p) for p in prompts)), dtype=torch.long)
    for r, p in enumerate(prompts):
        tokens[r, : len(p)] = torch.tensor(p)
    return prompts, tokens, torch.tensor([len(p) for p in prompts])


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_prefill_and_decode_logits_match_the_model_forward(tiny_model: Any) -> None:
    stack = DecoderStack(tiny_model.base_module)
    prompts, tokens, lengths = _padded_prompts(tiny_model)
    width = tokens.shape[1]
    cache = stack.allocate(len(prompts), width + 2)
    rows = torch.arange(len(prompts))
    with torch.inference_mode():
        logits = stack.logits(stack.prefill(cache, tokens, lengths, rows, rows))
        assert logits.dtype == torch.float32 and logits.shape == (len(prompts), len(tiny_model.tokenizer))
        nxt = logits.argmax(-1)
        step = stack.decode(cache, nxt, lengths)
        for r, p in enumerate(prompts):
            full = tiny_model.module(torch.tensor([(*p, int(nxt[r]))])).logits[0]
            torch.testing.assert_close(logits[r], full[-2], atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(step[r], full[-1], atol=2e-4, rtol=1e-4)


def test_head_dim_other_than_hidden_over_heads(make_tiny_model_dir: Callable[..., Path]) -> None:
    model = ps.load_model(str(make_tiny_model_dir("qwen3", head_dim=32)), device="cpu", dtype="float32")
    assert DecoderStack(model.base_module).head_dim == 32 != model.config.hidden_size // 4
    prompts = [tuple(model.encode(p)) for p in PROMPTS[:3]]
    reference = [_reference_greedy(model.module, p, MAX_NEW) for p in prompts]
    jobs = _greedy_jobs(prompts)
    done = _run(model, jobs, slots=3, prefix_len=_common_prefix_length(prompts))
    for job in jobs:
        tokens, reason = _expected(reference[prompts.index(job.prompt_ids)], job.max_new_tokens)
        assert done[job.key].token_ids == tokens and done[job.key].finish_reason == reason


# -- sampling through the engine is independent of batching --------------------------------------


def _sampling_jobs(prompts: list[tuple[int, ...]]) -> list[Job]:
    jobs = []
    for i in range(12):
        jobs.append(
            Job(
                key=i,
                prompt_ids=prompts[i % len(prompts)],
                adapter=None,
                temperature=(0.7, 1.0, 1.3)[i % 3],
                top_p=(1.0, 0.9)[i % 2],
                max_new_tokens=3 + i % 5,
                seed=1_000_003 * i + 17,
            )
        )
    return jobs


def test_sampled_completions_do_not_depend_on_slots_order_or_prefix(tiny_model: Any) -> None:
    prompts = [tuple(tiny_model.encode(p)) for p in PROMPTS[:3]]
    jobs = _sampling_jobs(prompts)
    reference = _run(tiny_model, jobs, slots=1)
    assert len({c.token_ids for c in reference.values()}) == len(jobs)
    # The queue in the opposite order (keys are positions in the job list, so renumber them).
    flipped = [replace(job, key=len(jobs) - 1 - job.key) for job in reversed(jobs)]
    flipped_done = _run(tiny_model, flipped, slots=16)
    variants = [
        _run(tiny_model, jobs, slots=4),
        {len(jobs) - 1 - k: replace(c, key=len(jobs) - 1 - k) for k, c in flipped_done.items()},
        _run(tiny_model, jobs, slots=5, prefix_len=_common_prefix_length(prompts)),
        _run(tiny_model, jobs, slots=12, prefill_tokens=40),  # prefill in several small groups
    ]
    for done in variants:
        assert done == reference


def test_generate_honours_job_keys_or_refuses_them(tiny_model: Any) -> None:
    prompts = [tuple(tiny_model.encode(p)) for p in PROMPTS[:3]]
    jobs = _sampling_jobs(prompts)
    reference = _run(tiny_model, jobs, slots=4)
    try:
        flipped = _run(tiny_model, list(reversed(jobs)), slots=4)
    except ValueError:
        return  # refusing keys that are not positions is fine too
    assert flipped == reference


def test_different_seeds_give_different_samples(tiny_model: Any) -> None:
    prompt = tuple(tiny_model.encode("Who are you?"))
    jobs = [Job(k, prompt, None, 1.0, 1.0, 6, seed=k) for k in range(6)]
    again = [Job(k, prompt, None, 1.0, 1.0, 6, seed=k) for k in range(6)]
    first, second = _run(tiny_model, jobs, slots=6), _run(tiny_model, again, slots=2)
    assert first == second
    assert len({c.token_ids for c in first.values()}) == 6


def test_stop_ids_end_a_job_and_empty_stop_ids_run_to_the_limit(tiny_model: Any) -> None:
    prompt = tuple(tiny_model.encode("Who are you?"))
    greedy = _run(tiny_model, [Job(0, prompt, None, 0.0, 1.0, 6, 0)], slots=1)[0]
    assert greedy.finish_reason == "length" and len(greedy.token_ids) == 6
    # Treat the third greedy token as a stop token: the job ends before it.
    stop = greedy.token_ids[2]
    cut = _run(tiny_model, [Job(0, prompt, None, 0.0, 1.0, 6, 0)], slots=1, stop_ids=frozenset({stop}))[0]
    first_stop = greedy.token_ids.index(stop)
    assert cut.token_ids == greedy.token_ids[:first_stop]
    assert cut.finish_reason == "stop"
    # A stop token as the very first pick gives an empty completion.
    first = greedy.token_ids[0]
    empty = _run(tiny_model, [Job(0, prompt, None, 0.0, 1.0, 6, 0)], slots=1, stop_ids=frozenset({first}))[0]
    assert empty == Completion(key=0, token_ids=(), finish_reason="stop")


def test_generate_with_no_jobs_calls_nothing(tiny_model: Any) -> None:
    calls: list[Completion] = []
    generate(
        DecoderStack(tiny_model.base_module),
        AdapterRouter(tiny_model.module),
        [],
        slots=4,
        stop_ids=frozenset({EOS_ID}),
        on_complete=calls.append,
    )
    assert calls == []


def test_prefix_longer_than_a_prompt_is_refused(tiny_model: Any) -> None:
    short = tuple(tiny_model.encode("Hi"))
    jobs = [Job(0, short, None, 0.0, 1.0, 2, 0)]
    with pytest.raises(ValueError, match="shared prefix"):
        _run(tiny_model, jobs, slots=1, prefix_len=len(short))


def test_unsupported_architecture_is_refused() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    module = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        DecoderStack(module)


def test_sliding_window_shorter_than_the_sequence_is_refused() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
    )
    stack = DecoderStack(MistralForCausalLM(config))
    assert stack.sliding_window == 8
    stack.allocate(2, 8)
    with pytest.raises(UnsupportedModelError, match="sliding attention window of 8"):
        stack.allocate(2, 9)


def test_slot_cache_grows_in_blocks_up_to_its_limit() -> None:
    original = torch.arange(2 * 1 * 4 * 2, dtype=torch.float32).view(2, 1, 4, 2)
    cache = SlotCache(keys=[original], values=[original.clone()], limit=10, block=4)
    cache.ensure(3)
    assert cache.capacity == 4
    cache.ensure(5)
    assert cache.capacity == 8
    torch.testing.assert_close(cache.keys[0][:, :, :4], original)
    assert bool((cache.keys[0][:, :, 4:] == 0).all())
    cache.ensure(10)
    assert cache.capacity == 10
    with pytest.raises(ValueError, match="exceeds the cache limit"):
        cache.ensure(11)
    cache.move(torch.tensor([0]), torch.tensor([1]))
    torch.testing.assert_close(cache.keys[0][0], cache.keys[0][1])


# -- random numbers and token choice ----------------------------------------------------------


def test_uniforms_are_in_unit_interval_and_deterministic() -> None:
    seeds = np.array([0, 1, 2**63, 2**64 - 1] * 25_000, dtype=np.uint64)
    steps = np.repeat(np.arange(25_000, dtype=np.int64), 4)
    u = uniforms(seeds, steps)
    assert u.dtype == np.float64 and u.shape == seeds.shape
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    np.testing.assert_array_equal(u, uniforms(seeds.copy(), steps.copy()))
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(u.var()) - 1 / 12) < 0.005
    # Streams of neighbouring seeds, and neighbouring steps of one stream, are uncorrelated.
    per_seed = u.reshape(-1, 4)
    for a in range(4):
        for b in range(a + 1, 4):
            assert abs(np.corrcoef(per_seed[:, a], per_seed[:, b])[0, 1]) < 0.03
    stream = per_seed[:, 1]
    assert abs(np.corrcoef(stream[:-1], stream[1:])[0, 1]) < 0.03
    # One (seed, step) pair always gives the same number, whatever else is in the batch.
    assert uniforms(np.array([2**63], dtype=np.uint64), np.array([7]))[0] == u[7 * 4 + 2]
    assert (
        uniforms(np.array([5], dtype=np.uint64), np.array([0]))[0]
        != uniforms(np.array([6], dtype=np.uint64), np.array([0]))[0]
    )


SUPPORT = [3, 255, 256, 400, 599]  # spans three blocks of 256, and a partial last block
SUPPORT_LOGITS = [2.0, 1.0, 0.5, 0.0, -1.0]


def _support_logits(rows: int, vocab: int = 600) -> torch.Tensor:
    logits = torch.full((rows, vocab), float("-inf"))
    logits[:, SUPPORT] = torch.tensor(SUPPORT_LOGITS)
    return logits


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_choose_tokens_greedy_rows_are_argmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 700)
    temps = np.array([0.0, 0.7, 0.0, 1.0, 0.0, 1.5])
    top_ps = np.array([1.0, 1.0, 0.9, 0.5, 1.0, 0.9])
    seeds = np.arange(6, dtype=np.uint64)
    steps = np.zeros(6, dtype=np.int64)
    out = choose_tokens(logits, temps, top_ps, seeds, steps)
    argmax = logits.argmax(-1).numpy()
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out[[0, 2, 4]], argmax[[0, 2, 4]])
    all_greedy = choose_tokens(logits, np.zeros(6), top_ps, seeds, steps)
    np.testing.assert_array_equal(all_greedy, argmax)


def test_tiny_positive_temperature_behaves_like_greedy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 300) * 5
    seeds = np.arange(4, dtype=np.uint64)
    picks = choose_tokens(logits, np.full(4, 1e-40), np.ones(4), seeds, np.zeros(4, dtype=np.int64))
    np.testing.assert_array_equal(picks, logits.argmax(-1).numpy())


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_frequencies_match_softmax(temperature: float) -> None:
    rows = 10_000
    logits = _support_logits(rows)
    seeds = (np.arange(rows, dtype=np.uint64) * np.uint64(2_654_435_761)) + np.uint64(2**63)
    steps = np.full(rows, 3, dtype=np.int64)
    picks = choose_tokens(logits, np.full(rows, temperature), np.ones(rows), seeds, steps)
    assert set(np.unique(picks)) <= set(SUPPORT)  # zero-probability tokens are never chosen
    counts = np.array([(picks == t).sum() for t in SUPPORT])
    probs = torch.softmax(torch.tensor(SUPPORT_LOGITS) / temperature, dim=0).numpy()
    assert _chi_square(counts, probs) < 25.0  # 4 degrees of freedom: p < 1e-4 by chance
    # The picks are a pure function of the inputs.
    np.testing.assert_array_equal(
        picks, choose_tokens(logits, np.full(rows, temperature), np.ones(rows), seeds.copy(), steps)
    )


def test_top_p_keeps_only_the_nucleus() -> None:
    rows = 10_000
    logits = _support_logits(rows)
    probs = torch.softmax(torch.tensor(SUPPORT_LOGITS), dim=0).numpy()  # 0.563, 0.207, 0.126, 0.076, 0.028
    seeds = np.arange(rows, dtype=np.uint64)
    steps = np.zeros(rows, dtype=np.int64)
    # Mass before the 3rd token is 0.770 < 0.8, before the 4th 0.896: the nucleus is the first three.
    picks = choose_tokens(logits, np.ones(rows), np.full(rows, 0.8), seeds, steps)
    assert set(np.unique(picks)) == set(SUPPORT[:3])
    counts = np.array([(picks == t).sum() for t in SUPPORT[:3]])
    assert _chi_square(counts, probs[:3] / probs[:3].sum()) < 25.0
    # A nucleus of one token is greedy.
    tight = choose_tokens(logits, np.ones(rows), np.full(rows, 0.5), seeds, steps)
    assert set(np.unique(tight)) == {SUPPORT[0]}


def test_choose_tokens_row_does_not_depend_on_the_rest_of_the_batch() -> None:
    torch.manual_seed(1)
    logits = torch.randn(9, 1000) * 3
    temps = np.array([0.0, 0.5, 1.0, 1.5, 0.7, 1.0, 0.0, 2.0, 1.0])
    top_ps = np.array([1.0, 1.0, 0.9, 1.0, 0.5, 0.95, 0.3, 1.0, 0.99])
    seeds = np.array([11, 22, 33, 44, 55, 66, 77, 88, 2**64 - 1], dtype=np.uint64)
    steps = np.arange(9, dtype=np.int64)
    together = choose_tokens(logits, temps, top_ps, seeds, steps)
    for r in range(9):
        alone = choose_tokens(
            logits[r : r + 1], temps[r : r + 1], top_ps[r : r + 1], seeds[r : r + 1], steps[r : r + 1]
        )
        assert alone[0] == together[r]


def test_invert_cdf_matches_a_float64_search_and_never_picks_zero_probability() -> None:
    gen = torch.Generator().manual_seed(3)
    rows, vocab = 400, 1000  # not a multiple of the block size
    probs = torch.rand((rows, vocab), generator=gen)
    probs[torch.rand((rows, vocab), generator=gen) < 0.9] = 0.0  # sparse rows
    probs[::4, 256:512] = 0.0  # a whole empty block in some rows
    probs[1::7] = 0.0
    probs[1::7, 255] = 0.3  # mass only on block edges
    probs[1::7, 512] = 0.7
    probs[2::9] = 0.0
    probs[2::9, vocab - 1] = 1.0  # mass only on the last token
    u = torch.rand(rows, generator=gen, dtype=torch.float64)
    u[:20] = 0.0
    u[20:40] = 1.0 - 2.0**-53  # the largest uniform below 1
    idx = invert_cdf(probs, u)
    assert idx.shape == (rows,)
    chosen = probs[torch.arange(rows), idx]
    assert bool((chosen > 0).all())
    cdf = probs.double().cumsum(-1).numpy()
    for r in range(40, rows):
        expected = int(np.searchsorted(cdf[r], u[r].item() * cdf[r, -1], side="right"))
        assert int(idx[r]) == expected, r


def test_invert_cdf_tiny_entries_and_rounding_at_the_top() -> None:
    # Lots of tiny entries make the float32 block sums differ from float64 running sums.
    probs = torch.full((64, 300), 1e-9)
    probs[:, 0] = 0.0
    probs[:, 299] = 0.0
    probs[:, 150] = 1.0
    u = torch.linspace(0.0, 1.0 - 2.0**-53, 64, dtype=torch.float64)
    idx = invert_cdf(probs, u, block=64)
    assert bool((probs[torch.arange(64), idx] > 0).all())
    assert int(idx[0]) == 1 and int(idx[-1]) == 298


def test_nucleus_filter_without_and_with_full_sort() -> None:
    peaked = torch.tensor([0.9] + [0.1 / 99] * 99)
    uniform = torch.full((100,), 0.01)
    probs = torch.stack([peaked, uniform])
    limits = torch.tensor([0.5, 0.555])
    # first=64 covers both nuclei: only the top 64 are looked at.
    kept, order = nucleus_filter(probs, limits, first=64)
    assert kept.shape == order.shape == (2, 64)
    assert (kept[0] > 0).sum() == 1 and int(order[0, 0]) == 0
    assert (kept[1] > 0).sum() == 56  # mass before token j is 0.01 j < 0.555 for j <= 55
    # first=10 is too few for the uniform row's nucleus: every row is sorted in full.
    kept, order = nucleus_filter(probs, limits, first=10)
    assert kept.shape == order.shape == (2, 100)
    assert (kept[0] > 0).sum() == 1
    assert (kept[1] > 0).sum() == 56
    assert sorted(order[1].tolist()) == list(range(100))
    nz = kept > 0
    torch.testing.assert_close(kept[nz], probs.gather(1, order)[nz])
    assert bool((kept[:, :-1] >= kept[:, 1:]).all())  # sorted descending


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_prepacked_linears_match_the_plain_ones(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """On CPU the engine multiplies through prepacked weights, q/k/v and gate/up fused; results match F.linear."""
    isa = provenance.cpu()["isa"]
    if dtype == "bfloat16" and not provenance.cpu()["fast_bf16"]:
        pytest.skip(f"oneDNN prepacks bf16 weights only on CPUs with AVX-512 BF16 or AMX; this one has {isa}")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype=dtype)
    prompts, tokens, lengths = _padded_prompts(model)
    width = tokens.shape[1]
    rows = torch.arange(len(prompts))

    def run(invariant: bool) -> tuple[DecoderStack, torch.Tensor, torch.Tensor]:
        stack = DecoderStack(model.base_module, invariant=invariant)
        cache = stack.allocate(len(prompts), width + 2)
        with torch.inference_mode():
            first = stack.logits(stack.prefill(cache, tokens, lengths, rows, rows))
            second = stack.decode(cache, first.argmax(-1), lengths)
        return stack, first, second

    tolerance = {"atol": 0.1, "rtol": 0.02} if dtype == "bfloat16" else {"atol": 1e-4, "rtol": 1e-4}
    for invariant in (True, False):
        monkeypatch.delenv("PERSONA_SPACE_PACKED_LINEAR", raising=False)
        packed_stack, packed_first, packed_second = run(invariant)
        monkeypatch.setenv("PERSONA_SPACE_PACKED_LINEAR", "0")
        plain_stack, plain_first, plain_second = run(invariant)
        monkeypatch.delenv("PERSONA_SPACE_PACKED_LINEAR")
        tight = DecoderStack(model.base_module, pack_limit=1024, invariant=invariant)  # the copies would not fit
        n_layers = len(plain_stack.layers)
        if invariant and packed_stack.plan is not None:
            assert plain_stack.plan is not None and tight.plan is not None
            packed_layers, plain_layers = packed_stack.plan.layers, plain_stack.plan.layers
            assert all(len(lp.qkv) == 1 and len(lp.gate_up) == 1 and lp.o.base.packed for lp in packed_layers)
            assert all(len(lp.qkv) == 3 and len(lp.gate_up) == 2 and not lp.o.base.packed for lp in plain_layers)
            assert not any(lp.down.base.packed for lp in tight.plan.layers) and not tight.plan.head.base.packed
        elif not invariant:
            assert len(packed_stack.packed) == 1 + 2 * n_layers and plain_stack.packed == {}  # lm_head, o, down
            assert all(g.fused is not None for g in (*packed_stack.qkv, *packed_stack.gate_up))
            assert all(g.fused is None for g in (*plain_stack.qkv, *plain_stack.gate_up))
            assert tight.packed == {} and all(g.fused is None for g in (*tight.qkv, *tight.gate_up))
        # The products differ only in rounding: the same argmax, logits within the dtype's precision.
        assert torch.equal(packed_first.argmax(-1), plain_first.argmax(-1))
        torch.testing.assert_close(packed_first, plain_first, **tolerance)
        torch.testing.assert_close(packed_second, plain_second, **tolerance)


def test_lora_wrapped_projections_are_neither_fused_nor_packed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """On the earlier path a projection a LoRA wraps keeps its own forward, and so does the rest of its group;
    on the row-invariant path its base weight is fused and packed like the others, its term added after."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(tmp_path / "q_only"))
    model = ps.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    model.load_adapter(tmp_path / "q_only", name="q")
    invariant = DecoderStack(model.base_module)  # the row-invariant path packs the wrapped layer's base weight
    if invariant.plan is not None:
        assert all(len(lp.qkv) == 1 and set(lp.qkv[0].terms) == {"q"} for lp in invariant.plan.layers)
        assert all(not lp.o.terms and not lp.gate_up[0].terms for lp in invariant.plan.layers)
        assert {lp.qkv[0].terms["q"].spans for lp in invariant.plan.layers} == {
            ((0, invariant.n_heads * invariant.head_dim),)
        }
    stack = DecoderStack(model.base_module, invariant=False)
    assert all(group.fused is None for group in stack.qkv)  # q is wrapped: k and v run alone too
    assert all(group.fused is not None for group in stack.gate_up)
    q_ids = {id(layer.self_attn.q_proj) for layer in stack.layers}
    kv_ids = {id(getattr(layer.self_attn, n)) for layer in stack.layers for n in ("k_proj", "v_proj", "o_proj")}
    assert not q_ids & set(stack.packed) and kv_ids <= set(stack.packed)


def test_prefill_groups_keep_padding_small_and_cover_every_job_in_order() -> None:
    """Prompts sorted by length are cut into prefill batches of similar lengths within the token budget."""
    lengths = [12] * 30 + [14] * 20 + [20] * 15 + [40] * 10 + [41]
    jobs = [Job(i, (7, 7, *range(i, i + n - 2)), None, 1.0, 1.0, 8, i) for i, n in enumerate(lengths)]
    groups = list(_prefill_groups(jobs, 4096, 2))
    assert [j for _, group in groups for j in group] == jobs  # every job once, in order
    assert [start for start, _ in groups] == list(np.cumsum([0] + [len(g) for _, g in groups[:-1]]))
    for _, group in groups:
        suffix = [len(j.prompt_ids) - 2 for j in group]
        assert len(group) * max(suffix) <= 4096
        assert len(group) * max(suffix) <= 1.15 * sum(suffix) or sum(suffix[:-1]) < 256
    assert len(groups) > 1
    # One padded batch when the lengths are equal; the budget alone cuts it.
    same = [Job(i, tuple(range(i, i + 10)), None, 1.0, 1.0, 8, i) for i in range(50)]
    assert [len(g) for _, g in _prefill_groups(same, 200)] == [20, 20, 10]
