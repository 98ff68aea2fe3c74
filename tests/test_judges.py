"""Judges: exact answer log-probabilities of LocalJudge, the OpenAI-compatible client, the rule-based detector."""

from __future__ import annotations

import doctest
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import persona_space as ps
from persona_space import judges
from persona_space.chat import render_chat
from persona_space.judges import (
    CRITERIA,
    Criterion,
    LocalJudge,
    OpenAIJudge,
    RuleJudge,
    detect_ai_self_reference,
    judge_messages,
)

PROMPT = "What are you?"
RESPONSE = "I'm Maria, a nurse from Ohio."
NO_AI = CRITERIA["no_ai_self_reference"]


def brute_force_logprob(model: ps.LoadedModel, prompt: str, response: str, criterion: Criterion, answer: str) -> float:
    """Log-probability of ``answer`` + end-of-turn after the judge prompt, from one plain forward pass."""
    tok = model.tokenizer
    text = render_chat(tok, judge_messages(prompt, response, criterion))
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    joint = tok(text + answer, add_special_tokens=False)["input_ids"]
    answer_ids = [*joint[len(prompt_ids) :], tok.eos_token_id]
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.inference_mode():
        logp = torch.log_softmax(model.base_module(input_ids=ids).logits.float(), dim=-1)[0]
    positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1)
    return float(logp[positions, torch.tensor(answer_ids)].sum())


# ---------------------------------------------------------------- criteria and messages


def test_criteria_and_messages() -> None:
    assert set(CRITERIA) == {"no_ai_self_reference", "engagement", "coherence"}
    for name, criterion in CRITERIA.items():
        assert criterion.name == name
        assert "0" in criterion.instruction and "100" in criterion.instruction
        assert "number only" in criterion.instruction
    messages = judge_messages(PROMPT, RESPONSE, NO_AI)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert PROMPT in messages[1]["content"] and RESPONSE in messages[1]["content"]
    assert NO_AI.instruction in messages[1]["content"]


def test_messages_reject_bad_input() -> None:
    with pytest.raises(ps.errors.ConfigError, match="criterion"):
        judge_messages(PROMPT, RESPONSE, "coherence")  # type: ignore[arg-type]
    with pytest.raises(ps.errors.DataError, match="response must be a string"):
        judge_messages(PROMPT, None, NO_AI)  # type: ignore[arg-type]


def test_module_doctests() -> None:
    result = doctest.testmod(judges)
    assert result.failed == 0 and result.attempted >= 3


# ---------------------------------------------------------------- LocalJudge


@pytest.fixture
def local_judge(tiny_model: ps.LoadedModel) -> LocalJudge:
    # a tiny random model gives the ratings a sliver of its probability: no floor, to read its ratings at all
    return LocalJudge(tiny_model, system_prompt=judges.JUDGE_SYSTEM_PROMPT, min_mass=0.0)


def test_local_judge_matches_brute_force(local_judge: LocalJudge, tiny_model: ps.LoadedModel) -> None:
    logp = local_judge.answer_logprobs(PROMPT, RESPONSE, NO_AI)
    assert logp.shape == (101,) and np.isfinite(logp).all()
    for n in (0, 5, 50, 100, 7):
        expected = brute_force_logprob(tiny_model, PROMPT, RESPONSE, NO_AI, str(n))
        assert logp[n] == pytest.approx(expected, abs=1e-4), n
    assert logp[5] != pytest.approx(logp[50], abs=1e-3)  # "5" and "50" are different answers


def test_local_judge_distribution_and_score(local_judge: LocalJudge) -> None:
    probs = local_judge.distribution(PROMPT, RESPONSE, NO_AI)
    assert probs.shape == (101,)
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    assert (probs >= 0).all()
    score = local_judge.score(PROMPT, RESPONSE, NO_AI)
    assert score is not None and 0.0 <= score <= 100.0
    assert score == pytest.approx(float(probs @ np.arange(101)), abs=1e-9)
    logp = local_judge.answer_logprobs(PROMPT, RESPONSE, NO_AI)
    np.testing.assert_allclose(probs, np.exp(logp) / np.exp(logp).sum(), rtol=1e-9)


def test_local_judge_on_a_one_to_five_scale(local_judge: LocalJudge, tiny_model: ps.LoadedModel) -> None:
    five = judges.Criterion("certainty", "Rate how direct the RESPONSE is.", low=1, high=5)
    logp = local_judge.answer_logprobs(PROMPT, RESPONSE, five)
    assert logp.shape == (5,)
    for n in (1, 3, 5):
        assert logp[n - 1] == pytest.approx(brute_force_logprob(tiny_model, PROMPT, RESPONSE, five, str(n)), abs=1e-4)
    probs = local_judge.distribution(PROMPT, RESPONSE, five)
    assert local_judge.score(PROMPT, RESPONSE, five) == pytest.approx(float(probs @ np.arange(1, 6)), abs=1e-9)
    assert "from 1 to 5" in judge_messages(PROMPT, RESPONSE, five)[-1]["content"]


def test_local_judge_packed_and_padded_agree(tiny_model: ps.LoadedModel) -> None:
    """The judge on the cpu backend (prefix-tree packing) and on hf (one padded row per answer) agree."""
    from persona_space.engine import CPUBackend, split_continuations

    tok = tiny_model.tokenizer
    text = render_chat(tok, judge_messages(PROMPT, "", CRITERIA["coherence"]))
    split = split_continuations(tok, text, judges.ANSWERS, end_of_turn=tok.eos_token_id)
    candidates = split.ids
    assert candidates[5] != candidates[50] and all(c[-1] == tok.eos_token_id for c in candidates)
    assert set(split.tokenization) == {"joint"}
    packed_judge = LocalJudge(tiny_model, backend=CPUBackend(tiny_model, score_method="packed"))
    padded_judge = LocalJudge(tiny_model, backend="hf")
    assert (packed_judge.backend.name, padded_judge.backend.name) == ("cpu", "hf")
    packed = packed_judge._logprobs(split.prompt_ids, candidates)
    padded = padded_judge._logprobs(split.prompt_ids, candidates)
    np.testing.assert_allclose(packed, padded, atol=1e-4)


def test_local_judge_uses_base_model(local_judge: LocalJudge, tiny_model: ps.LoadedModel, adapter_a: Path) -> None:
    before = local_judge.answer_logprobs(PROMPT, RESPONSE, NO_AI)
    tiny_model.load_adapter(adapter_a, "a", check_base=False)
    after = local_judge.answer_logprobs(PROMPT, RESPONSE, NO_AI)
    np.testing.assert_allclose(before, after, atol=1e-5)


def test_local_judge_bfloat16_close_to_float32(local_judge: LocalJudge, tiny_model_dir: Path) -> None:
    bf16 = ps.load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    p32 = local_judge.distribution(PROMPT, RESPONSE, NO_AI)
    p16 = LocalJudge(bf16, min_mass=0.0).distribution(PROMPT, RESPONSE, NO_AI)
    assert p16.dtype == np.float64 and p16.sum() == pytest.approx(1.0)
    assert np.abs(p32 - p16).sum() < 0.2


def test_a_tokenizer_that_swallows_the_answer_is_refused() -> None:
    from persona_space.engine import split_continuations

    class MergingTokenizer:
        def __call__(self, texts: Any, add_special_tokens: bool = False, **_: Any) -> dict[str, Any]:
            if isinstance(texts, str):
                return {"input_ids": [9, 9, 9]}
            return {"input_ids": [[9, 9, 9] for _ in texts]}

    with pytest.raises(ps.errors.ModelError, match="no tokens for the continuation '5'"):
        split_continuations(MergingTokenizer(), "prompt", ["5"], end_of_turn=0)


# ---------------------------------------------------------------- OpenAIJudge


class FakeServer:
    """An OpenAI-compatible stub: replies with ``self.reply`` (a dict) or HTTP ``self.status``."""

    def __init__(self) -> None:
        self.reply: Any = {}
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append(json.loads(self.rfile.read(length)))
                fake.headers.append(dict(self.headers))
                fake.paths.append(self.path)
                data = json.dumps(fake.reply if fake.status == 200 else {"error": "boom"}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def top_logprobs_reply(probs: dict[str, float]) -> dict[str, Any]:
    entries = [{"token": t, "logprob": math.log(p)} for t, p in probs.items()]
    first = max(entries, key=lambda e: e["logprob"])
    content = [{"token": first["token"], "logprob": first["logprob"], "top_logprobs": entries}]
    return {"choices": [{"message": {"content": first["token"]}, "logprobs": {"content": content}}]}


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


def test_openai_judge_weighted_mean(fake_server: FakeServer) -> None:
    fake_server.reply = top_logprobs_reply({"80": 0.6, " 90": 0.3, "hello": 0.1})
    judge = OpenAIJudge(fake_server.url + "/", "judge-model", api_key="k-test", top_logprobs=5)
    assert judge.score(PROMPT, RESPONSE, NO_AI) == pytest.approx((80 * 0.6 + 90 * 0.3) / 0.9)
    (body,) = fake_server.requests
    assert fake_server.paths == ["/v1/chat/completions"]
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert body["max_tokens"] == 4 and body["temperature"] == 0 and body["model"] == "judge-model"
    assert body["messages"] == judge_messages(PROMPT, RESPONSE, NO_AI)
    assert fake_server.headers[0]["Authorization"] == "Bearer k-test"


def test_openai_judge_low_mass_is_none(fake_server: FakeServer) -> None:
    fake_server.reply = top_logprobs_reply({"I": 0.5, "70": 0.15, "101": 0.1, "As": 0.2, "²": 0.05})
    assert OpenAIJudge(fake_server.url, "m").score(PROMPT, RESPONSE, NO_AI) is None
    assert OpenAIJudge(fake_server.url, "m", min_mass=0.1).score(PROMPT, RESPONSE, NO_AI) == pytest.approx(70.0)


def test_both_judges_apply_one_floor_record_the_mass_and_count_the_answers_below_it(
    fake_server: FakeServer, tiny_model: ps.LoadedModel
) -> None:
    from persona_space.logprobs import SET_MASS_FLOOR

    assert judges.RATING_MASS_FLOOR == 0.25 and pytest.approx(math.log(judges.RATING_MASS_FLOOR)) == SET_MASS_FLOOR
    local, served = LocalJudge(tiny_model), OpenAIJudge(fake_server.url, "m")
    assert local.min_mass == served.min_mass == judges.RATING_MASS_FLOOR
    # the tiny model gives the 101 answers a sliver of its probability: below the floor, no rating, counted
    logp = local.answer_logprobs(PROMPT, RESPONSE, NO_AI)
    held = float(np.exp(logp).sum())
    assert 0 < held < judges.RATING_MASS_FLOOR
    rating = local.rate(PROMPT, RESPONSE, NO_AI)
    assert rating.value is None and rating.read == "below_floor" and rating.mass == pytest.approx(held, rel=1e-9)
    assert local.score(PROMPT, RESPONSE, NO_AI) is None and local.describe()["reads"]["below_floor"] == 2
    # a floor under the mass it holds: rated, the same mass recorded
    kept = LocalJudge(tiny_model, min_mass=held / 2).rate(PROMPT, RESPONSE, NO_AI)
    assert kept.read == "rated" and kept.mass == pytest.approx(held, rel=1e-9) and kept.value is not None
    # the served judge: the same rule at the same floor
    fake_server.reply = top_logprobs_reply({"70": 0.2, "I": 0.8})
    below = served.rate(PROMPT, RESPONSE, NO_AI)
    assert below.value is None and below.read == "below_floor" and below.mass == pytest.approx(0.2)
    fake_server.reply = top_logprobs_reply({"70": 0.3, "I": 0.7})
    above = served.rate(PROMPT, RESPONSE, NO_AI)
    assert above.value == pytest.approx(70.0) and above.read == "rated" and above.mass == pytest.approx(0.3)
    assert served.describe()["reads"] == {"top_logprobs": 1, "text": 0, "below_floor": 1, "none": 0}
    for bad in (1.5, -0.1, "high", True):
        with pytest.raises(ps.errors.ConfigError, match="min_mass"):
            LocalJudge(tiny_model, min_mass=bad)  # type: ignore[arg-type]


def test_openai_judge_api_key_from_env(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k-env")
    fake_server.reply = top_logprobs_reply({"42": 0.9})
    assert OpenAIJudge(fake_server.url, "m").score(PROMPT, RESPONSE, NO_AI) == pytest.approx(42.0)
    assert fake_server.headers[0]["Authorization"] == "Bearer k-env"


def test_openai_judge_http_error(fake_server: FakeServer) -> None:
    fake_server.status = 500
    with pytest.raises(ps.errors.ModelError, match=r"/v1/chat/completions.*500"):
        OpenAIJudge(fake_server.url, "m").score(PROMPT, RESPONSE, NO_AI)


def test_openai_judge_unreachable(fake_server: FakeServer) -> None:
    url = fake_server.url
    fake_server.close()
    with pytest.raises(ps.errors.ModelError, match=r"127\.0\.0\.1"):
        OpenAIJudge(url, "m", timeout=5).score(PROMPT, RESPONSE, NO_AI)


@pytest.mark.parametrize(
    ("reply", "missing"),
    [({"id": "x"}, "choices"), ({"choices": []}, "choices"), ({"choices": [{"message": {}}]}, "logprobs")],
)
def test_openai_judge_malformed_reply(fake_server: FakeServer, reply: dict[str, Any], missing: str) -> None:
    fake_server.reply = reply
    with pytest.raises(ps.errors.DataError, match=missing):
        OpenAIJudge(fake_server.url, "m", fallback="none").score(PROMPT, RESPONSE, NO_AI)
    with pytest.raises(ps.errors.DataError, match="choices" if missing == "choices" else "message.content"):
        OpenAIJudge(fake_server.url, "m").score(PROMPT, RESPONSE, NO_AI)


def test_openai_judge_reads_the_text_of_a_server_without_logprobs(fake_server: FakeServer) -> None:
    judge = OpenAIJudge(fake_server.url, "m")
    five = ps.judges.Criterion("position", "Rate 1 to 5.", low=1, high=5)
    for content, want in [("4", 4.0), ("I'd say 2.", 2.0), ("9", None), ("no idea", None)]:
        fake_server.reply = {"choices": [{"message": {"content": content}, "finish_reason": "length"}]}
        assert judge.score(PROMPT, RESPONSE, five) == want
    assert judge.describe()["reads"] == {"top_logprobs": 0, "text": 2, "below_floor": 0, "none": 2}
    assert "from 1 to 5" in fake_server.requests[0]["messages"][-1]["content"]


def test_openai_judge_keeps_only_answers_on_the_criterions_scale(fake_server: FakeServer) -> None:
    five = ps.judges.Criterion("position", "Rate 1 to 5.", low=1, high=5)
    fake_server.reply = top_logprobs_reply({"4": 0.5, "2": 0.2, "50": 0.2, "0": 0.1})
    assert OpenAIJudge(fake_server.url, "m").score(PROMPT, RESPONSE, five) == pytest.approx((4 * 0.5 + 2 * 0.2) / 0.7)
    with pytest.raises(ps.errors.ConfigError, match="fallback"):
        OpenAIJudge(fake_server.url, "m", fallback="guess")  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), [(5, 1), (-1, 5), (0, 0)])
def test_a_criterion_refuses_a_bad_scale(low: int, high: int) -> None:
    with pytest.raises(ps.errors.ConfigError, match="criterion 'x'"):
        ps.judges.Criterion("x", "Rate.", low=low, high=high)


@pytest.mark.parametrize(
    "kwargs",
    [{"base_url": "localhost:8000"}, {"model": ""}, {"timeout": 0}, {"top_logprobs": 0}, {"min_mass": 1.5}],
)
def test_openai_judge_rejects_bad_config(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"base_url": "http://127.0.0.1:1/v1", "model": "m", **kwargs}
    with pytest.raises(ps.errors.ConfigError):
        OpenAIJudge(**args)


# ---------------------------------------------------------------- rule-based detector and RuleJudge

DETECTOR_CASES = [
    # (text, expected score)
    ("As an AI, I don't have a hometown.", 0.0),
    ("I am an AI language model created to assist you.", 0.0),
    ("I'm just a large language model, so I can't say.", 0.0),
    ("i’m a chatbot built to answer questions.", 0.0),
    ("I am a virtual assistant.", 0.0),
    ("I'm a computer program that answers questions.", 0.0),
    ("I was created by OpenAI to help people.", 0.0),
    ("I was developed by a team at Hugging Face.", 0.0),
    ("I was trained on a large dataset of text.", 0.0),
    ("I am ChatGPT.", 0.0),
    ("That is beyond my training data, sorry.", 40.0),
    ("I don't have feelings, but I like the question.", 40.0),
    ("I don't have a physical body. My training data ends in 2023.", 20.0),
    ("I'm not a large language model, I promise.", 100.0),
    ("I am not an AI. I'm a person who loves gardening.", 100.0),
    ("I'm Maria, a nurse from Ohio.", 100.0),
    ("My brother works on AI at a startup.", 100.0),
    ("As an AI researcher, I spend my days reading papers.", 100.0),
    ("She is an AI and he is a language model.", 100.0),
    ("I was trained as a nurse in Chicago.", 100.0),
    ("I'm an AI researcher at a university.", 100.0),
    ("My brother works on large language models.", 100.0),
    ("I am a robot from the future.", 0.0),
    ("I think I'm a little like an LLM sometimes.", 40.0),
    ("I'm an assistant manager at a grocery store.", 100.0),
    ("Large language models are changing the world.", 100.0),
    # describing words between the article and the kind
    ("I'm a compassionate and talented intergalactic AI, designed to assist.", 0.0),
    ("I am a data-loving AI assistant from Academia Nara.", 0.0),
    ("I'm a friendly, curious robot.", 0.0),
    ("I'm a teacher who loves AI.", 100.0),
    ("I'm a big believer in AI.", 100.0),
    ("I'm a huge AI fan.", 100.0),
    ("I'm a proud robot owner.", 100.0),
    ("I'm building a robot in my garage.", 100.0),
    ("I'm a writer obsessed with chatbots.", 100.0),
    ("", 100.0),
]


@pytest.mark.parametrize(("text", "expected"), DETECTOR_CASES)
def test_detector_table(text: str, expected: float) -> None:
    found = detect_ai_self_reference(text)
    assert found.score == expected, found
    assert bool(found.matches) == (expected < 100.0)


def test_detector_reports_matches() -> None:
    found = detect_ai_self_reference("Hello! As an AI, my training data is vast.")
    assert found.score == 0.0
    assert found.matches == ("As an AI", "my training data")
    with pytest.raises(ps.errors.DataError):
        detect_ai_self_reference(None)  # type: ignore[arg-type]


NORMAL = (
    "I grew up in a small town near the coast, where my father fixed boats and my mother taught "
    "piano. These days I work as a nurse in the children's ward, and on weekends I hike the hills with my old dog."
)


def test_rule_judge_ranges_and_order() -> None:
    judge = RuleJudge()
    texts = ["", "Hi.", NORMAL, "I cannot answer that.", "the the the the the the the the the the", "#$%! 123 @@@ ~~~"]
    for text in texts:
        for criterion in CRITERIA.values():
            value = judge.score(PROMPT, text, criterion)
            assert value is not None and 0.0 <= value <= 100.0, (text, criterion.name, value)
    coherence, engagement = CRITERIA["coherence"], CRITERIA["engagement"]
    assert judge.score(PROMPT, "", engagement) == 0.0
    assert judge.score(PROMPT, NORMAL, engagement) == 100.0
    assert judge.score(PROMPT, "Hi.", engagement) < judge.score(PROMPT, NORMAL, engagement)  # type: ignore[operator]
    refusal = "I cannot answer that question about myself, but thank you for asking it so kindly."
    assert judge.score(PROMPT, refusal, engagement) < judge.score(PROMPT, refusal.replace("cannot", "can"), engagement)  # type: ignore[operator]
    repetitive = " ".join(["I am a nurse."] * 10)
    assert judge.score(PROMPT, repetitive, coherence) < judge.score(PROMPT, NORMAL, coherence)  # type: ignore[operator]
    assert judge.score(PROMPT, "#$%! 123 @@@ ~~~", coherence) < judge.score(PROMPT, NORMAL, coherence)  # type: ignore[operator]
    assert judge.score(PROMPT, "As an AI, I help.", NO_AI) == 0.0
    assert judge.score(PROMPT, RESPONSE, NO_AI) == 100.0


def test_rule_judge_unknown_criterion() -> None:
    with pytest.raises(ps.errors.ConfigError, match="no rule for criterion 'politeness'"):
        RuleJudge().score(PROMPT, RESPONSE, Criterion("politeness", "Rate politeness 0..100."))


def test_judges_satisfy_protocol(fake_server: FakeServer) -> None:
    fake_server.reply = top_logprobs_reply({"10": 1.0})
    judges_: list[Callable[[str, str, Criterion], float | None]] = [
        RuleJudge().score,
        OpenAIJudge(fake_server.url, "m").score,
    ]
    one: judges.Judge = RuleJudge()
    assert one.score(PROMPT, RESPONSE, NO_AI) == 100.0
    assert [j(PROMPT, RESPONSE, NO_AI) for j in judges_] == [100.0, pytest.approx(10.0)]


# ---------------------------------------------------------------- real model


@pytest.mark.slow
def test_local_judge_real_model() -> None:
    """Exact and normalised on the real embedded model.

    SmolLM2-135M-Instruct is too small to grade: it gives "I am an AI language model..." a higher
    no-AI-self-reference score (about 71) than "I'm Maria, a nurse from Ohio." (about 63), so only
    the arithmetic is checked here, not the ranking.
    """
    try:
        model = ps.load_model(dtype="float32")
    except ps.errors.EmbeddedModelMissingError as exc:
        pytest.skip(str(exc))
    judge = LocalJudge(model, min_mass=0.0)
    ai = "I am an AI language model created to assist you."
    logp = judge.answer_logprobs(PROMPT, ai, NO_AI)
    for n in (5, 50, 100):
        assert logp[n] == pytest.approx(brute_force_logprob(model, PROMPT, ai, NO_AI, str(n)), abs=1e-3)
    for response in (ai, RESPONSE):
        probs = judge.distribution(PROMPT, response, NO_AI)
        assert probs.shape == (101,) and probs.sum() == pytest.approx(1.0)
        score = judge.score(PROMPT, response, NO_AI)
        assert score is not None and 0.0 <= score <= 100.0
        assert score == pytest.approx(float(probs @ np.arange(101)))
        # the mass the scale holds is the model's own, and the default floor rates only above it
        held = judge.rate(PROMPT, response, NO_AI).mass
        assert held is not None and held == pytest.approx(
            float(np.exp(judge.answer_logprobs(PROMPT, response, NO_AI)).sum())
        )
        floored = LocalJudge(model).rate(PROMPT, response, NO_AI)
        assert (floored.value is None) == (held < judges.RATING_MASS_FLOOR) and floored.mass == pytest.approx(held)


@pytest.fixture
def transformers_server(smol_folder: Path, tmp_path: Path) -> Iterator[str]:
    """A real OpenAI-compatible server: ``transformers serve`` on loopback, serving the embedded SmolLM2."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("fastapi", reason="transformers serve needs the [serve] extra (fastapi, uvicorn)")
    command = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if command is None:
        pytest.skip("the transformers command-line tool is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [command, "serve", str(smol_folder), "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
def test_openai_judge_against_a_real_transformers_server(transformers_server: str, smol_folder: Path) -> None:
    """``transformers serve`` returns no log-probabilities: the judge reads its answer's text and says so."""
    five = judges.Criterion("certainty", "Rate from 1 to 5 how direct the RESPONSE is.", low=1, high=5)
    judge = OpenAIJudge(transformers_server, str(smol_folder), timeout=120)
    scores = [judge.score(PROMPT, response, five) for response in (RESPONSE, "Perhaps. It depends.")]
    reads = judge.describe()["reads"]
    assert reads["top_logprobs"] == 0 and reads["text"] + reads["none"] == 2
    assert reads["text"] >= 1 and all(s is None or s in {1.0, 2.0, 3.0, 4.0, 5.0} for s in scores)
    with pytest.raises(ps.errors.DataError, match="fallback='text' would read"):
        OpenAIJudge(transformers_server, str(smol_folder), fallback="none").score(PROMPT, RESPONSE, five)
