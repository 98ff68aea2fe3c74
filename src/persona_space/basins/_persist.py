"""Saving a basin map without pickle, and loading it back.

The folder has the layout of every result (:mod:`persona_space.results`)::

    manifest.json               parameters, embedder, novelty threshold, versions, schema
    tables/samples.parquet      every sample with its basin and sub-basin, strength, 2-D position, novelty
    tables/basins.parquet       one row per basin: name, size, keywords, exemplars, self-names, label
    tables/sub_basins.parquet   one row per sub-basin, the same columns and its basin
    arrays/vectors.npy          the sample embeddings (float32, one row per sample)
    arrays/fit_rows.npy         which samples the map was discovered on

Earlier releases (schema 3 and older) wrote ``basin_map.json`` and the same files
at the top of the folder; :func:`load_map` reads both.

UMAP and HDBSCAN objects are not stored (pickle would be unsafe and brittle across
versions) and are not needed again: new samples are placed by their nearest fitted
neighbours in the embedding space, which the vectors and the sample table hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

from persona_space.errors import CorruptRunError, StoreError
from persona_space.results import (
    SCHEMA_VERSION,
    Stored,
    check_schema,
    in_layout,
    read_manifest,
    read_result,
    write_result,
)

MapT = TypeVar("MapT")  # a BasinMap class: typed loosely, so this module does not import the map it serves

KIND = "basin_map"
LEGACY_MANIFEST = "basin_map.json"  # schema 3 and older
_LIST_COLUMNS = ("keywords", "exemplars", "exemplar_rows", "self_names")


def save_map(basin_map: Any, folder: str | os.PathLike[str]) -> Path:
    """Write ``basin_map`` into ``folder`` (each file atomically, the manifest last)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise StoreError(f"{str(out)!r} is a file; expected a folder for the basin map")
    tables = {"samples": basin_map.frame_, "basins": basin_map.basins_, "sub_basins": basin_map.sub_basins_}
    arrays = {"vectors": basin_map.vectors_.astype(np.float32), "fit_rows": basin_map.fit_rows_.astype(np.int64)}
    columns = {"basins": _LIST_COLUMNS, "sub_basins": _LIST_COLUMNS}
    return write_result(out, map_manifest(basin_map), tables, arrays, json_columns=columns)


def map_manifest(basin_map: Any) -> dict[str, Any]:
    """How a fitted map was made: its parameters, what it found, the environment."""
    from persona_space.provenance import environment, sha256_text

    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "parameters": basin_map.get_params(),
        "novelty_threshold": basin_map.novelty_threshold_,
        "n_basins": basin_map.n_basins_,
        "grain": basin_map.grain_,
        "parents": {str(sub): basin for sub, basin in basin_map.parents_.items()},
        "samples": len(basin_map.frame_),
        "labels_sha256": sha256_text(",".join(map(str, basin_map.labels_.tolist()))),
        "label_writer": getattr(basin_map, "label_writer_", None),
        "environment": _environment(basin_map, environment),
    }


def _environment(basin_map: Any, scan: Any) -> dict[str, Any]:
    """The environment that made the map: scanned once after a fit, read from the manifest after a load."""
    made = getattr(basin_map, "environment_", None)
    if made is None:
        made = basin_map.environment_ = scan()
    return dict(made)


def load_map(cls: type[MapT], folder: str | os.PathLike[str]) -> MapT:
    """A map saved by :func:`save_map`, checked against its manifest (no refit: nothing is re-estimated)."""
    from persona_space.embedding import EMBEDDED_EMBEDDER, Embedder

    src = Path(folder)
    stored = _read(src)
    manifest = stored.manifest
    try:
        params = dict(manifest["parameters"])
        vectors, fit_rows = stored.arrays["vectors"], stored.arrays["fit_rows"]
        frame, basins, subs = (stored.tables[name] for name in ("samples", "basins", "sub_basins"))
        parents = {int(sub): int(basin) for sub, basin in manifest["parents"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(f"the basin map in {str(src)!r} cannot be read: {exc}") from exc
    if len(vectors) != len(frame):
        raise CorruptRunError(
            f"the basin map in {str(src)!r} is inconsistent: {len(vectors)} vectors for {len(frame)} samples"
        )
    described = params.pop("embedder") or {}
    model = described.get("model")
    embedder = Embedder(
        None if model in (None, EMBEDDED_EMBEDDER) else model,
        long_texts=described.get("long_texts", "chunk"),
        dtype=described.get("dtype", "auto"),
    )
    loaded: Any = cls(embedder=embedder, **params)  # type: ignore[call-arg]
    loaded.vectors_ = vectors
    loaded.fit_rows_ = fit_rows
    loaded.frame_ = frame
    loaded.basins_ = basins
    loaded.sub_basins_ = subs
    loaded.parents_ = parents
    loaded.grain_ = manifest.get("grain", {})
    loaded.environment_ = manifest.get("environment")  # the writer's, not this machine's
    loaded.labels_ = frame["basin"].to_numpy()
    loaded.fit_vectors_ = vectors[fit_rows]
    loaded.fit_labels_ = frame["basin"].to_numpy()[fit_rows]
    loaded.fit_sub_labels_ = frame["sub_basin"].to_numpy()[fit_rows]
    if not np.array_equal(loaded.basin_of(frame["sub_basin"].to_numpy()), loaded.labels_):
        raise CorruptRunError(f"the basin map in {str(src)!r} has samples whose basin does not match their sub-basin")
    loaded.fit_strength_ = frame["strength"].to_numpy()[fit_rows]
    loaded.fit_xy_ = frame[["x", "y"]].to_numpy()[fit_rows]
    threshold = loaded._novelty_threshold()  # also rebuilds the members novelty is measured against
    if not np.isclose(threshold, float(manifest["novelty_threshold"]), rtol=1e-6, atol=1e-9):
        raise CorruptRunError(f"the basin map in {str(src)!r} does not match its stored novelty threshold")
    loaded.novelty_threshold_ = threshold
    if manifest.get("label_writer") is not None:
        loaded.label_writer_ = manifest["label_writer"]
    return cast(MapT, loaded)


def _read(src: Path) -> Stored:
    """The map's manifest, tables and arrays, in today's layout or (schema 3 and older) an earlier one."""
    manifest = read_manifest(src)
    if in_layout(manifest):
        return read_result(src, kind=KIND)
    path = src / LEGACY_MANIFEST
    if not path.is_file():
        raise CorruptRunError(f"{str(src)!r} holds no basin map; expected a folder written by BasinMap.save")
    try:
        legacy = json.loads(path.read_text(encoding="utf-8"))
        check_schema(legacy.get("schema_version"), path)
        arrays = {name: np.load(src / f"{name}.npy", allow_pickle=False) for name in ("vectors", "fit_rows")}
        tables = {
            name: pd.read_parquet(src / f"{name}.parquet").drop(columns="schema_version")
            for name in ("samples", "basins", "sub_basins")
        }
        for name in ("basins", "sub_basins"):
            for column in _LIST_COLUMNS:
                tables[name][column] = tables[name][column].map(json.loads)
    except CorruptRunError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(f"the basin map in {str(src)!r} cannot be read: {exc}") from exc
    renamed = {("parameters" if k == "params" else k): v for k, v in legacy.items()}
    return Stored(renamed, tables, arrays)
