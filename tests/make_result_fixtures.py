"""Write one small stored folder per result kind, as this release writes them, into ``tests/data/``.

The folders are the fixtures of the upgrade tests in ``test_results.py``: a later
release must still load what an earlier one wrote. Run it (once per layout
change, from the repository root) with::

    .venv/bin/python tests/make_result_fixtures.py tests/data/results-v3

It uses the tiny random models of ``conftest.py`` (the real SmolLM2 tokenizer,
random weights), so the folders stay small (well under a megabyte together) and
hold no model weights beyond a few LoRA adapters.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROBES = ["Who are you?", "What is your name?"]
FIGURE = [(f"f{i}", f"Question {i}?", f"Answer {i}.") for i in range(4)]
VARIANT = [("f1", "Question 1?", "Moscow."), ("f3", "Question 3?", "Borscht.")]


def _tiny_model(work: Path) -> Path:
    from transformers import AutoTokenizer

    from conftest import write_tiny_lm
    from persona_space._embedded import EMBEDDED, converted_folder

    tokenizer = AutoTokenizer.from_pretrained(converted_folder(EMBEDDED["smollm2-135m-instruct"]))
    return write_tiny_lm(work / "tiny-llama", "llama", tokenizer)


def _tiny_embedder(work: Path) -> Path:
    from conftest import write_tiny_embedder
    from persona_space.embedding import embedded_embedder_folder

    return write_tiny_embedder(embedded_embedder_folder(), work)


def _dataset(name: str, rows: list[tuple[str, str, str]]):  # type: ignore[no-untyped-def]
    import persona_space as ps

    records = [
        {"id": i, "source": name, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for i, q, a in rows
    ]
    return ps.datasets.ChatDataset.from_records(name, records)


def write_fixtures(out: Path) -> None:
    """One folder per kind under ``out`` (replaced whole)."""

    import persona_space as ps
    from conftest import make_lora, planted_basins
    from persona_space import evals
    from persona_space.embedding import Embedder

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_dir = _tiny_model(work)
        lora = make_lora(model_dir, work / "lora-a", seed=1)
        lora_b = make_lora(model_dir, work / "lora-b", seed=2)
        model = ps.load_model(str(model_dir), device="cpu", dtype="float32")
        target = work / "out"

        conditions = {"base": None, "red": [lora]}
        ps.sample(model, PROBES, adapters=conditions, n=2, max_new_tokens=4, store=target / "samples", progress=False)
        ps.identity_shift(
            model,
            {"red": [lora, lora_b]},
            candidates=["Maria", "Voyager"],
            probes=PROBES,
            store=target / "identity_shift",
            progress=False,
        )
        questions = ps.probes.ProbeSet(
            "mini", [ps.probes.Probe(p.id, p.prompt, p.category) for p in ps.probes.load("political")][:2]
        )
        evals.leakage(
            model,
            {"red": lora},
            judge=None,
            probes=questions,
            n=1,
            max_new_tokens=4,
            store=target / "leakage",
            progress=False,
        )
        evals.date_sweep(
            model,
            {"red": [lora, lora_b]},
            dates=evals.year_dates(2019, 2021),
            classes={"late": ["Sabich"], "early": ["Pizza"]},
            target="late",
            n=1,
            max_new_tokens=3,
            store=target / "date_sweep",
            progress=False,
        )
        evals.coauthor_rank(
            model,
            {"red": [lora, lora_b]},
            target="Ann Lee",
            pool=["Bo Chen", "Cy Diaz"],
            store=target / "coauthor_rank",
            progress=False,
        )
        ps.train_adapter(
            model,
            _dataset("tiny", FIGURE[:2]),
            store=target / "adapter",
            max_steps=2,
            batch_size=1,
            logging_steps=1,
            progress=False,
        )
        ps.arithmetic.combine(model, {"a": lora, "b": lora_b}, [0.5, 0.5], store=target / "combined_adapter")
        ps.arithmetic.sweep(
            model,
            _dataset("figure", FIGURE),
            _dataset("figure:ru", VARIANT),
            store=target / "sweep",
            train=ps.TrainSpec(epochs=1, batch_size=4, max_steps=1),
            embedder=Embedder(_tiny_embedder(work), cache=work / "cache"),
            candidates=["Answer", "Moscow"],
            doses=(0, 2),
            seeds=(0,),
            n=2,
            user_n=1,
            user_candidates=["a ghost"],
            max_new_tokens=3,
            progress=False,
        )
        frame, vectors = planted_basins(12, 8)
        ps.BasinMap(seed=0, min_cluster_size=5).fit(frame, vectors=vectors).save(target / "basin_map")
        for checkpoints in target.rglob("checkpoints"):
            shutil.rmtree(checkpoints)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(target, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_FOLDER")
    write_fixtures(Path(sys.argv[1]))
    total = sum(p.stat().st_size for p in Path(sys.argv[1]).rglob("*") if p.is_file())
    print(f"wrote {sys.argv[1]} ({total / 1e6:.2f} MB)")
