"""PixelRNN, the lecture's model: a 1-layer LSTM over the 400-pixel raster sequence, each pixel a 1-of-K code.

Trained on every position at once (teacher forcing). Sampling carries the LSTM state forward,
so an image costs one step per pixel and never re-reads a window. The likelihood is exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pokegen.plugin import Resources, bits_per_pixel
from pokegen.training import TorchModel


class PixelRNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hidden: int = Field(512, ge=1, description="LSTM cells (the lecture: 512)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on the LSTM output")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")


class _Network(nn.Module):
    def __init__(self, colors: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.colors = colors
        self.lstm = nn.LSTM(colors + 1, hidden, batch_first=True)  # +1: the start symbol before the first pixel
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, colors)

    def forward(self, inputs: torch.Tensor, state=None):
        out, state = self.lstm(F.one_hot(inputs, self.colors + 1).float(), state)
        return self.head(self.dropout(out)), state


class PixelRNN(TorchModel):
    name = "pixelrnn"
    Config = PixelRNNConfig
    likelihood = "exact"
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    # It overfits 712 sprites within ~15 epochs: weight decay, and early stopping on validation bits/pixel.
    # Batch 8 costs the same per epoch as 32 on a CPU and learns faster per epoch (benchmarks/RESULTS.md).
    train_defaults = {"epochs": 15, "batch_size": 8, "lr": 5e-3, "weight_decay": 1e-4, "patience": 3}

    def __init__(self, config: PixelRNNConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Network(colors, config.hidden, config.dropout)

    def _teacher_forced_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = images.reshape(len(images), -1)
        start = torch.full((len(images), 1), self.colors, dtype=torch.long, device=targets.device)
        logits, _ = self.module(torch.cat([start, targets[:, :-1]], dim=1))
        return logits, targets

    def _nats_per_image(self, images: torch.Tensor) -> torch.Tensor:
        logits, targets = self._teacher_forced_logits(images)
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        logits, targets = self._teacher_forced_logits(batch)
        return F.cross_entropy(logits.transpose(1, 2), targets)

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        nats = torch.cat([self._nats_per_image(chunk) for chunk in val.split(256)])
        return {"val_bits_per_pixel": bits_per_pixel(nats, self.size * self.size)}

    @torch.no_grad()
    def pixel_distributions(self, images: np.ndarray) -> np.ndarray:
        """p(pixel t | pixels before t) for every position: (n, size*size, colors), rows summing to 1."""
        self.module.eval()
        logits, _ = self._teacher_forced_logits(torch.as_tensor(images, dtype=torch.long, device=self.device))
        return torch.softmax(logits, dim=-1).cpu().numpy()

    @torch.no_grad()
    def log_prob(self, images: np.ndarray) -> np.ndarray:
        """Exact log-likelihood of each image, in nats."""
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        return -torch.cat([self._nats_per_image(chunk) for chunk in batch.split(256)]).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _continue(self, prefix: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample the rest of each raster sequence after ``prefix`` (n, L), carrying the LSTM state."""
        self.module.eval()
        total = self.size * self.size
        start = torch.full((len(prefix), 1), self.colors, dtype=torch.long, device=prefix.device)
        logits, state = self.module(torch.cat([start, prefix], dim=1))
        next_logits, pixels = logits[:, -1], [prefix]
        for position in range(prefix.shape[1], total):
            probabilities = torch.softmax(next_logits / self.config.temperature, dim=-1)
            pixel = torch.multinomial(probabilities, 1, generator=generator)
            pixels.append(pixel)
            if position + 1 < total:
                logits, state = self.module(pixel, state)
                next_logits = logits[:, -1]
        return torch.cat(pixels, dim=1).reshape(-1, self.size, self.size)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        empty = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        return self._continue(empty, generator).cpu().numpy().astype(np.uint8)

    @staticmethod
    def _known_lengths(mask: np.ndarray) -> np.ndarray:
        """Per image, how many raster pixels precede the cover. Raises ValueError unless the cover is a raster suffix."""
        flat_mask = np.asarray(mask, dtype=bool).reshape(len(mask), -1)
        known = np.where(flat_mask.any(axis=1), flat_mask.argmax(axis=1), flat_mask.shape[1])
        if not all(flat_mask[i, k:].all() for i, k in enumerate(known)):
            raise ValueError("PixelRNN completes a covered raster suffix (e.g. the lower rows); this mask is not one")
        return known

    def complete(self, images: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        """Fill the covered pixels (mask True). The cover must be a raster suffix, such as the lower part."""
        known = self._known_lengths(mask)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        result = np.array(images, dtype=np.uint8, copy=True)
        for length in np.unique(known):
            rows = np.flatnonzero(known == length)
            prefix = torch.as_tensor(result[rows].reshape(len(rows), -1)[:, :length], dtype=torch.long, device=self.device)
            result[rows] = self._continue(prefix, generator).cpu().numpy()
        return result

    @torch.no_grad()
    def conditional_log_prob(self, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Exact log p(covered pixels | the pixels before them), nats; the cover must be a raster suffix."""
        self._known_lengths(mask)
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        per_pixel = []
        for chunk in batch.split(256):
            logits, targets = self._teacher_forced_logits(chunk)
            per_pixel.append(-F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))
        log_probs = torch.cat(per_pixel).cpu().numpy().astype(np.float64)
        return (log_probs * np.asarray(mask, dtype=bool).reshape(len(images), -1)).sum(axis=1)
