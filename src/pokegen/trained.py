"""A trained model as the DVC outputs hold it, drawing as params.yaml's sample.NAME says.

What `pokegen sample`, `complete`, `latent-grid` and `pokegen explore` load: the checkpoint from models/NAME/model,
its Sampling from sample.NAME, with any settings the user gives on top (``--sampling KEY=VALUE``, the explorer's
fields), validated against the plugin's own Sampling model.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml
from pydantic import BaseModel, ValidationError

from pokegen.checkpoint import load_checkpoint
from pokegen.errors import DataError, PokegenError
from pokegen.layout import Layout
from pokegen.params import Params
from pokegen.plugin import GenerativeModel


def parse_overrides(overrides: list[str]) -> dict[str, object]:
    """``["temperature=0.9"]`` -> {"temperature": 0.9} (values read as YAML). Raises PokegenError naming a bad one."""
    settings: dict[str, object] = {}
    for override in overrides:
        key, equals, value = override.partition("=")
        if not equals or not key.strip():
            raise PokegenError(f"--sampling {override!r}: write KEY=VALUE, for example temperature=0.9")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def sampling_settings(model: GenerativeModel, asked: Mapping, overrides: Mapping, source: str = "params.yaml") -> BaseModel:
    """The model's Sampling from sample.NAME (``asked``) with ``overrides`` on top. Raises PokegenError naming the key."""
    try:
        return model.Sampling.model_validate({**asked, **overrides})
    except ValidationError as exc:
        known = ", ".join(model.Sampling.model_fields) or "none"
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'sampling'}: {error['msg']}" for error in exc.errors())
        raise PokegenError(f"sampling settings of {model.name!r} ({source}): {problems} (its settings: {known})") from None


def missing_model_hint(name: str) -> str:
    """What brings a model's trained outputs: train it here, or pull a teammate's."""
    return f"train it with `dvc repro train@{name}`, or restore a recorded run's with `dvc pull`"


def load_trained(layout: Layout, params: Params, name: str, overrides: Mapping | None = None) -> GenerativeModel:
    """The trained model NAME, drawing as sample.NAME and ``overrides`` say. DataError when it is not trained here."""
    folder = layout.model_dir(name)
    if not folder.is_dir():
        raise DataError(f"{folder}: no trained model here; {missing_model_hint(name)}")
    model = load_checkpoint(folder)
    model.sampling = sampling_settings(model, params.sample.get(name) or {}, overrides or {}, f"{layout.params} sample.{name}")
    return model
