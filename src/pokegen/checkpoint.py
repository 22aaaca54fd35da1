"""A trained model on disk: a folder a person can read, and one load path that never unpickles code.

    models/<name>/model/
        checkpoint.json      plugin name, class, distribution and version, config, data hash, training summary
        weights.safetensors  the plugin's state() tensors

save_checkpoint and load_checkpoint are mirror images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from pokegen.errors import DataError
from pokegen.fileio import write_bytes_atomic, write_json_atomic
from pokegen.plugin import GenerativeModel
from pokegen.registry import get_plugin, plugin_info

CHECKPOINT_JSON = "checkpoint.json"
WEIGHTS = "weights.safetensors"
FORMAT = "pokegen.checkpoint.v1"


def save_checkpoint(model: GenerativeModel, folder: Path, *, data_sha256: str, summary: dict[str, Any]) -> None:
    info = plugin_info(model.name)
    tensors = {name: torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).contiguous() for name, value in model.state().items()}
    write_bytes_atomic(folder / WEIGHTS, save_tensors(tensors))
    write_json_atomic(
        folder / CHECKPOINT_JSON,
        {
            "format": FORMAT,
            "plugin": model.name,
            "class": info.target,
            "distribution": info.distribution,
            "version": info.version,
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
        raise DataError(f"{path}: not valid JSON ({exc}); train the model again") from None
    if record.get("format") != FORMAT:
        raise DataError(f"{path}: not a pokegen checkpoint (format {record.get('format')!r})")
    return record


def load_checkpoint(folder: Path) -> GenerativeModel:
    """Rebuild the model saved in ``folder``: plugin from the registry, config validated, weights loaded."""
    record = read_checkpoint_info(folder)
    plugin = get_plugin(record["plugin"], key=f"{folder / CHECKPOINT_JSON}: plugin")
    config = plugin.Config.model_validate(record["config"])
    model = plugin(config, record["colors"], record["size"])
    try:
        tensors = load_tensors((folder / WEIGHTS).read_bytes())
    except (OSError, SafetensorError) as exc:
        raise DataError(f"{folder / WEIGHTS}: unreadable ({exc}); train the model again") from None
    model.load_state(tensors)
    return model
