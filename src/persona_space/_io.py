"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete
new one, never a partial write.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from persona_space.errors import ConfigError, JsonlError, StoreError

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    A destination that cannot be written (read-only, a file where a folder should be,
    a full disk) raises :class:`~persona_space.errors.StoreError` naming it, and no
    temporary file is left behind.

    >>> with atomic_path("out.txt") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("hello")
    """
    target = Path(target)
    with writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + target.name + ".", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty scratch folder beside ``target``; on success it becomes ``target``, all at once.

    ``target`` must be absent or an empty folder. A reader never sees a partial folder:
    the scratch is named ``.tmp-<target>.<random>``, and the leftovers of an earlier
    writer of the same target that crashed are removed before a new one starts (as
    :func:`remove_stale_temporaries` does for a whole folder). An unwritable destination
    raises :class:`~persona_space.errors.StoreError`, as :func:`atomic_path` does.

    >>> with atomic_folder("runs/adapter") as scratch:  # doctest: +SKIP
    ...     (scratch / "weights.bin").write_bytes(data)
    """
    target = Path(target)
    with writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = TMP_PREFIX + target.name + "."
        for stale in target.parent.glob(glob.escape(prefix) + "*"):
            _remove(stale)
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        try:
            yield scratch
            os.chmod(scratch, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
            if target.exists():
                target.rmdir()  # an empty folder the caller made; a full one raises, and nothing is replaced
            os.replace(scratch, target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def writable(target: str | os.PathLike[str]) -> Iterator[None]:
    """Inside the block an ``OSError`` writing ``target`` (permission, a file in the path, a full disk) is
    raised as a :class:`~persona_space.errors.StoreError` naming the destination and why."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(target) else ""
        raise StoreError(
            f"cannot write {str(target)!r}: {why}{where}; expected a writable folder with free space"
        ) from exc


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read once (reading it means setting it, which other threads could see)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``target`` atomically."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete temporary files and folders a crashed writer left in ``folder``; return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
    for p in stale:
        _remove(p)
    return len(stale)


def iter_jsonl(path: str | os.PathLike[str], *, expected: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    A missing file raises :class:`~persona_space.errors.ConfigError`; a line that is
    not a JSON object raises :class:`~persona_space.errors.JsonlError` naming the file,
    the 1-based line and ``expected`` (what a line should hold).
    """
    src = Path(path)
    if not src.is_file():
        raise ConfigError(f"file {str(src)!r} does not exist (expected a .jsonl file of {expected})")
    with src.open("rb") as fh:
        for lineno, raw in _numbered_lines(fh, src):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise JsonlError(
                    f"{src}:{lineno}: expected {expected}, got invalid JSON ({exc.msg})", path=str(src), line=lineno
                ) from exc
            if not isinstance(obj, dict):
                raise JsonlError(
                    f"{src}:{lineno}: expected {expected}, got a JSON {type(obj).__name__}", path=str(src), line=lineno
                )
            yield lineno, obj


def _numbered_lines(fh: Any, src: Path) -> Iterator[tuple[int, str]]:
    """Decode a binary file line by line, so a bad byte is reported on its own line."""
    for lineno, data in enumerate(fh, start=1):
        try:
            yield lineno, data.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise JsonlError(f"{src}:{lineno}: expected UTF-8 text ({exc.reason})", path=str(src), line=lineno) from exc
