"""Keep freed memory in the process heap while the ``cpu`` backend generates (glibc only).

Every decode step allocates and frees tensors of a few to tens of megabytes
(logits, MLP activations). glibc returns such blocks to the kernel at once
(``mmap``/``munmap`` or heap trimming), so the next step page-faults them back
in; on a 2-core CPU that costs as much as the matrix products.

What this changes, and for how long (see mallopt(3)):

* ``M_MMAP_THRESHOLD`` is set to 32 MiB, **for the rest of the process**: setting
  it switches glibc's dynamic threshold off for good, so it cannot be "restored".
  32 MiB is the ceiling the dynamic threshold itself climbs to on 64-bit systems
  once blocks of that size have been freed, which generation does within its
  first steps anyway.
* ``M_TRIM_THRESHOLD`` and ``M_TOP_PAD`` keep up to 1 GiB of freed heap during a
  generation only; afterwards they go back to glibc's documented defaults and
  ``malloc_trim(0)`` hands the retained memory back to the kernel.

``PERSONA_SPACE_HEAP_TUNING=0`` turns all of it off. :func:`heap_state` says what
is in force, and the ``cpu`` backend records it in every manifest.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
_RETAIN = {_M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20}
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 << 10, _M_TOP_PAD: 128 << 10}
ENV = "PERSONA_SPACE_HEAP_TUNING"
_state = {"mmap_threshold_fixed": False}


def _libc() -> Any:
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None  # not glibc (musl has no mallopt)
    return libc


@contextlib.contextmanager
def heap_retained() -> Iterator[bool]:
    """Within the block, keep freed heap memory for reuse; yields whether tuning is active."""
    libc = _libc()
    if libc is None:
        yield False
        return
    if not _state["mmap_threshold_fixed"]:
        _state["mmap_threshold_fixed"] = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    applied = all(libc.mallopt(param, value) == 1 for param, value in _RETAIN.items())
    try:
        yield applied and _state["mmap_threshold_fixed"]
    finally:
        for param, value in _DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def heap_state() -> dict[str, Any]:
    """The allocator tuning in force in this process, for manifests."""
    enabled = _libc() is not None
    return {
        "env": f"{ENV}={os.environ.get(ENV, '1')}",
        "active": enabled,
        "mmap_threshold": MMAP_THRESHOLD if _state["mmap_threshold_fixed"] else "glibc dynamic",
        "during_generation": {"trim_threshold": _RETAIN[_M_TRIM_THRESHOLD], "top_pad": _RETAIN[_M_TOP_PAD]}
        if enabled
        else None,
    }
