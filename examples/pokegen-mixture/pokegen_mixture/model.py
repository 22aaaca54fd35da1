"""A mixture of per-pixel categorical distributions, fitted by EM (numpy only).

    p(x) = Σ_m π_m Π_t θ_m[t, x_t]

Exact likelihood; completion samples the component from its posterior given the visible
pixels, then the covered pixels from that component.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import logsumexp

from pokegen.plugin import FitContext, FitResult, GenerativeModel, Resources, TrainSettings, bits_per_pixel


class MixtureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    components: int = Field(16, ge=1)
    smoothing: float = Field(0.1, gt=0, description="pseudo-count added to every color of every pixel")


class CategoricalMixture(GenerativeModel):
    name = "mixture"
    Config = MixtureConfig
    likelihood = "exact"
    resources = Resources(gpus=0, cpus=1, memory_gb=1)
    train_defaults = {"epochs": 30}  # EM iterations
    train_settings = frozenset({"epochs", "seed"})  # EM has no learning rate, batches or gradients

    def __init__(self, config: MixtureConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.log_weights = np.full(config.components, -np.log(config.components))
        self.log_theta = np.full((config.components, size * size, colors), -np.log(colors))

    def _joint(self, images: np.ndarray) -> np.ndarray:
        """log π_m + log p(x | m), shape (n, M)."""
        flat = images.reshape(len(images), -1).astype(np.int64)
        pixels = np.arange(flat.shape[1])
        return self.log_weights[None, :] + self.log_theta[:, pixels, flat].sum(axis=-1).T

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        rng = np.random.default_rng(settings.seed)
        one_hot = np.eye(self.colors)[train.reshape(len(train), -1)]  # (n, T, K)
        responsibilities = rng.dirichlet(np.ones(self.config.components), size=len(train))  # random start
        history = []
        for epoch in range(1, settings.epochs + 1):
            counts = np.einsum("nm,ntk->mtk", responsibilities, one_hot) + self.config.smoothing  # M step
            self.log_theta = np.log(counts / counts.sum(axis=-1, keepdims=True))
            weights = responsibilities.sum(axis=0) + 1e-9
            self.log_weights = np.log(weights / weights.sum())
            joint = self._joint(train)  # E step
            responsibilities = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
            pixels = self.size * self.size
            row = {
                "epoch": epoch,
                "train_bits_per_pixel": bits_per_pixel(-logsumexp(joint, axis=1), pixels),
                "val_bits_per_pixel": bits_per_pixel(-self.log_prob(val), pixels),
            }
            history.append(row)
            if context.on_epoch:
                context.on_epoch(row)
        return FitResult(history, best_epoch=len(history))  # EM keeps its last iteration

    def log_prob(self, images: np.ndarray) -> np.ndarray:
        return logsumexp(self._joint(images), axis=1)

    def _draw(self, components: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        probabilities = np.exp(self.log_theta[components])  # (n, T, K)
        cumulative = probabilities.cumsum(axis=-1)
        draws = (rng.random(probabilities.shape[:2])[..., None] > cumulative).sum(axis=-1)
        return np.minimum(draws, self.colors - 1).reshape(-1, self.size, self.size).astype(np.uint8)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return self._draw(rng.choice(self.config.components, size=n, p=np.exp(self.log_weights)), rng)

    def complete(self, images: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        flat = images.reshape(len(images), -1).astype(np.int64)
        visible = ~np.asarray(mask, dtype=bool).reshape(len(images), -1)
        pixels = np.arange(flat.shape[1])
        joint = self.log_weights[None, :] + (self.log_theta[:, pixels, flat] * visible[None]).sum(axis=-1).T
        posterior = np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
        components = np.array([rng.choice(self.config.components, p=p / p.sum()) for p in posterior])
        drawn = self._draw(components, rng)
        return np.where(mask, drawn, images).astype(np.uint8)

    def state(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights, "log_theta": self.log_theta}

    def load_state(self, tensors: dict[str, Any]) -> None:
        self.log_weights = np.asarray(tensors["log_weights"], dtype=np.float64)
        self.log_theta = np.asarray(tensors["log_theta"], dtype=np.float64)
