"""The adapter folder a training run writes, and the model state it borrows while training.

Layout of ``out``::

    adapter_config.json, adapter_model.safetensors   standard PEFT (PeftModel.from_pretrained, vLLM)
    training_params.json     what the run was asked to do (written first; a resume must match it)
    checkpoints/             trainer checkpoints while training (removed once the adapter is final)
    tables/training_log.parquet   loss, learning rate and grad norm per logged step
    probe_log.jsonl          answers to the evaluation probes during training (when asked for)
    manifest.json            the manifest, written last: its presence means the adapter is complete

Earlier releases (schema 3 and older) wrote ``persona_space_adapter.json`` and
``training_log.csv``; such a finished folder is still reused as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from persona_space import _io
from persona_space._safety import NEVER_LOADED, PICKLE_SUFFIXES, check_weights_only
from persona_space.adapters import (
    CONFIG_FILE,
    LEGACY_MANIFEST_FILE,
    LOSS_TABLE,
    MANIFEST_FILE,
    WEIGHT_FILES,
    adapter_manifest,
    empty_loss_log,
)
from persona_space.errors import ConfigError, CorruptRunError, StoreError, StoreMismatchError
from persona_space.results import TABLES, new_manifest, read_manifest, read_table, table_path, write_result

if TYPE_CHECKING:
    import torch

    from persona_space.models import LoadedModel
    from persona_space.training._specs import GrpoSpec, LoraSpec, TrainSpec

MANIFEST = MANIFEST_FILE
PARAMS = "training_params.json"
CHECKPOINTS = "checkpoints"
ROLLOUTS = "rollouts"  # GRPO: the adapter being trained, saved each step for a backend with its own model copy
LEGACY_LOSS_TABLE = "training_log.csv"  # schema 3 and older
PROBE_LOG = "probe_log.jsonl"
_OWN_FILES = {
    MANIFEST,
    LEGACY_MANIFEST_FILE,
    PARAMS,
    CHECKPOINTS,
    ROLLOUTS,
    TABLES,
    LEGACY_LOSS_TABLE,
    PROBE_LOG,
    CONFIG_FILE,
    *WEIGHT_FILES,
}

State = Literal["fresh", "resume", "done"]


def adapter_name_for(out: Path, name: str | None) -> str:
    """A PEFT-safe adapter name: ``name`` or the folder's name with other characters replaced by ``_``."""
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name or "") or name == "__base__" or name in "lora_":
            raise ConfigError(
                f"adapter name {name!r} is not allowed; expected letters, digits, '_' or '-', "
                "and not a part of PEFT's 'lora_' prefix"
            )
        return name
    derived = re.sub(r"[^A-Za-z0-9_-]", "_", out.resolve().name)
    return derived if derived and derived not in "lora_" else f"adapter_{derived}"


# Recorded, but a finished adapter is reused whatever they are now: a moved folder gets another
# default name, and an adapter trained on a GPU in bf16 is the same adapter on a CPU.
_REUSE_IGNORES = ("adapter_name", "precision")


def prepare(out: Path, params: dict[str, Any]) -> State:
    """Check ``out`` against ``params``: a finished adapter, a run to resume, or a fresh folder.

    A folder made with other parameters raises :class:`StoreMismatchError` naming the
    differing keys; a folder with foreign files raises :class:`StoreError`. A started
    run that never reached a checkpoint is started afresh (its leftovers are removed),
    so a call that failed early can be corrected and repeated.
    """
    if out.exists() and not out.is_dir():
        raise StoreError(f"{str(out)!r} is a file; expected a folder for the adapter")
    _io.remove_stale_temporaries(out)
    manifest = adapter_manifest(out) if out.is_dir() else None
    if manifest is not None:
        stored = manifest.get("parameters")
        if not isinstance(stored, dict):
            raise CorruptRunError(
                f"the manifest in {str(out)!r} has no parameters object; delete the folder and retrain"
            )
        _check_same(out, {k: v for k, v in stored.items() if k not in _REUSE_IGNORES}, params, ignore=_REUSE_IGNORES)
        return "done"
    if (out / PARAMS).exists() and last_checkpoint(out) is not None:
        _check_same(out, read_manifest(out, PARAMS) or {}, params)
        return "resume"
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES)
        if foreign:
            raise StoreError(f"{str(out)!r} already holds other files ({foreign[:5]}); expected an empty folder")
        for leftover in out.iterdir():  # ours, from a run that never reached a checkpoint
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / PARAMS, params)
    return "fresh"


def _check_same(out: Path, stored: dict[str, Any], given: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    from persona_space.store import _differences

    diffs = _differences(stored, {k: v for k, v in given.items() if k not in ignore})
    if diffs:
        shown = "; ".join(f"{k}: stored {a!r}, given {b!r}" for k, a, b in diffs[:6])
        raise StoreMismatchError(
            f"{str(out)!r} holds an adapter trained with other parameters ({shown}); "
            "use another folder or the same parameters"
        )


def last_checkpoint(out: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder whose trainer state parses, or ``None``.

    A checkpoint cut short by a crash (unreadable state) is skipped for the one before.
    """
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if not match:
            continue
        try:
            json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def checkpoint_to_resume(out: Path) -> Path | None:
    """:func:`last_checkpoint`, each file of it the trainer would unpickle (optimizer, scheduler, random states,
    ``.bin`` weights) read first by torch's weights-only loader: one it refuses is refused by name."""
    checkpoint = last_checkpoint(out)
    if checkpoint is not None:
        pickled = sorted(
            p
            for p in checkpoint.rglob("*")
            if p.is_file() and p.suffix in PICKLE_SUFFIXES and p.name not in NEVER_LOADED
        )
        check_weights_only(pickled, "training checkpoint")
    return checkpoint


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else 0


def check_trainable(model: LoadedModel, name: str, reserved: tuple[str, ...] = ()) -> None:
    """Refuse, before anything is written, a name already in use and a device the trainer would move the model off."""
    peft_names = set(getattr(model.module, "peft_config", {}) or {})
    if name in model.adapters or name in peft_names:
        raise ConfigError(f"an adapter named {name!r} is already attached to {model.name!r}; pass another name")
    clash = sorted(peft_names & set(reserved))
    if clash:
        raise ConfigError(
            f"attached adapter(s) {clash} use names the trainer needs for itself ({', '.join(reserved)}); "
            "attach them under other names"
        )
    if model.device.type == "cuda" and (model.device.index or 0) != 0:
        raise ConfigError(
            f"training runs on the first GPU, but the model is on {model.device}; load it on 'cuda' "
            "(choose the GPU with CUDA_VISIBLE_DEVICES)"
        )


def trainable_adapter(
    model: LoadedModel, name: str, lora: LoraSpec, dtype: torch.dtype, *, seed: int
) -> contextlib.AbstractContextManager[Any]:
    """A fresh LoRA adapter ``name`` to train, removed again on exit (see ``AdapterSet.trainable``).

    The trained adapter is then attached from its saved folder, so it is identical
    to one loaded later.
    """
    check_trainable(model, name)
    return model.adapters.trainable(name, lora.to_peft(), dtype, seed=seed)


@contextlib.contextmanager
def quiet_datasets(quiet: bool) -> Iterator[None]:
    """Hide the ``datasets`` progress bars inside the block (when ``quiet``), restoring the setting after."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def save_adapter(module: Any, name: str, out: Path, base_model: str) -> None:
    """Write the PEFT files of adapter ``name`` into ``out`` (each file renamed into place).

    ``base_model_name_or_path`` is set to ``base_model`` (an id :func:`load_model` accepts).
    """
    tmp = Path(tempfile.mkdtemp(prefix=_io.TMP_PREFIX + "adapter.", dir=out))
    try:
        # save_embedding_layers=False: the vocabulary is never resized here, and "auto" would look the
        # base model up on the Hub (a warning, and a network call, offline)
        module.save_pretrained(str(tmp), selected_adapters=[name], save_embedding_layers=False)
        folder = tmp / name if (tmp / name / CONFIG_FILE).is_file() else tmp
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base_model
        for key in ("target_modules", "modules_to_save", "exclude_modules"):  # PEFT writes sets in hash order:
            if isinstance(config.get(key), list):  # sorted, the same training writes the same bytes (and hash)
                config[key] = sorted(config[key])
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for filename in (CONFIG_FILE, *WEIGHT_FILES):
            if (folder / filename).is_file():
                os.replace(folder / filename, out / filename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def base_model_id(model: LoadedModel) -> str:
    """The name to record as the adapter's base model: the embedded name or the hub id/folder."""
    from persona_space import _embedded

    return model.name if model.name in _embedded.EMBEDDED else model.source


def write_loss_table(log_history: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """The training-loss history (one row per logged step) as ``out``'s loss table; returns the rows."""
    import pandas as pd

    keep = (
        "step", "epoch", "loss", "learning_rate", "grad_norm", "mean_token_accuracy", "num_tokens", "reward",
        "rollout_tokens", "rollout_seconds",
    )  # fmt: skip
    rows = []
    for entry in log_history:
        if "loss" not in entry and "reward" not in entry:
            continue
        rows.append({k: entry.get(k) for k in keep if k in entry or k in ("step", "epoch")})
    frame = pd.DataFrame(rows)
    with _io.atomic_path(table_path(out, LOSS_TABLE)) as tmp:
        frame.to_parquet(tmp, index=False)
    return rows


def finish(
    out: Path,
    params: dict[str, Any],
    model: LoadedModel,
    precision_reason: str,
    results: dict[str, Any],
    *,
    keep_checkpoints: bool,
) -> None:
    """Write the manifest (the completion marker) and drop checkpoints and the params file.

    The manifest holds what every run records (parameters, versions, the model, the
    precision and why, the adapter's hash) plus the trainer's own ``results``.
    """

    from persona_space.adapters import adapter_sha256

    manifest = new_manifest(
        "adapter",
        params,
        state="complete",
        model=model.describe(),
        precision_reason=precision_reason,
        **results,
        adapter_sha256=adapter_sha256(out),
    )
    log = read_table(out, LOSS_TABLE)
    write_result(out, manifest, {LOSS_TABLE: log if log is not None else empty_loss_log()})
    if not keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(out / ROLLOUTS, ignore_errors=True)
    (out / PARAMS).unlink(missing_ok=True)


def base_params(
    kind: str,
    name: str,
    model: LoadedModel,
    lora: LoraSpec,
    *,
    seed: int,
    system_prompt: str,
    dtype: torch.dtype,
    autocast: bool,
) -> dict[str, Any]:
    """The parameters every training run records and a resume must match."""
    describe = model.describe()
    return {
        "kind": kind,
        "adapter_name": name,
        "model": {k: describe[k] for k in ("name", "weights_sha256", "model_type", "chat_template_sha256")},
        "lora": lora.to_dict(),
        "seed": seed,
        "system_prompt": system_prompt,
        "precision": {"weights": str(dtype).removeprefix("torch."), "bf16_autocast": autocast},
    }


def trainer_args(out: Path, model: LoadedModel, spec: TrainSpec | GrpoSpec, *, seed: int, autocast: bool,
                 progress: bool) -> dict[str, Any]:  # fmt: skip
    """The TRL config values both trainers share: where checkpoints go, precision, seeds, logging (from ``spec``)."""
    return {
        "output_dir": str(out / CHECKPOINTS),
        "logging_steps": spec.logging_steps,
        "save_strategy": "steps",
        "save_steps": spec.save_steps,
        "save_total_limit": 2,
        "bf16": autocast,
        "fp16": False,
        "use_cpu": model.device.type == "cpu",
        "seed": seed,
        "data_seed": seed,
        "report_to": "none",
        "disable_tqdm": not progress,
        "dataloader_pin_memory": False,
    }


def one_device(config: Any, model: LoadedModel) -> Any:
    """Keep the trainer on the model's one GPU: no ``DataParallel`` over every visible GPU
    (which would multiply the batch and change the adapter without saying so)."""
    if model.device.type == "cuda":
        _ = config.device  # sets up the device fields first
        config._n_gpu = 1
    return config


def quiet_progress(trainer: Any, progress: bool) -> None:
    """Keep the trainer's progress bar (when ``progress``) but not its printout of every log line.

    The log lines are saved in the folder's loss table instead.
    """
    from transformers import PrinterCallback, ProgressCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
        return

    class _BarOnly(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_BarOnly)
