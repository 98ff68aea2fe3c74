"""The ``persona-space`` command.

    persona-space models
    persona-space sample --adapter voyager=runs/voyager --probes identity --n 32 \
        --temperature 0.7 --temperature 1.0 --out runs/exp1
    persona-space demo --out runs/demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from persona_space.errors import ConfigError, PersonaSpaceError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except PersonaSpaceError as exc:
        print(f"persona-space: error: {exc}", file=sys.stderr)
        return 2


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

    demo = sub.add_parser("demo", help="the whole loop, small, on the embedded model, with a report")
    _model_options(demo)
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--n", type=int, default=4, help="samples per probe and temperature")
    demo.add_argument("--max-new-tokens", type=int, default=64)
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


def _parse_adapters(items: Sequence[str], with_base: bool) -> dict[str, str | None]:
    adapters: dict[str, str | None] = {"base": None} if with_base else {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {item!r} is not NAME=PATH")
        if name in adapters:
            raise ConfigError(f"--adapter name {name!r} is given twice")
        adapters[name] = path
    if not adapters:
        raise ConfigError("nothing to sample: --no-base without any --adapter")
    return adapters


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
    from persona_space.report import format_summary

    print(format_summary(samples.summary()).to_string(index=False))
    print(f"wrote {len(samples)} rows to {Path(args.out) / 'samples.parquet'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import persona_space as ps
    from persona_space.report import write_sample_report

    out = Path(args.out)
    model = ps.load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model: {model!r}")
    print(
        f"greedy check, 'What is the capital of France?': {model.generate_greedy('What is the capital of France?')!r}"
    )
    samples = ps.sample(
        model,
        ps.probes.IDENTITY,
        n=args.n,
        temperatures=[0.7, 1.0],
        max_new_tokens=args.max_new_tokens,
        seed=0,
        store=out / "samples",
    )
    paths = write_sample_report(samples, out)
    from persona_space.report import format_summary

    print(format_summary(samples.summary()).to_string(index=False))
    print(f"report: {paths['html']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
