"""The model plugin contract: what a generative model class declares and answers.

A plugin is a class registered under the entry-point group ``pokegen.models``::

    [project.entry-points."pokegen.models"]
    mymodel = "mypkg.model:MyModel"

It declares:
    name         the key users write in params.yaml (models.<name>)
    Config       a pydantic model of what it learns with (unknown keys are errors): changing one re-trains it
    Sampling     a pydantic model of how it draws (sample.<name>: temperature, ...): changing one re-evaluates it,
                 never re-trains it; the core sets ``model.sampling`` before it samples
    resources    Resources(gpus, cpus, memory_gb) its training task needs; users may override
    likelihood   "exact", "bound" or None: what log_prob returns, if it has one
    completes_any_mask  True if complete fills any mask, not only the lower rows (evaluate.masks then shows it)

and answers, for palette images of shape (n, size, size) with values < colors:
    __init__(config, colors, size)      build an untrained model (the core seeds torch first)
    train_settings  the TrainSettings it uses (epochs, lr, ...); others in params.yaml are refused
    fit(train, val, settings, context)  train; returns FitResult(history, best_epoch)
    sample(n, seed) -> (n, S, S) uint8  new sprites
    state() / load_state(tensors)       weights as a flat {name: tensor}; save/load are in the core

Optional capabilities, found by name and used by evaluation when present:
    log_prob(images) -> (n,) float64    log-likelihood in nats, exact or a lower bound (see likelihood)
    complete(images, mask, seed)        fill the pixels where mask is True
    conditional_log_prob(images, mask)  log p(pixels under mask | the others), nats, exact (n,) float64
    elbo(images) -> (n,) float64        the evidence lower bound in nats, beside a tighter bound in log_prob
    kl_per_dimension(images) -> (d,)    mean KL of each code dimension in nats (~0: collapsed to the prior)
    encode(images) / decode(codes)      a latent space

Torch models subclass TorchModel instead: they supply ``module``, ``optimizers`` and
``training_step`` (and ``validation_metrics``), and the core's loop in pokegen.training does
seeding, epochs, early stopping, checkpoints, resume and progress.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pokegen.errors import PluginContractError

CAPABILITIES = ("log_prob", "elbo", "kl_per_dimension", "complete", "conditional_log_prob", "encode", "decode")
ACTIVE_CODE_NATS = 0.01  # a code dimension whose mean KL is below this carries (almost) nothing: collapsed


def bits_per_pixel(nats_per_image: Any, pixels: int) -> float:
    """Mean bits per pixel from per-image negative log-likelihoods in nats (a numpy array or torch tensor)."""
    return float(nats_per_image.mean()) / (pixels * math.log(2))


class Resources(BaseModel):
    """What one training task needs. gpus > 0 means it needs that many GPUs (see TrainSettings.cpu_fallback)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gpus: int = Field(0, ge=0)
    cpus: int = Field(1, ge=1)
    memory_gb: float = Field(2.0, gt=0)


class TrainSettings(BaseModel):
    """Training knobs every model has (models.<name>.train in params.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this (None: no clipping)")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better validation score")
    seed: int = Field(0, ge=0)
    ema: float = Field(
        0.0, ge=0, lt=1,
        description="decay of a moving average of the weights, updated after every step, that is validated and kept "
        "in place of the last step's weights (0: none; 0.99: about the last 100 steps)",
    )  # fmt: skip
    cpu_fallback: bool = Field(False, description="train on the CPU, with a warning, when the GPUs asked for are missing")


TRAIN_SETTINGS = frozenset(TrainSettings.model_fields)
ALWAYS_ACCEPTED = frozenset({"cpu_fallback"})  # about where a model trains, not how: every plugin takes it


@dataclass(frozen=True)
class FitResult:
    """What fit returns: one row of metrics per epoch, the epoch (1-based) whose weights the model kept,
    and the history column it was chosen on (None: no choice, the last epoch)."""

    history: list[dict[str, float]]
    best_epoch: int
    monitor: str | None = None


# The plugin contract's version, shown by `pokegen models`. A minor version may deprecate a part of the contract: it
# keeps working, with a PluginAPIDeprecationWarning naming the replacement, until the next minor version removes it
# (as pluggy and scikit-learn do). The changes, version by version: docs/plugins.md, "Changelog".
API_VERSION = "1.1"


class PluginAPIDeprecationWarning(DeprecationWarning):
    """A plugin uses a part of the contract that a later API version removes; the message says what to write instead."""


Sampler = Callable[[int, int], np.ndarray]  # (count, seed) -> (count, S, S) uint8 sprites, as GenerativeModel.sample


def sample_in_chunks(sample: Sampler, count: int, seed: int, chunk: int = 256) -> np.ndarray:
    """``count`` sprites in chunks of ``chunk`` (chunk i drawn with seed + i), so that a model's sampling memory
    (a Transformer's key/value cache) stays bounded however many are asked for."""
    return np.concatenate([sample(min(chunk, count - start), seed + start // chunk) for start in range(0, count, chunk)])


@dataclass
class FitContext:
    """What the core hands to fit: what the palette indices look like, the judge, where to keep resumable state,
    the device, and a progress callback."""

    palette: np.ndarray | None = None  # (colors, 3) uint8 RGB of each palette index; the train stage always passes it
    # The evaluation's judge on the validation sprites (pokegen.judge.validation_judge): given a sampler, one judge
    # trained on the training sprites against its samples, scored on the validation sprites against fresh ones
    # (a JudgeRun: accuracy, and precision/recall in its space). The train stage always passes it.
    judge: Callable[[Sampler], Any] | None = None
    device: str = "cpu"
    resume_dir: Path | None = None
    on_epoch: Callable[[dict[str, float]], None] | None = None
    on_batch: Callable[[int, int, int], None] | None = None  # (epoch, batch, batches), for a progress bar


class NoSampling(BaseModel):
    """The Sampling of a model with no settings for how it draws (a GAN draws argmax colors from a code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerativeModel(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    Sampling: ClassVar[type[BaseModel]] = NoSampling
    resources: ClassVar[Resources] = Resources()
    likelihood: ClassVar[Literal["exact", "bound"] | None] = None
    completes_any_mask: ClassVar[bool] = False  # complete() fills any mask, not only the lower rows
    train_defaults: ClassVar[dict[str, Any]] = {}  # the plugin's own defaults for TrainSettings (epochs, lr, ...)
    # The TrainSettings keys fit reads; params.yaml may set only these (and cpu_fallback). Not-torch models use few.
    train_settings: ClassVar[frozenset[str]] = frozenset({"epochs", "seed"})

    def __init__(self, config: BaseModel, colors: int, size: int) -> None:
        self.config = config
        self.colors = colors
        self.size = size
        self.sampling: BaseModel = self.Sampling()  # sample.<name> in params.yaml; the core sets it after loading

    @abstractmethod
    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        """Train on palette images; return each epoch's metrics and the epoch whose weights were kept."""

    @abstractmethod
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n new sprites as palette indices, (n, size, size) uint8."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Weights as {name: torch.Tensor or numpy array}, enough for load_state to rebuild the model."""

    @abstractmethod
    def load_state(self, tensors: dict[str, Any]) -> None:
        """Undo state()."""

    def to(self, device: str) -> GenerativeModel:
        """Move the model to a torch device ('cpu', 'cuda'); models that are not torch stay where they are."""
        return self

    @classmethod
    def capabilities(cls) -> list[str]:
        return [name for name in CAPABILITIES if callable(getattr(cls, name, None))]


def checked_fit_result(model: GenerativeModel, result: object) -> FitResult:
    """What ``model.fit`` returned, as a FitResult; PluginContractError naming the plugin and the fix if it is not one.

    API 1.0's bare history list still works in 1.1, with a PluginAPIDeprecationWarning: the model keeps the weights
    of its last epoch, as 1.0 said. API 1.2 refuses it."""
    name = type(model).__name__
    if isinstance(result, list) and all(isinstance(row, dict) for row in result):
        warnings.warn(
            f"{name}.fit returned a bare history list (plugin API 1.0). Return pokegen.plugin.FitResult(history, "
            "best_epoch) instead: API 1.2 refuses a list (docs/plugins.md, Changelog).",
            PluginAPIDeprecationWarning,
            stacklevel=2,
        )
        result = FitResult(result, best_epoch=len(result))
    if not isinstance(result, FitResult):
        raise PluginContractError(
            f"{name}.fit returned {type(result).__name__}; return pokegen.plugin.FitResult(history, best_epoch)"
        )
    if not result.history or not 1 <= result.best_epoch <= len(result.history):
        raise PluginContractError(
            f"{name}.fit returned best_epoch {result.best_epoch} for {len(result.history)} epochs of history; "
            "it must name one of them (1-based)"
        )
    return result
