"""A small causal Transformer over the 400 raster pixels: past the lecture, and the project's best.

Each position's input is the sum of its already-drawn neighbours' color embeddings (the pixel before,
and the three above: pokegen.autoregressive) and a 2-D position embedding (row + column), so a block
of attention starts out knowing the sprite's geometry; causal self-attention then reads every pixel
drawn so far, so the sprite's palette and shape far away are one step off, not carried through an
LSTM's memory; the last layer also gives the new-color gate (pokegen.autoregressive). Pre-norm blocks
(GPT-2's arrangement), dropout, AdamW with weight decay and early stopping on validation bits/pixel keep
~1M parameters from memorising 712 sprites.

The likelihood is exact. Sampling draws one position at a time with a key/value cache, so each step
attends to the cached past instead of re-reading it. Like every RasterModel it completes any mask
(the left half, the middle, scattered pixels) by sampling-importance-resampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pokegen.autoregressive import FED, RasterModel, RasterSampling, SharedColorsConfig, Step, neighbour_tokens
from pokegen.plugin import Resources


class TransformerSampling(RasterSampling):
    """Temperature 1.0: below it (0.9 was the default by the block-color F1) its sprites come out smaller and flatter than
    real ones, which the judge tells apart more often (benchmarks/RESULTS.md)."""


class TransformerConfig(SharedColorsConfig):
    width: int = Field(128, ge=8, description="embedding size of every position")
    layers: int = Field(4, ge=1, description="Transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (must divide width)")
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        return self


class _Block(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.attention_norm = nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.out = nn.Linear(config.width, config.width)
        self.mlp_norm = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(), nn.Linear(4 * config.width, config.width))
        self.dropout = nn.Dropout(config.dropout)

    def _split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (n, heads, length, width / heads)

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.out(attended.transpose(1, 2).flatten(2)))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every position at once, each attending to itself and the positions before it."""
        q, k, v = self._split_heads(x)
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def forward_one(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], position: int) -> torch.Tensor:
        """One position (x: (n, 1, width)), its keys and values written into ``cache`` at ``position``."""
        q, k, v = self._split_heads(x)
        keys, values = cache
        keys[:, :, position : position + 1], values[:, :, position : position + 1] = k, v
        attended = F.scaled_dot_product_attention(q, keys[:, :, : position + 1], values[:, :, : position + 1])
        return self._finish(x, attended)


class _Network(nn.Module):
    def __init__(self, colors: int, size: int, config: TransformerConfig) -> None:
        super().__init__()
        self.size = size
        # The four adjacent neighbours only: it attends to every pixel before anyway, and fed the one two rows
        # above as well it lost 0.05 validation F1 (benchmarks/RESULTS.md)
        self.embed = nn.ModuleList(nn.Embedding(colors + 1, config.width) for _ in range(FED["neighbours"]))  # +1: off the sprite
        self.row = nn.Embedding(size, config.width)
        self.column = nn.Embedding(size, config.width)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, colors + 1)  # + the new-color gate (pokegen.autoregressive)

    def inputs(self, neighbours: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(n, L, NEIGHBOURS) tokens at raster ``positions`` (L,) -> (n, L, width), from the first four of them."""
        x = sum(embed(neighbours[..., i]) for i, embed in enumerate(self.embed))
        return self.dropout(x + self.row(positions // self.size) + self.column(positions % self.size))

    def forward(self, neighbours: torch.Tensor) -> torch.Tensor:
        x = self.inputs(neighbours, torch.arange(neighbours.shape[1], device=neighbours.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class SpriteTransformer(RasterModel):
    name = "transformer"
    Config = TransformerConfig
    Sampling = TransformerSampling
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    # lr 3e-3 reaches in 5 epochs what 1e-3 does in 6 (benchmarks/RESULTS.md); validation stops improving
    # after 7 epochs, where 712 sprites start to be memorised. A moving average of the weights (ema) is kept.
    train_defaults = {"epochs": 7, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "patience": 2, "ema": 0.99}

    def __init__(self, config: TransformerConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Network(colors, size, config)

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(neighbour_tokens(images, self.colors))

    def make_step(self, n: int) -> Step:
        network, config, length = self.module, self.config, self.size * self.size
        shape = (n, config.heads, length, config.width // config.heads)
        caches = [(torch.empty(shape, device=self.device), torch.empty(shape, device=self.device)) for _ in network.blocks]

        def step(neighbours: torch.Tensor, position: int) -> torch.Tensor:
            x = network.inputs(neighbours[:, None, :], torch.tensor([position], device=neighbours.device))
            for block, cache in zip(network.blocks, caches, strict=True):
                x = block.forward_one(x, cache, position)
            return network.head(network.norm(x))[:, -1]

        return step
