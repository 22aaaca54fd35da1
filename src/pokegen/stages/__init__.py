"""The stages pokegen runs, in one table: what dvc.yaml's commands name, what the CLI and the Prefect flow call.

Each stage is one module here, ``pokegen.stages.<name>``, with one function ``run_<name>``: it reads its inputs and
params, calls pure functions, and writes its outputs atomically. dvc.yaml lists each module, with the code it calls,
as a dependency of its own stage, so editing one stage's code re-runs that stage and what follows it. This package
imports none of them: a stage loads only its own code.

Adding a stage: its module, a row in STAGES, and its entry in dvc.yaml. The CLI (``pokegen stage NAME`` or its own
command), the flow and ``pokegen plan`` find it here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What a stage function may ask for, by parameter name; run_stage hands each the ones it names.
INPUTS = ("params", "layout", "spec", "specs", "on_progress", "context")


@dataclass(frozen=True)
class StageKind:
    """One kind of stage: dvc.yaml runs it as ``pokegen <command...>`` (a per-model stage adds the model's name)."""

    name: str
    command: tuple[str, ...]
    per_model: bool = False

    def function(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"{__name__}.{self.name}"), f"run_{self.name}")


STAGES: dict[str, StageKind] = {
    kind.name: kind
    for kind in (
        StageKind("check", ("stage", "check")),
        StageKind("download", ("stage", "download")),
        StageKind("quantize", ("stage", "quantize")),
        StageKind("tensorize", ("stage", "tensorize")),
        StageKind("train", ("train",), per_model=True),
        StageKind("evaluate", ("evaluate",), per_model=True),
        StageKind("report", ("report",)),
    )
}
DATA_STAGES = tuple(name for name, kind in STAGES.items() if kind.command[0] == "stage")  # `pokegen stage NAME`


def parse_command(words: tuple[str, ...]) -> tuple[StageKind, str | None] | None:
    """The stage kind and model (or None) of the words after `pokegen` in a dvc.yaml command; None if it is not one."""
    for kind in STAGES.values():
        if kind.per_model and len(words) == len(kind.command) + 1 and words[:-1] == kind.command:
            return kind, words[-1]
        if not kind.per_model and words == kind.command:
            return kind, None
    return None


def run_stage(name: str, **inputs: Any) -> Any:
    """Run stage ``name`` with the inputs its function names (INPUTS); the others are not passed."""
    function = STAGES[name].function()
    wanted = inspect.signature(function).parameters
    return function(**{key: value for key, value in inputs.items() if key in wanted})
