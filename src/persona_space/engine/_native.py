"""Fused C kernels for the ``cpu`` engine's decode step, compiled on first use.

A decode step of a small model at a few dozen rows spends a quarter to a third of
its time outside the matrix products, in some forty small eager operations per
layer. :file:`_kernels.c` does them in three calls per layer: residual add with
RMS norm, rotary embedding with cache write and attention, and SiLU-gate
product; the prefill uses the first and the last on its packed real tokens. The
library is built with the system C compiler the first time it is
needed (about a second), into ``$PERSONA_SPACE_CACHE/kernels`` (default
``~/.cache/persona_space/kernels``), keyed by the source, the compiler and the
instruction set, and reused after that.

The instruction set follows torch's own choice on the CPU
(:func:`torch.backends.cpu.get_cpu_capability`): where torch runs AVX2 kernels
(``ATEN_CPU_CAPABILITY=avx2``, say) the library is built without AVX-512 too.

Where there is no C compiler, the build fails, the loaded library disagrees with
eager PyTorch on a one-off check, or ``PERSONA_SPACE_NATIVE_KERNELS=0``, the
engine runs the eager operations instead; :func:`native_state` says which, and
the ``cpu`` backend records it in every manifest.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_space import _embedded, _io

if TYPE_CHECKING:
    import torch

ENV = "PERSONA_SPACE_NATIVE_KERNELS"  # "0" turns the fused kernels off
VERSION = 2  # must equal ps_kernels_version() in _kernels.c
SOURCE = Path(__file__).with_name("_kernels.c")
_SUFFIX = {"float32": "f32", "bfloat16": "bf16"}  # torch dtype name -> kernel name suffix (torch loads lazily)
_TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
# (head size, query heads per cached head) the self-check runs: a plain-loop size on every vector
# width, and the vector path at the head sizes of the models in use
CHECK_SHAPES = ((12, 1), (64, 3), (128, 2))

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES: dict[str, list[Any]] = {
    "ps_add_rms_norm": [_P, _P, _P, _P, _I, _I, _F],
    "ps_silu_mul": [_P, _I, _P, _I, _P, _I, _I],
    "ps_decode_attention": [_P, _I, _P, _I, _P, _I, _P, _P, _P, _P, _F, _P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _F],
}


@dataclass(frozen=True)
class BuildInfo:
    """How the library in use was built, or why there is none."""

    available: bool
    reason: str
    path: str | None = None
    flags: tuple[str, ...] = ()


class NativeKernels:
    """The loaded library, with tensor-level wrappers (inputs are trusted: the decode step checks them)."""

    def __init__(self, lib: ctypes.CDLL, info: BuildInfo) -> None:
        self.info = info
        import torch

        self._fn: dict[tuple[str, torch.dtype], Any] = {}
        for name, argtypes in _SIGNATURES.items():
            for dtype, suffix in _SUFFIX.items():
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes = argtypes
                fn.restype = None
                self._fn[(name, getattr(torch, dtype))] = fn

    def add_rms_norm(
        self, hidden: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, out: torch.Tensor, eps: float
    ) -> None:
        """``hidden += delta`` (in place, when given), then ``out = rms_norm(hidden) * weight``; ``[rows, dim]``."""
        rows, dim = hidden.shape
        self._fn[("ps_add_rms_norm", hidden.dtype)](
            hidden.data_ptr(),
            None if delta is None else delta.data_ptr(),
            weight.data_ptr(),
            out.data_ptr(),
            rows,
            dim,
            eps,
        )

    def silu_mul(self, gate: torch.Tensor, up: torch.Tensor, out: torch.Tensor) -> None:
        """``out = silu(gate) * up`` for ``[rows, n]`` inputs whose rows may be strided views."""
        rows, n = out.shape
        self._fn[("ps_silu_mul", out.dtype)](
            gate.data_ptr(), gate.stride(0), up.data_ptr(), up.stride(0), out.data_ptr(), rows, n
        )

    def decode_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        positions: torch.Tensor,
        out: torch.Tensor,
        *,
        scale: float,
        q_norm: torch.Tensor | None = None,
        k_norm: torch.Tensor | None = None,
        norm_eps: float = 0.0,
        slots: torch.Tensor | None = None,
    ) -> None:
        """Rotate ``q``/``k`` ``[rows, heads*hd]``, write ``k``/``v`` at ``positions``, attend over the cache.

        Row ``b`` uses cache slot ``slots[b]`` (int64; ``None``: slot ``b``); every row's key
        and value are written before any row attends, so the tokens of one prompt can be
        rows of one call (a prefill). A row's output depends on its query and its slot's
        positions up to its own only.
        """
        rows = int(positions.shape[0])
        _, kv_heads, cap, hd = k_cache.shape
        heads = out.shape[1] // hd
        self._fn[("ps_decode_attention", out.dtype)](
            q.data_ptr(),
            q.stride(0),
            k.data_ptr(),
            k.stride(0),
            v.data_ptr(),
            v.stride(0),
            cos.data_ptr(),
            sin.data_ptr(),
            None if q_norm is None else q_norm.data_ptr(),
            None if k_norm is None else k_norm.data_ptr(),
            norm_eps,
            k_cache.data_ptr(),
            v_cache.data_ptr(),
            positions.data_ptr(),
            None if slots is None else slots.data_ptr(),
            out.data_ptr(),
            rows,
            heads,
            kv_heads,
            hd,
            cap,
            scale,
        )


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def native_state() -> dict[str, Any]:
    """What the decode step uses, for manifests: the env switch, and the build or why there is none."""
    info = _load()[1] if enabled() else BuildInfo(False, f"turned off by {ENV}=0")
    return {
        "env": f"{ENV}={os.environ.get(ENV, '1')}",
        "in_use": info.available,
        "reason": info.reason,
        "flags": list(info.flags),
    }


def kernels() -> NativeKernels | None:
    """The fused kernels, built and checked on first use; ``None`` where they cannot be used."""
    return _load()[0] if enabled() else None


@functools.cache
def _load() -> tuple[NativeKernels | None, BuildInfo]:
    if not SOURCE.is_file():
        return None, BuildInfo(False, f"kernel source {SOURCE.name} is missing from the installation")
    compiler = _compiler()
    if compiler is None:
        return None, BuildInfo(False, "no C compiler found (set CC)")
    flags = _flags()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), _compiler_version(compiler), " ".join(flags).encode()]))
    path = _embedded.cache_root() / "kernels" / f"ps_kernels-{key.hexdigest()[:16]}.so"
    if not path.is_file():
        error = _build(compiler, flags, path)
        if error is not None:
            return None, BuildInfo(False, error, flags=tuple(flags))
    try:
        lib = ctypes.CDLL(str(path))
        lib.ps_kernels_version.restype = ctypes.c_int
        if lib.ps_kernels_version() != VERSION:
            return None, BuildInfo(False, f"stale kernel library {path.name}", str(path), tuple(flags))
        loaded = NativeKernels(lib, BuildInfo(True, "built and checked", str(path), tuple(flags)))
    except (OSError, AttributeError) as exc:
        return None, BuildInfo(False, f"cannot load {path.name}: {exc}", str(path), tuple(flags))
    problem = _self_check(loaded)
    if problem is not None:
        return None, BuildInfo(False, problem, str(path), tuple(flags))
    return loaded, loaded.info


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _compiler_version(compiler: str) -> bytes:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return b""
    return done.stdout


def _flags() -> list[str]:
    """Optimisation flags: this CPU's instruction set, capped where torch itself runs AVX2 or baseline kernels."""
    import torch

    flags = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]
    if platform.machine() in ("x86_64", "AMD64"):
        capability = torch.backends.cpu.get_cpu_capability()
        flags.append("-march=native")
        if capability != "AVX512":
            flags.append("-mno-avx512f")
        if capability not in ("AVX512", "AVX2"):
            flags += ["-mno-avx2", "-mno-fma"]
    elif platform.machine() in ("aarch64", "arm64"):
        flags.append("-mcpu=native")
    return flags


def _build(compiler: str, flags: list[str], path: Path) -> str | None:
    """Compile into ``path`` (atomically); returns why it failed, or ``None``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot write the kernel cache {path.parent}: {exc}"
    errors = []
    for openmp in (["-fopenmp"], []):  # without OpenMP (clang on macOS, say) the kernels run on one thread
        try:
            with tempfile.TemporaryDirectory(prefix=_io.TMP_PREFIX, dir=path.parent) as tmp:
                target = Path(tmp) / path.name
                command = [compiler, *flags, *openmp, str(SOURCE), "-o", str(target), "-lm"]
                done = subprocess.run(command, capture_output=True, timeout=300, check=False)
                if done.returncode == 0:
                    os.replace(target, path)
                    return None
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
            continue
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        errors.append(lines[-1] if lines else f"exit status {done.returncode}")
    return f"the kernel build failed: {'; '.join(e for e in errors if e) or 'no output'}"


def _self_check(kernels: NativeKernels) -> str | None:
    """Run each kernel once against eager PyTorch; the reason they disagree, or ``None``."""
    import torch

    for dtype_name, tolerance in _TOLERANCE.items():
        dtype = getattr(torch, dtype_name)
        pairs = {
            f"{name} (head size {hd}, GQA group {groups})": pair
            for hd, groups in CHECK_SHAPES
            for name, pair in _compare(kernels, dtype, hd, groups).items()
        }
        for name, (got, want) in pairs.items():
            if not torch.allclose(got.float(), want.float(), rtol=tolerance, atol=tolerance):
                error = (got.float() - want.float()).abs().max().item()
                return f"{name} disagrees with eager PyTorch in {dtype} (max |difference| {error:.3g}); not used"
    return None


def _eager_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS norm as transformers' llama family computes it."""
    import torch

    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The llama family's rotary helper: the halves of the last axis swapped, the first negated."""
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _eager_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


def _compare(
    kernels: NativeKernels, dtype: torch.dtype, hd: int = 12, groups: int = 2
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each kernel and its eager equivalent on the same random inputs (GQA, a per-head norm, uneven positions).

    ``hd`` is the attention head size (the kernel has a vector path for sizes a multiple of its
    vector width, plain loops for the rest) and ``groups`` the query heads per cached head; the
    rows' spans fall both below and above the kernel's four-position blocks.
    """
    import torch

    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    rows, dim, n, kv_heads, cap = 5, 48, 40, 2, 12
    heads = kv_heads * groups
    hidden, delta, weight = rand(rows, dim), rand(rows, dim), rand(dim)
    out = torch.empty_like(hidden)
    got_hidden = hidden.clone()
    kernels.add_rms_norm(got_hidden, delta, weight, out, 1e-5)
    want_hidden = hidden + delta
    pairs = {
        "add_rms_norm": (torch.cat((got_hidden, out)), torch.cat((want_hidden, _eager_norm(want_hidden, weight, 1e-5))))
    }

    gate_up = rand(rows, 2 * n)
    act = torch.empty(rows, n, dtype=dtype)
    kernels.silu_mul(gate_up[:, :n], gate_up[:, n:], act)
    pairs["silu_mul"] = (act, torch.nn.functional.silu(gate_up[:, :n]) * gate_up[:, n:])

    qkv = rand(rows, (heads + 2 * kv_heads) * hd)
    q, k, v = qkv.split([heads * hd, kv_heads * hd, kv_heads * hd], dim=1)
    angles = torch.rand(rows, hd // 2, generator=gen) * 6
    cos, sin = torch.cat((angles, angles), 1).cos().to(dtype), torch.cat((angles, angles), 1).sin().to(dtype)
    q_norm, k_norm = rand(hd), rand(hd)
    positions = torch.tensor([0, 3, cap - 1, 7, 5][:rows])
    k_cache, v_cache = rand(rows, kv_heads, cap, hd), rand(rows, kv_heads, cap, hd)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    attended = torch.empty(rows, heads * hd, dtype=dtype)
    kernels.decode_attention(
        q,
        k,
        v,
        cos,
        sin,
        k_cache,
        v_cache,
        positions,
        attended,
        scale=hd**-0.5,
        q_norm=q_norm,
        k_norm=k_norm,
        norm_eps=1e-6,
    )
    qh = _eager_rotate(_eager_norm(q.reshape(rows, heads, hd), q_norm, 1e-6), cos[:, None], sin[:, None])
    kh = _eager_rotate(_eager_norm(k.reshape(rows, kv_heads, hd), k_norm, 1e-6), cos[:, None], sin[:, None])
    index = torch.arange(rows)
    want_k[index, :, positions] = kh
    want_v[index, :, positions] = v.reshape(rows, kv_heads, hd)
    scores = torch.matmul(qh.reshape(rows, kv_heads, heads // kv_heads, hd), want_k.transpose(-1, -2)).float()
    visible = torch.arange(cap)[None] <= positions[:, None]
    scores = (scores * hd**-0.5).masked_fill(~visible[:, None, None], float("-inf"))
    mixed = torch.matmul(torch.softmax(scores, dim=-1).to(dtype), want_v).reshape(rows, heads * hd)
    pairs["decode_attention"] = (
        torch.cat((attended.flatten(), k_cache.flatten(), v_cache.flatten())),
        torch.cat((mixed.flatten(), want_k.flatten(), want_v.flatten())),
    )
    # a prefill: the rows are the tokens of two prompts (slots 1 and 0) at consecutive positions
    slots = torch.tensor([1, 1, 1, 0, 0][:rows])
    positions = torch.tensor([0, 1, 2, 0, 1][:rows])
    k_cache, v_cache = rand(2, kv_heads, cap, hd), rand(2, kv_heads, cap, hd)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    kernels.decode_attention(
        q, k, v, cos, sin, k_cache, v_cache, positions, attended, scale=hd**-0.5, q_norm=q_norm, k_norm=k_norm,
        norm_eps=1e-6, slots=slots,
    )  # fmt: skip
    want_k[slots, :, positions] = kh
    want_v[slots, :, positions] = v.reshape(rows, kv_heads, hd)
    scores = torch.matmul(qh.reshape(rows, kv_heads, heads // kv_heads, hd), want_k[slots].transpose(-1, -2)).float()
    visible = torch.arange(cap)[None] <= positions[:, None]
    scores = (scores * hd**-0.5).masked_fill(~visible[:, None, None], float("-inf"))
    mixed = torch.matmul(torch.softmax(scores, dim=-1).to(dtype), want_v[slots]).reshape(rows, heads * hd)
    pairs["prefill_attention"] = (
        torch.cat((attended.flatten(), k_cache.flatten(), v_cache.flatten())),
        torch.cat((mixed.flatten(), want_k.flatten(), want_v.flatten())),
    )
    return pairs
