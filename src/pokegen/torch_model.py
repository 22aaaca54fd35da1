"""TorchModel: the base class of torch plugins, what a trained one needs to load, move and draw.

Subclasses set ``self.module`` in __init__ and define ``loss`` (or override ``training_step``, as a GAN does) and
``validation_metrics``; fit runs the core's loop in pokegen.training. It lives apart from that loop, so that editing
the loop re-trains the models but re-runs no evaluation.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from pokegen.plugin import ALWAYS_ACCEPTED, TRAIN_SETTINGS, FitContext, FitResult, GenerativeModel, TrainSettings


class TorchModel(GenerativeModel):
    """Base for torch plugins. Subclasses set ``self.module`` in __init__ and define ``loss``
    (or override ``training_step``, as a GAN does) and ``validation_metrics``."""

    module: nn.Module
    settings: TrainSettings  # set by the training loop before the first step
    monitor: ClassVar[str | None] = (
        "val_bits_per_pixel"  # the figure the best epoch is chosen on; None: keep the last epoch
    )
    monitor_mode: ClassVar[Literal["min", "max"]] = "min"  # min: lower is better (bits/pixel, the judge); max: higher
    # Epochs whose number this divides (and the last) must report the monitor; the others may leave out a costly one
    # (the GAN's judge): they are not candidates for the best epoch and do not count against patience.
    monitor_every: ClassVar[int] = 1
    train_settings: ClassVar[frozenset[str]] = TRAIN_SETTINGS - ALWAYS_ACCEPTED  # this loop reads them all

    def optimizers(self, settings: TrainSettings) -> list[torch.optim.Optimizer]:
        return [torch.optim.AdamW(self.module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)]

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch of palette images (B, S, S) int64."""
        raise NotImplementedError(f"{type(self).__name__} defines neither loss nor training_step")

    def training_step(
        self, batch: torch.Tensor, optimizers: list[torch.optim.Optimizer], step: int
    ) -> dict[str, float]:
        (optimizer,) = optimizers
        loss = self.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.settings.grad_clip)
        optimizer.step()
        return {"loss": loss.item()}

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        """Metrics on the validation split after epoch ``epoch`` (1-based), in eval mode without gradients."""
        return {}

    def to(self, device: str) -> TorchModel:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        from pokegen.training import run_training  # the loop imports this class

        return run_training(self, train, val, settings, context)

    def state(self) -> dict[str, Any]:
        return {name: tensor.detach().cpu() for name, tensor in self.module.state_dict().items()}

    def load_state(self, tensors: dict[str, Any]) -> None:
        self.module.load_state_dict({name: torch.as_tensor(value) for name, value in tensors.items()})
