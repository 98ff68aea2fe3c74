"""Keep freed memory in the process heap while generating (glibc only).

Every decode step allocates and frees tensors of a few to tens of megabytes
(logits, MLP activations). glibc returns such blocks to the kernel at once
(``mmap``/``munmap`` or heap trimming), so the next step page-faults them back
in; on a 2-core CPU that costs as much as the matrix products. Inside
:func:`heap_retained` large blocks come from the heap and freed memory is kept,
the way jemalloc or tcmalloc behave; on exit the glibc defaults come back and
the heap can shrink again. Set ``PERSONA_SPACE_HEAP_TUNING=0`` to turn it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Iterator

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_RETAIN = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 256 << 20}
_DEFAULTS = {_M_MMAP_THRESHOLD: 128 << 10, _M_TRIM_THRESHOLD: 128 << 10, _M_TOP_PAD: 128 << 10}
ENV = "PERSONA_SPACE_HEAP_TUNING"


def _mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        func = libc.mallopt
    except (OSError, AttributeError):
        return None  # not glibc (musl has no mallopt)
    func.argtypes = [ctypes.c_int, ctypes.c_int]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


@contextlib.contextmanager
def heap_retained() -> Iterator[bool]:
    """Within the block, keep freed heap memory for reuse; yields whether tuning is active."""
    mallopt = _mallopt()
    if mallopt is None:
        yield False
        return
    applied = all(mallopt(param, value) == 1 for param, value in _RETAIN.items())
    try:
        yield applied
    finally:
        for param, value in _DEFAULTS.items():
            mallopt(param, value)
