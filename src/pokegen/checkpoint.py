"""A trained model on disk: a folder a person can read, and one load path that never unpickles code.

    models/<name>/model/
        checkpoint.json      plugin name, class, distribution and version, config, data hash, training summary
        weights.safetensors  the plugin's state() tensors

save_checkpoint and load_checkpoint are mirror images.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from pokegen.errors import DataError, ParamsError
from pokegen.fileio import write_bytes_atomic, write_json_atomic
from pokegen.plugin import GenerativeModel
from pokegen.registry import get_plugin, plugin_info

CHECKPOINT_JSON = "checkpoint.json"
WEIGHTS = "weights.safetensors"
FORMAT = "pokegen.checkpoint.v1"


def _identity(model: GenerativeModel) -> tuple[str, str, str]:
    """(class, distribution, version) from the registry; a class not installed yet (a plugin's own tests) names itself."""
    try:
        info = plugin_info(model.name)
    except ParamsError:
        return f"{type(model).__module__}:{type(model).__qualname__}", "unregistered", "?"
    return info.target, info.distribution, info.version


def save_checkpoint(model: GenerativeModel, folder: Path, *, data_sha256: str, summary: dict[str, Any]) -> None:
    target, distribution, version = _identity(model)
    tensors = {name: torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).contiguous() for name, value in model.state().items()}
    write_bytes_atomic(folder / WEIGHTS, save_tensors(tensors))
    write_json_atomic(
        folder / CHECKPOINT_JSON,
        {
            "format": FORMAT,
            "plugin": model.name,
            "class": target,
            "distribution": distribution,
            "version": version,
            "config": model.config.model_dump(mode="json"),
            "colors": model.colors,
            "size": model.size,
            "data_sha256": data_sha256,
            "training": summary,
        },
    )


def read_checkpoint_info(folder: Path) -> dict[str, Any]:
    path = folder / CHECKPOINT_JSON
    if not path.is_file():
        raise DataError(f"{folder}: no trained model here (missing {CHECKPOINT_JSON}); train it first: dvc repro")
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {_restore(folder)}") from None
    if record.get("format") != FORMAT:
        raise DataError(f"{path}: not a pokegen checkpoint (format {record.get('format')!r})")
    return record


def _restore(folder: Path, plugin: str | None = None) -> str:
    """What a damaged checkpoint needs: DVC's cached copy back, or the model trained again."""
    retrain = f"dvc repro train@{plugin}" if plugin else "dvc repro"
    return f"restore it from the DVC cache (dvc checkout --force {folder}) or re-train it ({retrain})"


def _retrain(record: dict[str, Any]) -> str:
    """What a checkpoint another version of its plugin wrote needs: who wrote it, and the command that re-trains it."""
    return f"it was written by {record.get('distribution', '?')} {record.get('version', '?')}. Re-train it: dvc repro train@{record['plugin']}"


def load_checkpoint(folder: Path, plugin: type[GenerativeModel] | None = None) -> GenerativeModel:
    """Rebuild the model saved in ``folder``: plugin from the registry (or ``plugin``), config validated, weights loaded.

    Raises DataError when the checkpoint's config or weights no longer fit the installed plugin (another version wrote it)."""
    record = read_checkpoint_info(folder)
    plugin = plugin or get_plugin(record["plugin"], key=f"{folder / CHECKPOINT_JSON}: plugin")
    # A checkpoint written before the sampling settings left the config (temperature, ...) still loads: they no longer
    # change what the model learned, and come from sample.<name> now.
    moved = set(plugin.Sampling.model_fields) - set(plugin.Config.model_fields)
    learned = {key: value for key, value in record["config"].items() if key not in moved}
    try:
        config = plugin.Config.model_validate(learned)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors())
        raise DataError(f"{folder / CHECKPOINT_JSON}: its config does not fit the installed {record['plugin']} plugin ({problems}); {_retrain(record)}") from None
    model = plugin(config, record["colors"], record["size"])
    try:
        tensors = load_tensors((folder / WEIGHTS).read_bytes())
    except (OSError, SafetensorError) as exc:
        raise DataError(f"{folder / WEIGHTS}: unreadable ({exc}); {_restore(folder, record['plugin'])}") from None
    try:
        model.load_state(tensors)
    except (RuntimeError, KeyError, ValueError) as exc:  # torch: missing or unexpected tensors, other shapes
        detail = textwrap.shorten(str(exc), 300, placeholder=" ...")  # torch lists every tensor; cut at a word
        raise DataError(f"{folder / WEIGHTS}: its weights do not fit the installed {record['plugin']} plugin's network ({detail}); {_retrain(record)}") from None
    return model
