"""How a result was made: library versions, git hash, file hashes.

Every manifest persona_space writes carries :func:`environment` so that a
table found on disk months later says which code, model and packages made it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from persona_space._version import __version__

_TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pyarrow",
)

_HASH_CACHE_NAME = "file-hashes.json"


def package_versions(names: tuple[str, ...] = _TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` where a package is absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The git commit (and whether the tree is dirty) of the checkout holding ``path``.

    Defaults to this package's own source folder; ``None`` when it is not inside a
    git work tree (an installed wheel) or git is unavailable.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def cpu() -> dict[str, Any]:
    """The CPU's model name, its widest vector ISA, and whether it multiplies bfloat16 natively.

    ``isa`` is one of ``"amx_bf16"``, ``"avx512_bf16"``, ``"avx512f"``, ``"avx2"``,
    ``"other"`` (``"unknown"`` off Linux). Figures measured on a CPU depend on it:
    bfloat16 products run about 4x faster than float32 with AVX-512 BF16 or AMX and
    far slower without, so every benchmark and manifest names it.
    """
    if sys.platform != "linux":
        return {"model": platform.processor() or None, "isa": "unknown", "fast_bf16": False}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"model": None, "isa": "unknown", "fast_bf16": False}
    return cap_isa(parse_cpuinfo(text), os.environ)


_ISA_ORDER = ("other", "avx2", "avx512f", "avx512_bf16", "amx_bf16")  # narrowest first; all but "other" are flags
_FAST_BF16 = ("avx512_bf16", "amx_bf16")
# The ISA caps the math libraries honour, as the widest ISA of ours they leave usable.
_ONEDNN_CAPS = {"SSE41": "other", "AVX": "other", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
                "AVX512_CORE": "avx512f", "AVX512_CORE_VNNI": "avx512f", "AVX512_CORE_BF16": "avx512_bf16",
                "AVX10_1_512": "avx512_bf16", "AVX512_CORE_FP16": "avx512_bf16"}  # fmt: skip
_ATEN_CAPS = {"default": "other", "avx2": "avx2", "avx512": "amx_bf16", "zvector": "other"}
_MKL_CAPS = {"SSE4_2": "other", "AVX": "other", "AVX2": "avx2", "AVX512": "avx512f", "AVX512_E1": "avx512f",
             "AVX512_E2": "avx512f", "AVX512_E3": "avx512f", "AVX512_E4": "avx512_bf16",
             "AVX512_E5": "amx_bf16"}  # fmt: skip


def cap_isa(info: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``info`` with its ISA lowered to what ``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY`` and
    ``MKL_ENABLE_INSTRUCTIONS`` allow.

    These variables make torch's kernels (oneDNN, its own, MKL's) use a narrower ISA than
    the CPU has: the way to run a CPU without AVX-512 on one with it. What the library
    chooses from the ISA (bfloat16 or float32) and what benchmarks report follow. The
    cap is recorded.
    """
    caps = {
        "ONEDNN_MAX_CPU_ISA": _ONEDNN_CAPS.get(environ.get("ONEDNN_MAX_CPU_ISA", "").upper()),
        "ATEN_CPU_CAPABILITY": _ATEN_CAPS.get(environ.get("ATEN_CPU_CAPABILITY", "").lower()),
        "MKL_ENABLE_INSTRUCTIONS": _MKL_CAPS.get(environ.get("MKL_ENABLE_INSTRUCTIONS", "").upper()),
    }
    isa = info["isa"]
    capped = {name: cap for name, cap in caps.items() if cap is not None}
    if isa not in _ISA_ORDER or not capped:
        return info
    lowest = min((isa, *capped.values()), key=_ISA_ORDER.index)
    if lowest == isa:
        return info
    cap_text = ", ".join(f"{name}={environ[name]}" for name in capped)
    return {**info, "isa": lowest, "fast_bf16": lowest in _FAST_BF16, "isa_cap": cap_text}


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """:func:`cpu` from the text of ``/proc/cpuinfo`` (the first processor's flags and model name)."""
    flags: set[str] = set()
    model = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and model is None:
            model = value.strip()
    isa = next((f for f in reversed(_ISA_ORDER[1:]) if f in flags), "other")
    return {"model": model, "isa": isa, "fast_bf16": isa in _FAST_BF16}


def environment() -> dict[str, Any]:
    """Versions of persona_space, Python, the platform and key packages, the CPU, plus the git revision."""
    return {
        "persona_space": __version__,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu(),
        "packages": package_versions(),
    }


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a string (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` serialised canonically (sorted keys, no whitespace)."""
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))


def hash_files(paths: list[Path], *, root: Path, cache_dir: Path | None = None) -> str:
    """One SHA-256 over several files (names relative to ``root`` and contents).

    A file living in a Hugging Face hub cache is a link to a blob named by its
    own SHA-256; that name is used instead of reading the file again. Other
    hashes are memoised in ``cache_dir`` keyed by path, size and mtime, so a
    16 GB checkpoint is read once, not at every load.
    """
    memo: dict[str, str] = {}
    memo_path = cache_dir / _HASH_CACHE_NAME if cache_dir is not None else None
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
    changed = False
    digest = hashlib.sha256()
    for path in sorted(paths):
        resolved = path.resolve()
        blob_name = resolved.name
        if path.is_symlink() and len(blob_name) == 64 and all(c in "0123456789abcdef" for c in blob_name):
            file_hash = blob_name
        else:
            stat = resolved.stat()
            key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
            if key in memo:
                file_hash = memo[key]
            else:
                file_hash = sha256_file(resolved)
                memo[key] = file_hash
                changed = True
        digest.update(str(path.relative_to(root)).encode("utf-8") + b"\0" + file_hash.encode("ascii") + b"\n")
    if changed and memo_path is not None:
        from persona_space._io import write_json
        from persona_space.errors import StoreError

        with contextlib.suppress(OSError, StoreError):  # a read-only cache only costs the next read
            write_json(memo_path, memo)
    return digest.hexdigest()
