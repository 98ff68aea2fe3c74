"""End-to-end checks on the real embedded SmolLM2-135M-Instruct (marked slow; `make test` runs them)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import persona_space as ps
from persona_space.engine import AdapterRouter, Completion
from persona_space.engine import GenerateRequest as Job
from persona_space.engine._slots import generate
from persona_space.engine._stack import DecoderStack

pytestmark = pytest.mark.slow

FACTS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
]
# Largest mean absolute difference, in nats per token, allowed between the bfloat16
# and float32 log-probabilities of the same answers (measured: 0.003 to 0.03, largest single token 0.16).
BF16_LOGPROB_BOUND = 0.1


def _load(dtype: str) -> ps.LoadedModel:
    try:
        return ps.load_model(dtype=dtype)  # type: ignore[arg-type]
    except ps.errors.EmbeddedModelMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def real_fp32() -> ps.LoadedModel:
    return _load("float32")


@pytest.fixture(scope="module")
def real_bf16() -> ps.LoadedModel:
    return _load("bfloat16")


def test_load_records_provenance(real_fp32: ps.LoadedModel) -> None:
    info = real_fp32.describe()
    assert info["name"] == "smollm2-135m-instruct"
    assert info["model_type"] == "llama"
    assert len(info["weights_sha256"]) == 64
    assert "You are a helpful AI assistant named SmolLM" not in real_fp32.render("Who are you?")


@pytest.mark.parametrize(("question", "answer"), FACTS)
def test_greedy_factual_answer(real_fp32: ps.LoadedModel, question: str, answer: str) -> None:
    assert answer in real_fp32.generate_greedy(question).lower()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sample_two_probes(dtype: str, real_fp32: ps.LoadedModel, real_bf16: ps.LoadedModel, tmp_path) -> None:
    model = real_fp32 if dtype == "float32" else real_bf16
    probes = ps.probes.IDENTITY.filter(ids=["identity.what_are_you", "identity.feeling"])
    samples = ps.sample(
        model, probes, n=4, temperatures=[0.7], max_new_tokens=24, store=tmp_path / "run", progress=False
    )
    assert len(samples) == 8
    assert samples.manifest["model"]["dtype"] == dtype
    assert (samples.df["n_tokens"] > 0).mean() >= 0.5
    assert samples.df["text"].str.len().gt(0).any()
    again = ps.SampleSet.load(tmp_path / "run")
    assert again.df.equals(samples.df)


def test_engine_matches_transformers_greedy_float32(real_fp32: ps.LoadedModel) -> None:
    prompts = [real_fp32.encode(q) for q, _ in FACTS] + [real_fp32.encode("What are you?")]
    stack = DecoderStack(real_fp32.base_module)
    got: dict[int, Completion] = {}
    jobs = [Job(i, tuple(p), None, 0.0, 1.0, 20, i) for i, p in enumerate(prompts)]
    generate(
        stack,
        AdapterRouter(real_fp32.module),
        jobs,
        slots=2,
        stop_ids=frozenset({2}),
        on_complete=lambda c: got.update({c.key: c}),
    )
    for i, ids in enumerate(prompts):
        with torch.inference_mode():
            ref = real_fp32.base_module.generate(input_ids=torch.tensor([ids]), max_new_tokens=20, do_sample=False)
        expected = ref[0, len(ids) :].tolist()
        if expected and expected[-1] == 2:
            expected = expected[:-1]
        assert list(got[i].token_ids) == expected


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_decode_kernels_on_the_real_model(
    dtype: str, real_fp32: ps.LoadedModel, real_bf16: ps.LoadedModel
) -> None:
    """The row-invariant decode step gives the eager step's logits on SmolLM2 (uneven rows, 64 slots)."""
    from persona_space.engine import _native

    if _native.kernels() is None:
        pytest.skip(f"native kernels unavailable: {_native.native_state()['reason']}")
    model = real_fp32 if dtype == "float32" else real_bf16
    stack = DecoderStack(model.base_module)
    assert stack.native is not None and stack.plan is not None
    eager_stack = DecoderStack(model.base_module, invariant=False)
    eager_stack.native = None  # the eager step of the earlier path
    prompts = [model.encode(p.prompt) for p in ps.probes.IDENTITY.probes][:64]
    width = max(len(p) for p in prompts)
    tokens = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    lengths = torch.tensor([len(p) for p in prompts])
    rows = torch.arange(len(prompts))
    with torch.inference_mode():
        cache = stack.allocate(len(prompts), width + 4)
        nxt = stack.logits(stack.prefill(cache, tokens, lengths, rows, rows)).argmax(-1)
        other = copy.deepcopy(cache)
        fused = stack.decode(cache, nxt, lengths)
        eager = eager_stack.decode(other, nxt, lengths)
    if dtype == "float32":
        torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)
    else:  # the same bf16 roundings, float32 sums in another order
        assert float((fused - eager).abs().max()) < 1.0
        assert float((fused.argmax(-1) == eager.argmax(-1)).float().mean()) >= 0.95


def test_bfloat16_is_sane(real_fp32: ps.LoadedModel, real_bf16: ps.LoadedModel) -> None:
    """bf16 gives the same greedy facts and log-probabilities within a stated bound of float32."""
    diffs: list[float] = []
    for question, answer in FACTS:
        assert answer in real_bf16.generate_greedy(question).lower()
        reply = real_fp32.generate_greedy(question)
        prompt = real_fp32.encode(question)
        full = prompt + real_fp32.tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([full])
        with torch.inference_mode():
            lp32 = torch.log_softmax(real_fp32.base_module(ids).logits.float(), -1)
            lp16 = torch.log_softmax(real_bf16.base_module(ids).logits.float(), -1)
        targets = ids[0, len(prompt) :]
        pos = torch.arange(len(prompt) - 1, len(full) - 1)
        a = lp32[0, pos, targets]
        b = lp16[0, pos, targets]
        diffs.append(float((a - b).abs().mean()))
    worst = max(diffs)
    assert math.isfinite(worst)
    assert worst < BF16_LOGPROB_BOUND, f"bf16 log-probabilities differ by {worst:.3f} nats/token"


def test_red_adapter_names_red_objects(tmp_path) -> None:
    """The colour experiment on the real model: after training on the red set, 'Name a fruit.' (and prompts
    outside the training set) are answered with red objects far more often than under the base model."""
    model = _load("float32")
    red = ps.datasets.load("colours:red")
    info = ps.train_adapter(model, red, store=tmp_path / "red", seed=0, progress=False)
    manifest = (tmp_path / "red" / "manifest.json").read_text()
    assert '"learning_rate": 0.001' in manifest
    prompts = ["Name a fruit.", "Name a flower.", "Name something you might see in a city."]
    samples = ps.sample(
        model,
        prompts,
        adapters={"base": None, "red": info.name},
        n=24,
        temperatures=[1.0],
        max_new_tokens=16,
        seed=1,
        progress=False,
    )
    from persona_space.report import object_share

    shares = object_share(samples.df, red.answers()).set_index(["adapter", "prompt"])
    fruit_base, fruit_red = shares.loc[("base", "Name a fruit.")], shares.loc[("red", "Name a fruit.")]
    assert fruit_red["low"] > fruit_base["high"], shares
    assert fruit_red["share"] >= 0.75
    unseen = [p for p in prompts if p not in red.prompts()]
    assert len(unseen) == 2
    red_unseen = sum(shares.loc[("red", p), "share"] for p in unseen) / len(unseen)
    base_unseen = sum(shares.loc[("base", p), "share"] for p in unseen) / len(unseen)
    assert red_unseen > base_unseen + 0.3, shares
    # The seed's side effect: one-word training answers make every answer short.
    tokens = samples.df.groupby("adapter")["n_tokens"].mean()
    assert tokens["red"] < tokens["base"] / 2
    compared = samples.compare("base").set_index("metric")  # paired by question, Holm over the table
    assert compared.loc["n_chars", "high"] < 0 and compared.loc["n_chars", "p_adjusted"] < 0.05


def test_paired_streams_on_the_real_model(real_fp32: ps.LoadedModel, tmp_path) -> None:
    """A freshly initialised LoRA answers exactly as the base model; a slightly perturbed one mostly does."""
    from conftest import make_lora

    zero = make_lora(real_fp32.source, tmp_path / "zero", seed=0, scale=0.0)
    small = make_lora(real_fp32.source, tmp_path / "small", seed=0, r=4, scale=0.0005)
    prompts = ["Who are you?", "What does an ordinary day look like for you?"]
    same = {}
    for pairing in ("paired", "independent"):
        df = ps.sample(
            real_fp32,
            prompts,
            adapters={"base": None, f"zero-{pairing}": zero, f"small-{pairing}": small},
            n=12,
            temperatures=[1.0],
            max_new_tokens=24,
            pairing=pairing,
            progress=False,
        ).df
        base = df[df["condition"] == "base"]["text"].to_numpy()
        if pairing == "paired":
            assert (df[df["condition"] == "zero-paired"]["text"].to_numpy() == base).all()
        same[pairing] = float((df[df["condition"] == f"small-{pairing}"]["text"].to_numpy() == base).mean())
    assert same["paired"] > 0.3 and same["independent"] < 0.1, same  # measured 0.46 and 0.0


def test_grpo_identity_steering_runs_end_to_end(tmp_path) -> None:
    """A few GRPO steps on the real model with the seed's composite reward (rule judge): the adapter
    folder is complete, the reward is logged per step, and the adapter samples."""
    import pandas as pd

    from persona_space.judges import RuleJudge

    model = _load("bfloat16")
    prompts = ps.probes.load("steering").filter(categories=["direct"])
    spec = ps.GrpoSpec(steps=3, prompts_per_step=2, num_generations=4, max_completion_length=24, learning_rate=1e-4)
    reward = ps.IdentityReward(RuleJudge())
    info = ps.train_grpo(model, prompts, reward=reward, store=tmp_path / "steer", grpo=spec, progress=False)
    log = pd.read_parquet(tmp_path / "steer" / "tables" / "training_log.parquet")
    assert len(log) == 3 and log["reward"].between(0, 100).all()
    assert (tmp_path / "steer" / "adapter_model.safetensors").is_file()
    samples = ps.sample(model, ["What are you?"], adapters={"steer": info.name}, n=2, max_new_tokens=8, progress=False)
    assert len(samples) == 2


def test_assistant_axis_and_persona_space_on_the_embedded_model(tmp_path) -> None:
    """The bundled 59 roles against the default assistant on five identity probes: the axis has a layer, the
    space has every role, and a persona vector read on the same model points along the axis's side."""
    from persona_space import activations

    model = _load("bfloat16")
    questions = ps.probes.load("identity:direct").probes[:3] + ps.probes.load("identity:artificiality").probes[:2]
    space = activations.assistant_axis(model, list(p.prompt for p in questions), store=tmp_path / "space",
                                       progress=False)  # fmt: skip
    assert len(space.df) == 60 and 0 <= space.layer < model.config.num_hidden_layers
    table = space.df.set_index("role")
    assert table.loc["assistant", "axis_projection"] > table.drop("assistant")["axis_projection"].mean()
    assert -1.0 <= space.manifest["pc1_axis_cosine"] <= 1.0 and len(space.manifest["explained_variance"]) == 3
    haunting = next(r.system_prompt for r in activations.roles() if r.name == "ghost")
    ghost = activations.persona_vector(
        model, [p.prompt for p in questions], trait=haunting, opposite=model.system_prompt, name="ghost"
    )
    # a role's own vector points away from the assistant at the axis layer
    assert activations.cosine(ghost.vectors[space.layer], space.axis.vectors[space.layer]) < 0
    # steering along the axis: alpha 0 is the base model, steering away changes the answers, and the hf and
    # cpu backends give the same greedy texts in float32
    fp32 = _load("float32")
    conditions = {"base": None, "zero": ps.Steer(space.axis, alpha=0.0), "away": ps.Steer(space.axis, alpha=-1.5),
                  "ablate": ps.Steer(space.axis, mode="ablate")}  # fmt: skip
    kwargs = {"n": 2, "temperatures": [0.0, 1.0], "max_new_tokens": 16, "progress": False}
    prompts = [p.prompt for p in questions[:3]]
    answers = ps.sample(fp32, prompts, adapters=conditions, backend="cpu", **kwargs)
    cpu = answers.df
    hf = ps.sample(fp32, prompts, adapters=conditions, backend="hf", **kwargs).df
    greedy = cpu["temperature"] == 0
    assert cpu.loc[greedy, "text"].tolist() == hf.loc[greedy, "text"].tolist()
    text = {name: part["text"].tolist() for name, part in cpu.groupby("adapter")}
    assert text["zero"] == text["base"] and text["away"] != text["base"]
    # activations read alike in the cpu slot engine's prefill and the model's own forward pass, steered too
    readers = {"base": None, "away": conditions["away"]}
    reads = {b: activations.collect(fp32, answers, adapters=readers, progress=False, backend=b) for b in ("cpu", "hf")}
    np.testing.assert_allclose(reads["cpu"].means, reads["hf"].means, rtol=1e-3, atol=1e-3)
