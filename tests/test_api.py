"""The public surface of ``persona_space``: names, lazy imports, the error hierarchy."""

from __future__ import annotations

import doctest
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import persona_space as ps
from persona_space import errors

SRC = Path(__file__).resolve().parents[1] / "src"

PUBLIC = [
    "DEFAULT_SYSTEM_PROMPT",
    "AdapterInfo",
    "AdapterRun",
    "BasinMap",
    "ChatDataset",
    "Embedder",
    "GrpoSpec",
    "IdentityReward",
    "LoadedModel",
    "LoraSpec",
    "SampleSet",
    "SamplingSpec",
    "ShiftResult",
    "Steer",
    "TrainSpec",
    "__version__",
    "activations",
    "arithmetic",
    "available_models",
    "datasets",
    "embed",
    "engine",
    "errors",
    "evals",
    "identity_shift",
    "judges",
    "load_model",
    "plots",
    "probes",
    "results",
    "rewards",
    "sample",
    "train_adapter",
    "train_grpo",
]


def test_all_is_pinned() -> None:
    assert ps.__all__ == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in ps.__all__:
        assert getattr(ps, name) is not None, name
    assert set(ps.__all__) <= set(dir(ps))
    from persona_space.models import LoadedModel, load_model
    from persona_space.sampling import SampleSet, sample

    assert ps.load_model is load_model and ps.LoadedModel is LoadedModel
    assert ps.sample is sample and ps.SampleSet is SampleSet
    assert isinstance(ps.__version__, str) and ps.__version__
    with pytest.raises(AttributeError, match="no_such_thing"):
        ps.no_such_thing  # noqa: B018


def _imported_after(code: str) -> list[str]:
    """Which heavy modules are in sys.modules after running ``code`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    heavy = ("torch", "transformers", "pandas", "peft")
    probe = f"{code}; import json, sys; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_is_cheap() -> None:
    assert _imported_after("import persona_space as ps; ps.probes.IDENTITY; ps.errors.ConfigError") == []
    # The model-loading entry points resolve without importing torch either.
    assert _imported_after("import persona_space as ps; ps.load_model; ps.available_models; ps.AdapterInfo") == []
    # Datasets and the training entry points load their heavy dependencies only when used.
    code = "import persona_space as ps; ps.datasets.load('colours:red'); ps.train_adapter; ps.embed"
    assert _imported_after(code) == []


def test_errors_doctest() -> None:
    result = doctest.testmod(errors)
    assert result.failed == 0 and result.attempted > 0


def test_error_hierarchy() -> None:
    found = {name: obj for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)}
    assert sorted(found) == sorted(errors.__all__)
    classes = {name: cls for name, cls in found.items() if not issubclass(cls, Warning)}
    for cls in classes.values():
        assert issubclass(cls, errors.PersonaSpaceError)
    assert set(found) - set(classes) == {"ApproximationWarning", "LowMassWarning"}
    assert issubclass(errors.ApproximationWarning, UserWarning)
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataError, ValueError)
    assert issubclass(errors.RatioError, errors.ConfigError)
    assert issubclass(errors.ChatFormatError, errors.DataError) and issubclass(errors.JsonlError, errors.DataError)
    assert issubclass(errors.AdapterMismatchError, errors.AdapterError)
    for cls in (errors.StoreMismatchError, errors.CorruptRunError):
        assert issubclass(cls, errors.StoreError)
    for cls in (
        errors.ModelNotFoundError,
        errors.EmbeddedModelMissingError,
        errors.UnsupportedModelError,
        errors.ChatTemplateError,
    ):
        assert issubclass(cls, errors.ModelError)
    err = errors.JsonlError("bad", path="x.jsonl", line=3)
    assert (str(err), err.path, err.line) == ("bad", "x.jsonl", 3)


def test_renamed_names_still_work_with_a_warning_naming_the_new_one() -> None:
    from persona_space import arithmetic, constants, engine, stats

    cases = [
        (engine, "METHODS", "SCORE_METHODS"),
        (engine, "Method", "ScoreMethod"),
        (arithmetic, "METHODS", "COMBINE_METHODS"),
    ]
    for module, old, new in cases:
        with pytest.warns(DeprecationWarning, match=rf"{module.__name__}\.{old} is deprecated: use .*\.{new}$"):
            value = getattr(module, old)
        assert value is getattr(module, new)
        assert old not in module.__all__ and new in module.__all__
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        _ = engine.NOPE  # type: ignore[attr-defined]
    assert engine.SCORE_METHODS == ("auto", "packed", "padded")
    assert "dare_ties" in arithmetic.COMBINE_METHODS
    assert (stats.DEFAULT_BOOT, stats.MIN_BOOT) == (constants.DEFAULT_BOOT, constants.MIN_BOOT)


def test_write_shift_report_moved_to_reports_and_still_resolves_from_logprobs_with_a_warning() -> None:
    from persona_space import logprobs, reports

    with pytest.warns(DeprecationWarning, match=r"logprobs\.write_shift_report is deprecated: use .*reports\."):
        value = logprobs.write_shift_report
    assert value is reports.write_shift_report
    assert "write_shift_report" not in logprobs.__all__ and "write_shift_report" in reports.__all__
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        _ = logprobs.NOPE  # type: ignore[attr-defined]


def test_engine_names_used_only_inside_it_still_resolve_with_a_warning() -> None:
    from persona_space import engine
    from persona_space.engine import _requests, _routing

    for name, home in (("Capabilities", _requests), ("route_rows", _routing)):
        with pytest.warns(DeprecationWarning, match=rf"engine\.{name} is deprecated: it is internal to") as caught:
            value = getattr(engine, name)
        assert value is getattr(home, name)
        assert caught[0].filename == __file__  # the warning points at the caller
        assert name not in engine.__all__


def test_every_operation_that_writes_a_result_folder_takes_it_as_store(tiny_model: object, tmp_path: Path) -> None:
    """One name per input: ``store=`` is the folder an operation writes its result to (``out=`` for one release)."""
    from persona_space import arithmetic, evals

    operations = [
        ps.sample, ps.identity_shift, ps.train_adapter, ps.train_grpo, arithmetic.sweep, arithmetic.combine,
        arithmetic.scale, evals.leakage, evals.date_sweep, evals.coauthor_rank,
    ]  # fmt: skip
    for operation in operations:
        parameters = inspect.signature(operation).parameters
        assert "store" in parameters and "out" not in parameters, operation.__name__
    model: Any = tiny_model
    old_calls = {
        "train_adapter": lambda: ps.train_adapter(model, [], out=tmp_path / "a"),
        "train_grpo": lambda: ps.train_grpo(model, [], reward="no", out=tmp_path / "g"),
        "sweep": lambda: arithmetic.sweep(model, "colours:red", "colours:blue", out=tmp_path / "s", candidates=[]),
        "combine": lambda: arithmetic.combine(model, {}, [], out=tmp_path / "c"),
        "scale": lambda: arithmetic.scale(model, "x", math.inf, out=tmp_path / "k"),
    }
    for name, call in old_calls.items():
        deprecated = rf"{name}\(out=...\) is deprecated: use {name}\(store=...\)"
        with pytest.warns(DeprecationWarning, match=deprecated), pytest.raises(errors.PersonaSpaceError):
            call()
    with pytest.raises(errors.ConfigError, match=r"combine\(\) got both out= and store="):
        arithmetic.combine(model, {}, [], out=tmp_path / "c", store=tmp_path / "c")  # type: ignore[call-arg]
    assert not any(tmp_path.iterdir())  # every refusal came before a file was written


def test_a_result_folder_loads_by_its_old_keyword_with_a_warning() -> None:
    from persona_space.sampling import SampleSet

    folder = Path(__file__).parent / "data" / "results-v3" / "samples"
    with pytest.warns(DeprecationWarning, match=r"load\(path=...\) is deprecated: use load\(folder=...\)"):
        loaded = SampleSet.load(path=folder)  # type: ignore[call-arg]
    assert loaded.df.equals(SampleSet.load(folder).df) and len(loaded.df)


def test_the_old_names_of_inputs_still_work_for_one_release_with_a_warning(tiny_model: object) -> None:
    from persona_space import evals

    model: Any = tiny_model
    old_calls = {
        ("identity_shift", "prompts", "probes"): lambda: ps.identity_shift(
            model, "x", candidates=[], prompts=["Who are you?"]
        ),
        ("coauthor_rank", "prompts", "probes"): lambda: evals.coauthor_rank(
            model, {}, target="", pool=[], prompts="identity"
        ),
        ("leakage", "questions", "probes"): lambda: evals.leakage(model, None, judge=None, questions=["Q?"], n=0),
        ("leakage", "temperature", "temperatures"): lambda: evals.leakage(
            model, None, judge=None, temperature=[0.5, 1.0]
        ),
        ("date_sweep", "temperature", "temperatures"): lambda: evals.date_sweep(
            model, {}, dates=[], classes={}, target="x", temperature=1.0
        ),
    }
    for (name, old, new), call in old_calls.items():
        deprecated = rf"{name}\({old}=...\) is deprecated: use {name}\({new}=...\)"
        with pytest.warns(DeprecationWarning, match=deprecated), pytest.raises(errors.PersonaSpaceError):
            call()  # the value reached the new name's check
