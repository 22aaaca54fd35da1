"""Baselines, built-in plugins like any model: trained by train@NAME (in milliseconds) and scored by evaluate@NAME.

    frequencies  every pixel drawn on its own from the training sprites' color frequencies
    positions    the same, one histogram per pixel position
    neighbours   each pixel given its left and upper neighbours (counts, backed-off smoothing): the row no neural
                 model should lose to, and a known answer of the judge (its fragments are caught)

Add or drop them in pipeline.models as any model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pokegen.plugin import FitContext, FitResult, GenerativeModel, Resources, TrainSettings


class FrequencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    smoothing: float = Field(1.0, gt=0, description="pseudo-count added to every color (Laplace)")


class FrequencyBaseline(GenerativeModel):
    """Every pixel on its own, from the training sprites' color frequencies (one histogram for every position)."""

    name = "frequencies"
    Config = FrequencyConfig
    likelihood = "exact"
    resources = Resources(gpus=0, cpus=1, memory_gb=1)
    train_settings = frozenset()  # nothing to tune: counting takes milliseconds
    per_position: ClassVar[bool] = False

    def __init__(self, config: FrequencyConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.probabilities = np.full((size * size, colors), 1.0 / colors)  # (positions, colors)

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings | None = None, context: FitContext | None = None) -> FitResult:
        flat = train.reshape(len(train), -1)
        if self.per_position:
            counts = np.stack([np.bincount(column, minlength=self.colors) for column in flat.T]).astype(np.float64)
        else:
            counts = np.tile(np.bincount(flat.reshape(-1), minlength=self.colors).astype(np.float64), (flat.shape[1], 1))
        counts += self.config.smoothing
        self.probabilities = counts / counts.sum(axis=1, keepdims=True)
        return FitResult([{"epoch": 1}], best_epoch=1)

    def _pixel_log_probs(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.int64)
        return np.log(self.probabilities[np.arange(flat.shape[1]), flat])  # (n, positions)

    def log_prob(self, images: np.ndarray) -> np.ndarray:
        return self._pixel_log_probs(images).sum(axis=1)

    def conditional_log_prob(self, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (self._pixel_log_probs(images) * np.asarray(mask, dtype=bool).reshape(len(images), -1)).sum(axis=1)

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cumulative = self.probabilities.cumsum(axis=1)
        uniform = rng.random((n, len(cumulative), 1))
        drawn = (uniform > cumulative[None]).sum(axis=2).clip(max=self.colors - 1)
        return drawn.reshape(n, self.size, self.size).astype(np.uint8)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return self._draw(n, np.random.default_rng(seed))

    def complete(self, images: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        return np.where(mask, self._draw(len(images), np.random.default_rng(seed)), images).astype(np.uint8)

    def state(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities}

    def load_state(self, tensors: dict[str, Any]) -> None:
        self.probabilities = np.asarray(tensors["probabilities"], dtype=np.float64)


class PositionBaseline(FrequencyBaseline):
    """Every pixel on its own, from the training sprites' color frequencies at its position."""

    name = "positions"
    per_position = True


class NeighbourConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # 64: the lowest validation bits/pixel on the course sprites (2.86; 16: 2.91, 256: 2.93)
    smoothing: float = Field(64.0, gt=0, description="weight of the backed-off estimate, in pseudo-counts")


class NeighbourBaseline(GenerativeModel):
    """p(pixel | its left and upper neighbours), counted on the training sprites, in raster order.

    A neighbour off the sprite's edge counts as one more color, "edge". Contexts seen rarely lean on
    p(pixel | left neighbour), and that on the color frequencies (interpolated smoothing, weight
    ``smoothing``), so every color keeps some probability. Exact likelihood; samples and completes
    pixel by pixel in raster order.
    """

    name = "neighbours"
    Config = NeighbourConfig
    likelihood = "exact"
    resources = Resources(gpus=0, cpus=1, memory_gb=1)
    train_settings = frozenset()

    def __init__(self, config: NeighbourConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        edge = colors + 1
        self.log_table = np.full((edge, edge, colors), -np.log(colors), dtype=np.float32)  # [left, up, color]

    def _contexts(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        padded = np.pad(images.astype(np.int64), ((0, 0), (1, 0), (1, 0)), constant_values=self.colors)  # the edge color
        return padded[:, 1:, :-1], padded[:, :-1, 1:]  # left, up: (n, S, S)

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings | None = None, context: FitContext | None = None) -> FitResult:
        left, up = self._contexts(train)
        edge, beta = self.colors + 1, self.config.smoothing
        counts = np.zeros((edge, edge, self.colors))
        np.add.at(counts, (left.ravel(), up.ravel(), train.astype(np.int64).ravel()), 1)
        colors = counts.sum(axis=(0, 1))
        p_color = (colors + 1) / (colors.sum() + self.colors)
        after_left = counts.sum(axis=1)
        p_after_left = (after_left + beta * p_color) / (after_left.sum(axis=1, keepdims=True) + beta)
        p_context = (counts + beta * p_after_left[:, None, :]) / (counts.sum(axis=2, keepdims=True) + beta)
        self.log_table = np.log(p_context).astype(np.float32)
        return FitResult([{"epoch": 1}], best_epoch=1)

    def log_prob(self, images: np.ndarray) -> np.ndarray:
        left, up = self._contexts(images)
        return self.log_table[left, up, images.astype(np.int64)].astype(np.float64).sum(axis=(1, 2))

    def complete(self, images: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        """Draw the pixels under ``mask`` in raster order, each given its (known or drawn) left and upper neighbours."""
        rng = np.random.default_rng(seed)
        drawn = images.astype(np.int64).copy()
        mask = np.asarray(mask, dtype=bool)
        cumulative = np.exp(self.log_table.astype(np.float64)).cumsum(axis=2)
        edge = np.full(len(drawn), self.colors)
        for row in range(self.size):
            for column in range(self.size):
                todo = mask[:, row, column]
                if not todo.any():
                    continue
                left = drawn[:, row, column - 1] if column else edge
                up = drawn[:, row - 1, column] if row else edge
                uniform = rng.random(len(drawn))[:, None]
                color = (uniform > cumulative[left, up] / cumulative[left, up, -1:]).sum(axis=1).clip(max=self.colors - 1)
                drawn[todo, row, column] = color[todo]
        return drawn.astype(np.uint8)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        blank = np.zeros((n, self.size, self.size), dtype=np.uint8)
        return self.complete(blank, np.ones_like(blank, dtype=bool), seed)

    def state(self) -> dict[str, Any]:
        return {"log_table": self.log_table}

    def load_state(self, tensors: dict[str, Any]) -> None:
        self.log_table = np.asarray(tensors["log_table"], dtype=np.float32)
