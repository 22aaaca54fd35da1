"""Baseline models the report compares against, fitted on the same train split and scored by the same
evaluation as every plugin: pixels drawn independently from color frequencies, one histogram for the
whole sprite (global) or one per position. Not plugins: they live in the core and are never trained by DVC.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pokegen.plugin import FitContext, FitResult, GenerativeModel, TrainSettings


class FrequencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    per_position: bool = Field(False, description="one color histogram per pixel position instead of one for all")
    smoothing: float = Field(1.0, gt=0, description="pseudo-count added to every color (Laplace)")


class FrequencyBaseline(GenerativeModel):
    name = "frequencies"
    Config = FrequencyConfig
    likelihood = "exact"

    def __init__(self, config: FrequencyConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.probabilities = np.full((size * size, colors), 1.0 / colors)  # (positions, colors)

    @property
    def label(self) -> str:
        return "baseline: per-position frequencies" if self.config.per_position else "baseline: global color frequencies"

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings | None = None, context: FitContext | None = None) -> FitResult:
        flat = train.reshape(len(train), -1)
        if self.config.per_position:
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


def fitted_baselines(train: np.ndarray, colors: int) -> list[FrequencyBaseline]:
    """Both frequency baselines fitted on ``train`` (n, S, S)."""
    baselines = []
    for per_position in (False, True):
        baseline = FrequencyBaseline(FrequencyConfig(per_position=per_position), colors, train.shape[1])
        baseline.fit(train, train[:0])
        baselines.append(baseline)
    return baselines


def baseline_metrics(dataset, settings) -> dict[str, dict]:
    """Each baseline's label -> its evaluation metrics on ``dataset``'s test split (fitted on its train split)."""
    from pokegen.evaluation import evaluate  # the grader imports the plugin API; baselines are plugins too

    fitted = fitted_baselines(dataset.splits["train"], len(dataset.palette))
    return {baseline.label: evaluate(baseline, dataset, settings).metrics for baseline in fitted}
