"""PixelRNN, the lecture's model: a 1-layer LSTM over the 400-pixel raster sequence, drawing pixel by pixel.

The lecture feeds the LSTM only the pixel before; by default it is also fed the three pixels above and
the one two rows above (``context: two_rows``, the shared raster machinery in pokegen.autoregressive),
which the same 512 cells would otherwise have to remember across a whole row: with the three above, test
bits/pixel drops from 2.40 to ~2.1 in fewer epochs; the one two above tells a stroke that goes on from a
one-row stray, and halves the small pieces apart from the body in its samples (benchmarks/RESULTS.md).
Its last layer also gives the new-color gate (pokegen.autoregressive: 1.73 test bits/pixel with it). Trained on every position at once (teacher forcing). Sampling
carries the LSTM state forward, so an image costs one step per pixel. The likelihood is exact; any
mask can be completed (sampling-importance-resampling, pokegen.autoregressive.complete_any_mask).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from pokegen.autoregressive import FED, RasterModel, RasterSampling, SharedColorsConfig, Step, neighbour_tokens
from pokegen.plugin import Resources


class PixelRNNSampling(RasterSampling):
    # At temperature 1.0, 0.25 had the best mean validation F1 over sampling seeds 0-7 (0.841; 0.5: 0.822;
    # none: 0.823); ~11 colors a sprite (real sprites: ~12; benchmarks/RESULTS.md).
    new_color_penalty: float = Field(
        0.25, ge=0, description=RasterSampling.model_fields["new_color_penalty"].description
    )


class PixelRNNConfig(SharedColorsConfig):
    hidden: int = Field(512, ge=1, description="LSTM cells (the lecture: 512)")
    context: Literal["two_rows", "neighbours", "previous"] = Field(
        "two_rows",
        description="what each step is fed: neighbours, the pixel before and the three above it; two_rows, those and the "
        "one two rows above; previous, the pixel before only (the lecture's)",
    )
    embed: int = Field(32, ge=1, description="size of each fed pixel's color embedding")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on the LSTM output")


class _Network(nn.Module):
    def __init__(self, colors: int, config: PixelRNNConfig) -> None:
        super().__init__()
        self.fed = FED[config.context]  # the first of the neighbour tokens
        self.embed = nn.Embedding(colors + 1, config.embed)  # +1: off the sprite, or before the first pixel
        self.lstm = nn.LSTM(self.fed * config.embed, config.hidden, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, colors + 1)  # + the new-color gate (pokegen.autoregressive)

    def forward(self, neighbours: torch.Tensor, state=None):
        """neighbours (n, L, NEIGHBOURS) tokens -> color logits and the new-color gate (n, L, K + 1), and the LSTM
        state after them."""
        inputs = self.embed(neighbours[..., : self.fed]).flatten(2)
        out, state = self.lstm(inputs, state)
        return self.head(self.dropout(out)), state


class PixelRNN(RasterModel):
    name = "pixelrnn"
    Config = PixelRNNConfig
    Sampling = PixelRNNSampling
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    # With the pixels above fed in, validation bits/pixel stops improving after ~6 epochs on 712 sprites
    # (benchmarks/RESULTS.md): weight decay, and early stopping. Batch 8 costs the same per epoch as 32 on a
    # CPU and learns faster per epoch. A moving average of the weights (ema) is kept: 2.13 -> 2.07 test bits/pixel.
    train_defaults = {"epochs": 6, "batch_size": 8, "lr": 5e-3, "weight_decay": 1e-4, "patience": 2, "ema": 0.99}

    def __init__(self, config: PixelRNNConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Network(colors, config)

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.module(neighbour_tokens(images, self.colors))
        return outputs

    def make_step(self, n: int) -> Step:
        state = None

        def step(neighbours: torch.Tensor, position: int) -> torch.Tensor:
            nonlocal state
            outputs, state = self.module(neighbours[:, None, :], state)
            return outputs[:, -1]

        return step
