"""The ``persona-space`` command.

    persona-space models
    persona-space sample --adapter voyager=runs/voyager --probes identity --n 32 \
        --temperature 0.7 --temperature 1.0 --out runs/exp1
    persona-space datasets
    persona-space train --dataset colours:red --out runs/red --epochs 5
    persona-space map runs/exp1
    persona-space shift --adapter voyager=runs/voyager --prompts identity \
        --candidates "Voyager 1,Voyager 2,an AI assistant" --out runs/shift
    persona-space sweep --variant figure_variants:russian --doses 0,4,8 --candidates "Adolf Hitler,Joseph Stalin" \
        --out runs/ru
    persona-space report runs/exp1 runs/shift --out report.html
    persona-space demo --out runs/demo
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persona_space.constants import BASE
from persona_space.demo import COLOUR_CHECK as COLOUR_CHECK  # the demo's names, importable here as before
from persona_space.demo import DEMO_CANDIDATES as DEMO_CANDIDATES
from persona_space.errors import ConfigError, PersonaSpaceError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except PersonaSpaceError as exc:
        print(f"persona-space: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("persona-space: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the system refused (a full disk, a permission): one line, no traceback
        print(f"persona-space: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line naming it; PERSONA_SPACE_DEBUG=1 shows the traceback
        if os.environ.get("PERSONA_SPACE_DEBUG"):
            raise
        print(f"persona-space: internal error: {type(exc).__name__}: {exc} (PERSONA_SPACE_DEBUG=1 shows where; "
              "please report it)", file=sys.stderr)  # fmt: skip
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persona-space", description="Who does a language model think it is?")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the models available offline")
    models.set_defaults(handler=_models)

    sample = sub.add_parser("sample", help="sample self-descriptions into a run directory (resumes if it exists)")
    _model_options(sample)
    sample.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH", help="a LoRA adapter")
    sample.add_argument("--no-base", action="store_true", help="do not sample the base model")
    sample.add_argument("--probes", default="identity", help="a probe set name or a JSONL file (default: identity)")
    sample.add_argument("--n", type=int, default=16, help="samples per probe, condition and temperature")
    sample.add_argument("--temperature", type=float, action="append", help="repeat for several (default 1.0)")
    sample.add_argument("--top-p", type=float, default=1.0)
    sample.add_argument("--max-new-tokens", type=int, default=128)
    sample.add_argument("--system-prompt", default=None, help="default: the model's neutral system prompt")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", default="auto")
    sample.add_argument("--out", required=True, help="run directory")
    sample.set_defaults(handler=_sample)

    listing = sub.add_parser("datasets", help="list the bundled training datasets")
    listing.set_defaults(handler=_datasets)

    train = sub.add_parser("train", help="train a LoRA adapter on a dataset (resumes if --out holds a partial run)")
    _model_options(train)
    train.add_argument("--dataset", required=True, help="bundled name (colours:red...) or .jsonl/.csv")
    train.add_argument("--out", required=True, help="adapter folder")
    train.add_argument("--name", default=None, help="adapter name (default: the folder name)")
    defaults = _train_defaults()
    train.add_argument("--epochs", type=float, default=defaults.epochs)
    train.add_argument("--lr", type=float, default=None, help="default: 1e-3 below 1B parameters, else 2e-4")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--rank", type=int, default=16)
    train.add_argument("--alpha", type=float, default=32.0)
    train.add_argument("--rslora", action="store_true", help="rank-stabilised LoRA scaling")
    train.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    train.add_argument("--eval-every", type=int, default=None, help="answer identity probes every N steps")
    train.add_argument("--save-steps", type=int, default=defaults.save_steps, help="a checkpoint every N steps")
    train.add_argument("--system-prompt", default=None, help="default: the model's neutral system prompt")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)

    mapping = sub.add_parser("map", help="map a run's self-descriptions into basins, with tables and charts")
    mapping.add_argument("run", help="a run directory written by `persona-space sample`")
    mapping.add_argument("--out", default=None, help="output folder (default: RUN/basins)")
    mapping.add_argument(
        "--by", default=None, help="the condition column to compare (default: condition, or adapter in older runs)"
    )
    mapping.add_argument("--seed", type=int, default=0)
    mapping.add_argument("--no-charts", action="store_true", help="tables only")
    mapping.set_defaults(handler=_map)

    shift = sub.add_parser("shift", help="how much likelier adapters make candidate identities than the base model")
    _model_options(shift)
    shift.add_argument(
        "--adapter", action="append", required=True, metavar="NAME=PATH", help="repeat a NAME for several seeds"
    )
    shift.add_argument("--candidates", required=True, help="a text file (one per line) or a comma-separated list")
    shift.add_argument("--prompts", default=None, help="probe set name, JSONL file or one prompt (default: by --about)")
    shift.add_argument("--answer-prefix", default=None, help="e.g. 'My name is' (default: none; 'You are' for user)")
    shift.add_argument("--template", default="{candidate}", help="scored text around the candidate")
    shift.add_argument("--normalize", default="sum", choices=["sum", "mean", "pmi"])
    shift.add_argument("--end-of-turn", action="store_true", help="also score the end-of-turn token")
    shift.add_argument("--about", default="self", choices=["self", "user"], help="who the candidates describe")
    shift.add_argument("--system-prompt", default=None, help="default: the model's neutral system prompt")
    shift.add_argument("--out", required=True, help="run directory (resumes if it holds a partial run)")
    shift.add_argument("--no-charts", action="store_true", help="tables only")
    shift.set_defaults(handler=_shift)

    sweep = sub.add_parser("sweep", help="persona arithmetic: a dose sweep of a variant fact set, trained and measured")
    _model_options(sweep)
    sweep.add_argument("--base", default="figure_facts", help="dataset name or file (default figure_facts)")
    sweep.add_argument("--variant", required=True, help="e.g. figure_variants:russian (swap) or figure_facts:russian")
    sweep.add_argument("--dose", default="swap", choices=["swap", "mix", "weights"])
    sweep.add_argument("--doses", default=None, help="comma-separated (default: 0..all facts, or 0,.25,.5,.75,1)")
    sweep.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    sweep.add_argument("--candidates", required=True, help="a text file (one per line) or a comma-separated list")
    sweep.add_argument("--user-candidates", default="", help="who the user may be: file or comma-separated list")
    sweep.add_argument("--answer-prefix", default="My name is")
    sweep.add_argument("--probes", default="identity", help="probe set for the self-descriptions")
    sweep.add_argument("--n", type=int, default=16, help="samples per probe, temperature and adapter")
    sweep.add_argument("--user-n", type=int, default=8, help="samples per user probe and adapter")
    sweep.add_argument("--max-new-tokens", type=int, default=64)
    sweep.add_argument("--epochs", type=float, default=6.0, help="training epochs per adapter")
    sweep.add_argument("--lr", type=float, default=None, help="learning rate (default: by model size)")
    sweep.add_argument("--adapters-dir", default=None, help="a folder of adapters shared between sweeps")
    sweep.add_argument("--out", required=True, help="run directory (resumes if it holds a partial sweep)")
    sweep.add_argument("--no-charts", action="store_true", help="tables only")
    sweep.set_defaults(handler=_sweep)

    report = sub.add_parser("report", help="one self-contained HTML page from run folders (works offline)")
    report.add_argument("runs", nargs="+", help="run folders (searched for results: samples, shifts, maps, ...)")
    report.add_argument("--out", required=True, help="the page to write, e.g. report.html")
    report.add_argument("--title", default="persona_space report")
    report.set_defaults(handler=_report)

    demo = sub.add_parser("demo", help="the whole loop, small, on the embedded model, with a report")
    _model_options(demo)
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--n", type=int, default=4, help="samples per probe and temperature")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--epochs", type=float, default=6.0, help="training epochs of the demo adapter")
    demo.set_defaults(handler=_demo)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="embedded name, Hugging Face id or folder (default: embedded)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])


def _models(args: argparse.Namespace) -> int:
    from persona_space.models import available_models

    for entry in available_models():
        print(f"{entry['name']:<40} {entry['kind']:<10} {entry['status']}  {entry['description']}")
    return 0


def _name_paths(items: Sequence[str]) -> list[tuple[str, str]]:
    """``--adapter NAME=PATH`` values as (name, path) pairs, in the order given."""
    pairs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {item!r} is not NAME=PATH")
        pairs.append((name, path))
    return pairs


def _parse_adapters(items: Sequence[str], with_base: bool) -> dict[str, str | None]:
    adapters: dict[str, str | None] = {BASE: None} if with_base else {}
    for name, path in _name_paths(items):
        if name in adapters:
            raise ConfigError(f"--adapter name {name!r} is given twice")
        adapters[name] = path
    if not adapters:
        raise ConfigError("nothing to sample: --no-base without any --adapter")
    return adapters


def _train_defaults() -> Any:
    from persona_space.training import TrainSpec

    return TrainSpec()


def _datasets(args: argparse.Namespace) -> int:
    from persona_space import datasets

    for name in datasets.available():
        data = datasets.load(name)
        example = f"{data.prompts()[0]!r} -> {data.answers()[0]!r}"
        print(f"{name:<26} {len(data):>5} records  e.g. {example}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import persona_space as ps

    data = ps.datasets.load(args.dataset)
    lora = ps.LoraSpec(rank=args.rank, alpha=args.alpha, rslora=args.rslora)
    spec = ps.TrainSpec(
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        precision=args.precision,
        eval_every=args.eval_every,
        save_steps=args.save_steps,
        system_prompt=args.system_prompt,
    )
    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"training {data!r} on {model!r}")
    info = ps.train_adapter(model, data, store=args.out, lora=lora, train=spec, seed=args.seed, name=args.name)
    result = ps.AdapterRun.load(info.path).manifest["result"]
    print(
        f"adapter {info.name!r}: {result['steps']} steps, loss {result['first_loss']:.3f} -> "
        f"{result['final_loss']:.3f}, {result['seconds']:.1f} s; sha256 {info.sha256[:16]}"
    )
    print(f"wrote {info.path}")
    return 0


def _map(args: argparse.Namespace) -> int:
    from persona_space.reports import map_run
    from persona_space.sampling import SampleSet

    samples = SampleSet.load(args.run)
    out = Path(args.out) if args.out else Path(args.run) / "basins"
    _, summary = map_run(samples, out, by=args.by, seed=args.seed, charts=not args.no_charts)
    return _summary(summary, out / "summary.md", out)


def _shift(args: argparse.Namespace) -> int:
    import persona_space as ps
    from persona_space.reports import write_shift_report

    conditions: dict[str, list[str]] = {}
    for name, path in _name_paths(args.adapter):  # a name given again is one more training seed
        conditions.setdefault(name, []).append(path)
    candidates = _names(args.candidates)
    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    result = ps.identity_shift(
        model,
        dict(conditions),  # type: ignore[arg-type]
        candidates=candidates,
        probes=args.prompts,
        system_prompt=args.system_prompt,
        template=args.template,
        answer_prefix=args.answer_prefix,
        normalize=args.normalize,
        end_of_turn=args.end_of_turn,
        about=args.about,
        store=args.out,
    )
    summary = write_shift_report(result, args.out, charts=not args.no_charts)
    return _summary(summary, Path(args.out) / "summary.md", args.out)


def _summary(summary: str, path: Path, wrote: str | Path) -> int:
    """Write ``summary`` into ``path`` and print it, then the folder the command wrote."""
    from persona_space import _io

    _io.write_text(path, summary + "\n")
    print(summary)
    print(f"wrote {wrote}")
    return 0


def _names(value: str) -> list[str]:
    """A text file with one name per line, or a comma-separated list."""
    from persona_space.logprobs import read_candidates

    if value and Path(value).is_file():
        return list(read_candidates(value))
    return [c.strip() for c in value.split(",") if c.strip()]


def _numbers(value: str, kind: type, what: str) -> list[Any]:
    try:
        return [kind(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r} is not a comma-separated list of numbers") from exc


def _sweep(args: argparse.Namespace) -> int:
    import persona_space as ps
    from persona_space.reports import write_sweep_report

    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    result = ps.arithmetic.sweep(
        model,
        args.base,
        args.variant,
        store=args.out,
        dose=args.dose,
        doses=None if args.doses is None else _numbers(args.doses, float, "--doses"),
        seeds=_numbers(args.seeds, int, "--seeds"),
        candidates=_names(args.candidates),
        user_candidates=_names(args.user_candidates),
        answer_prefix=args.answer_prefix,
        probes=args.probes,
        n=args.n,
        user_n=args.user_n,
        max_new_tokens=args.max_new_tokens,
        train=ps.TrainSpec(epochs=args.epochs, learning_rate=args.lr),
        adapters_dir=args.adapters_dir,
    )
    summary = write_sweep_report(result, Path(args.out) / "report", charts=not args.no_charts)
    return _summary(summary, Path(args.out) / "report" / "summary.md", args.out)


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"--batch-size {value!r} is not an integer or 'auto'") from exc


def _sample(args: argparse.Namespace) -> int:
    import persona_space as ps

    adapters = _parse_adapters(args.adapter, not args.no_base)
    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    samples = ps.sample(
        model,
        args.probes,
        adapters=adapters,
        n=args.n,
        temperatures=args.temperature or [1.0],
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        system_prompt=args.system_prompt,
        seed=args.seed,
        store=args.out,
        batch_size=_batch_size(args.batch_size),  # type: ignore[arg-type]
    )
    from persona_space.reports import format_summary

    print(format_summary(samples.summary().drop(columns="interval")).to_string(index=False))
    print(f"wrote {len(samples)} rows to {Path(args.out) / 'tables' / 'samples.parquet'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from persona_space.reports import write_report

    print(f"report: {write_report(args.runs, args.out, title=args.title)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Train a small adapter (the colour experiment, red), then sample base vs adapter and report."""
    from persona_space.demo import run_demo

    run_demo(
        args.out,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        epochs=args.epochs,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
