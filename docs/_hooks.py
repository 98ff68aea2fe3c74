"""MkDocs hooks: pages generated at build time from the sources, so they cannot drift from them.

* ``experiments/<name>.md``, one page per seed experiment: the script's docstring (the
  seed's claim, what is measured, how to run it) and the README of its committed
  quick results, when there is one.
* ``api.md``: the public API, every name in ``persona_space.__all__`` and in the
  ``__all__`` of the public subpackages, with its signature and docstring.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SUBPACKAGES = (
    "probes", "datasets", "judges", "evals", "arithmetic", "activations", "engine", "plots", "estimates", "stats",
    "errors",
)  # fmt: skip


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for name, text in experiment_pages().items():
        files.append(File.generated(config, f"experiments/{name}.md", content=text))
    files.append(File.generated(config, "api.md", content=api_page()))
    return files


# -- experiment pages ----------------------------------------------------------------------------


def experiment_pages() -> dict[str, str]:
    """``{script name: page}`` for every ``experiments/*.py`` that is not a helper module."""
    pages: dict[str, str] = {}
    for script in sorted(EXPERIMENTS.glob("[!_]*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        title, _, body = doc.partition("\n")
        readme = EXPERIMENTS / "results" / script.stem / "README.md"
        parts = [
            f"# {script.stem}\n",
            f"*{title.strip()}*\n",
            "## The experiment\n",
            _indented_blocks_as_code(body.strip()) + "\n",
            f"Source: `experiments/{script.name}`. Options common to every script are in "
            "[Experiments](../experiments.md); a larger model on a GPU in [Run it on a GPU](../gpu.md).\n",
        ]
        if readme.exists():
            results = readme.read_text(encoding="utf-8")
            results = re.sub(r"^# .*\n", "", results, count=1)  # the README's own title
            results = re.sub(r"^(#+) ", r"#\1 ", results, flags=re.M)  # one level down
            parts += ["## Quick results on the embedded model\n", results]
        else:
            parts += ["## Results\n", "No quick results are committed for this experiment yet.\n"]
        pages[script.stem] = "\n".join(parts)
    return pages


def _indented_blocks_as_code(text: str, language: str = "bash") -> str:
    """Docstring paragraphs indented by four spaces (command lines, examples) as fenced blocks."""
    out: list[str] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("    "):
            block.append(line[4:])
            continue
        if line.startswith((">>> ", "... ")) or line in (">>>", "..."):  # doctest examples
            block.append(line)
            continue
        if block:
            out += [f"```{language}", *block, "```"]
            block = []
        out.append(line)
    return "\n".join(out).strip()


# -- API reference -------------------------------------------------------------------------------


def api_page() -> str:
    """Every public name with its signature and docstring, top level first, then per subpackage."""
    import persona_space as ps

    lines = [
        "# API reference\n",
        "Generated from the docstrings of the installed package: every name in "
        "`persona_space.__all__`, then each public subpackage's own `__all__`.\n",
    ]
    lines += _module_section("persona_space", ps, [n for n in ps.__all__ if n not in SUBPACKAGES])
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"persona_space.{sub}")
        names = list(getattr(module, "__all__", []))
        if names:
            lines += _module_section(f"persona_space.{sub}", module, names)
    return "\n".join(lines) + "\n"


def _module_section(title: str, module: Any, names: list[str]) -> list[str]:
    lines = [f"## `{title}`\n"]
    summary = inspect.getdoc(module)
    if summary and title != "persona_space":
        lines.append(summary.split("\n\n")[0] + "\n")
    for name in names:
        obj = getattr(module, name)
        lines.append(f"### `{title}.{name}`\n")
        signature = _signature(name, obj)
        if signature:
            lines += ["```python", signature, "```\n"]
        doc = inspect.getdoc(obj) if (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj)) else None
        doc = re.sub(r"\s+# doctest: \+\w+", "", doc) if doc else doc
        lines.append(_indented_blocks_as_code(doc, "text") + "\n" if doc else "")
    return lines


def _signature(name: str, obj: Any) -> str | None:
    kind = "class " if inspect.isclass(obj) else "def " if callable(obj) else ""
    if not kind:
        if isinstance(obj, (set, frozenset)):  # in a stable order, not the hash order of this build
            return f"{name} = {type(obj).__name__}({sorted(obj, key=repr)!r})"[:300]
        return f"{name} = {obj!r}"[:300] if not inspect.ismodule(obj) else None
    try:
        return f"{kind}{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return f"{kind}{name}(...)"
