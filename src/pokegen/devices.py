"""Where a training runs: the device follows the plugin's declared resources and the machine."""

from __future__ import annotations

import logging
import os

import torch

from pokegen.errors import PokegenError
from pokegen.plugin import Resources

log = logging.getLogger(__name__)


class ResourceError(PokegenError):
    """The resources a model asks for are not on this machine."""


def choose_device(name: str, resources: Resources, cpu_fallback: bool) -> str:
    """'cuda' when the model asks for GPUs and they are here, else 'cpu' or ResourceError.

    Also limits torch's CPU threads to the declared cpus, so parallel trainings share the cores.
    """
    torch.set_num_threads(max(1, min(resources.cpus, os.cpu_count() or 1)))
    if resources.gpus == 0:
        return "cpu"
    available = torch.cuda.device_count()
    if available >= resources.gpus:
        return "cuda"
    problem = f"models.{name}.resources.gpus = {resources.gpus}, but this machine has {available} GPU(s)"
    if cpu_fallback:
        log.warning("%s; training on the CPU because models.%s.train.cpu_fallback is true", problem, name)
        return "cpu"
    raise ResourceError(
        f"{problem}. Run it where a GPU is, set models.{name}.resources.gpus: 0, "
        f"or allow the CPU with models.{name}.train.cpu_fallback: true"
    )
