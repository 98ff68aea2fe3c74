"""Loading what others made without running it: pickle files are refused or checked, never unpickled freely.

Unpickling can run arbitrary code, and model, adapter, embedder and checkpoint
folders are shared between people. The library itself writes only safetensors,
Parquet, JSON and NumPy arrays without pickle; what its dependencies would read
with pickle is handled here:

* model and embedder folders must hold safetensors weights (:func:`require_safetensors`):
  a folder whose weights are only ``pytorch_model.bin`` (or ``.pt``/``.pth``) is refused
  with an :class:`~persona_space.errors.UnsafeFileError` naming the file, and the loaders
  are told to read safetensors only, so a ``.bin`` beside them is never touched;
* the pickle files PEFT and the trainer do load (an adapter's ``adapter_model.bin``, a
  training checkpoint's ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``) are first
  read by torch's weights-only unpickler (:func:`check_weights_only`), which builds
  tensors and plain containers and nothing else; a file it refuses is refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from persona_space.errors import UnsafeFileError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
NEVER_LOADED = frozenset({"training_args.bin"})
"""Pickle files a checkpoint holds that no loader reads back (the trainer saves its arguments for people)."""


def pickle_files(folder: Path) -> list[Path]:
    """The files directly in ``folder`` that a loader would read with pickle."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def require_safetensors(folder: str | os.PathLike[str], what: str) -> None:
    """Refuse a local ``what`` folder (a model, an embedder) whose weights exist only as pickle files."""
    path = Path(folder)
    if not path.is_dir():
        return  # a hub id: the loader is told to read safetensors only
    weights = _weights(path)
    if any(p.suffix == ".safetensors" for p in weights):
        return
    pickled = [p for p in weights if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        names = ", ".join(p.name for p in pickled)
        raise UnsafeFileError(
            f"{what} folder {str(path)!r} holds its weights only as pickle files ({names}), "
            "which can run code when loaded; persona_space loads safetensors only: convert them where you trust "
            "them (load, then save_pretrained(..., safe_serialization=True))"
        )


def _weights(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", *PICKLE_SUFFIXES)]
    for sub in ("0_Transformer",):  # sentence-transformers folders may keep the model one level down
        if (folder / sub).is_dir():
            found += _weights(folder / sub)
    return sorted(found)


def check_weights_only(paths: Iterable[Path], what: str) -> None:
    """Read each pickle file with torch's weights-only unpickler (as the trainer does, numpy's state types
    allowed); refuse, by name, one it will not read."""
    import pickle

    import torch

    for path in paths:
        try:
            with _trainer_safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, OSError) as exc:
            raise UnsafeFileError(
                f"{what} file {str(path)!r} was refused: torch's weights-only loader would not read it ({_why(exc)}); "
                "it holds objects other than tensors and plain containers, which can run code when unpickled, or is "
                "damaged. Remove it if you did not make it"
            ) from exc


def _why(exc: BaseException) -> str:
    """The line of a loader's message that says what it refused (the global it met), without terminal codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: [^\n]+", text)
    if found:
        return found.group(0).strip().rstrip(".")[:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _trainer_safe_globals() -> AbstractContextManager[Any]:
    """The numpy types the trainer's checkpoint loader allows in ``rng_state.pth`` (none where it has none)."""
    import contextlib

    try:
        from transformers.trainer_pt_utils import safe_globals
    except ImportError:  # pragma: no cover - older transformers
        return contextlib.nullcontext()
    held: AbstractContextManager[Any] = safe_globals()
    return held
