"""VAE with the lecture's 10-dimensional code; a convolutional encoder, and a decoder that draws the
K palette colors either with a small PixelCNN conditioned on the code (PixelVAE), or every pixel on
its own (the lecture's).

The lecture writes the code as c = exp(σ)·e + m and the KL term as Σ exp(σ) − (1 + σ) + m².
That KL treats exp(σ) as a variance, so σ is read here as the log-variance, and the code is
drawn with the matching standard deviation:

    c = exp(σ / 2) · e + m,      e ~ N(0, I)
    KL(q(c|x) || N(0, I)) = ½ Σ exp(σ) − (1 + σ) + m²

i.e. the lecture's KL term, halved (the lecture drops the ½, which only rescales it against
the reconstruction term). log_prob is the importance-weighted bound with k = iw_samples
codes (Burda et al., 2016); elbo() is the k = 1 case. Both are lower bounds on log p(x).

Why the PixelCNN decoder (Gulrajani et al., PixelVAE, 2017): a decoder that scores every pixel
independently can only draw each pixel's most likely color given the code, which on sprites is a
gray blob. The PixelCNN head draws pixel by pixel in raster order, each seeing the few pixels above
and to its left, so outlines and flat colors come out. Its view is kept local (a 5x5 masked
convolution, then `head_layers` 3x3 ones) so that the code must carry what is far away, the shape
and the palette (Chen et al., Variational Lossy Autoencoder, 2017); free bits (Kingma et al., 2016)
keep every code dimension from collapsing to the prior in training. `kl_per_dimension` shows it.

A local view cannot see which colors the sprite has used so far, and the code carries the palette only
roughly: without more, the decoder strewed one-off colors through its sprites (28.7 colors a sprite, real
ones 12.4), most of them dark grays. So it has the raster models' new-color gate (pokegen.autoregressive):
one more output per pixel, and every color the sprite has not used before that pixel loses softplus(gate)
nats; the colors nearly every sprite shares (white, the outline and inner-line grays) are spared. The
colors used before a pixel are exact knowledge of the pixels before it, so the bound stays a bound.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pokegen.autoregressive import SharedColorsConfig, colors_used_before, palette_gated, shared_colors
from pokegen.plugin import ACTIVE_CODE_NATS, FitContext, FitResult, Resources, TrainSettings, bits_per_pixel
from pokegen.torch_model import TorchModel


class VAESampling(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(
        0.85,
        gt=0,
        description="sampling temperature of the PixelCNN decoder (below 1: flatter colors, fewer stray pixels)",
    )


class VAEConfig(SharedColorsConfig):
    latent_dim: int = Field(10, ge=1, description="code size (the lecture: 10)")
    embed: int = Field(16, ge=1, description="per-pixel color embedding fed to the encoder")
    channels: int = Field(64, ge=1)
    decoder: Literal["pixelcnn", "factorized"] = Field(
        "pixelcnn", description="pixelcnn: a small PixelCNN conditioned on the code (PixelVAE); factorized: each pixel on its own (the lecture's)"
    )
    head_channels: int = Field(32, ge=1, description="channels of the PixelCNN decoder")
    head_layers: int = Field(2, ge=0, description="3x3 masked layers after its first 5x5 one: how far it sees")
    new_color_gate: bool = Field(True, description="the PixelCNN decoder's new-color gate, as the raster models' (false: none)")
    free_bits: float = Field(0.1, ge=0, description="nats per code dimension below which training does not push the KL")
    beta: float = Field(1.0, gt=0, description="weight of the KL term (1 = the true ELBO)")
    iw_samples: int = Field(64, ge=1, description="k of the importance-weighted bound used by log_prob")


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the pixels before the centre in raster order (and the centre itself, when
    ``include_centre``: every layer after the first, whose centre already holds only earlier pixels)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, include_centre: bool) -> None:
        super().__init__(channels_in, channels_out, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        centre = kernel // 2
        mask[:, :, centre, centre + int(include_centre) :] = 0
        mask[:, :, centre + 1 :, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class _PixelCNNHead(nn.Module):
    """Color logits of each pixel from the pixels before it and the code's feature map."""

    def __init__(self, colors: int, features: int, config: VAEConfig) -> None:
        super().__init__()
        h, layers = config.head_channels, config.head_layers
        self.colors, self.gated = colors, config.new_color_gate
        self.embed = nn.Embedding(colors, h)
        self.first = MaskedConv2d(h, h, 5, include_centre=False)
        self.layers = nn.ModuleList(MaskedConv2d(h, h, 3, include_centre=True) for _ in range(layers))
        self.condition = nn.Conv2d(features, h * (1 + layers), 1)  # the code into every layer
        self.out = nn.Conv2d(h, colors + int(self.gated), 1)  # the K color logits, and the new-color gate
        self.rows_seen = 2 + layers  # rows above a pixel that reach it: sampling needs only those
        # Never new to a sprite (fit finds them); a buffer, so the checkpoint keeps them with the weights.
        self.register_buffer("shared_colors", torch.zeros(colors, dtype=torch.bool))

    def outputs(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Every pixel's outputs before the gate: (B, K + 1, S, S) with the gate, (B, K, S, S) without."""
        conditions = self.condition(features).chunk(1 + len(self.layers), dim=1)
        x = self.first(self.embed(images).permute(0, 3, 1, 2)) + conditions[0]
        for layer, condition in zip(self.layers, conditions[1:], strict=True):
            x = x + layer(F.relu(x)) + condition
        return self.out(F.relu(x))

    def gate(self, outputs: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """Outputs (..., K + 1), channels last, and the colors used before each pixel (..., K) -> color logits (..., K)."""
        return palette_gated(outputs, used | self.shared_colors) if self.gated else outputs

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Color logits (B, K, S, S) of every pixel of ``images`` (teacher-forced)."""
        n, height, width = images.shape
        used = colors_used_before(images.reshape(n, -1), self.colors).reshape(n, height, width, self.colors)
        return self.gate(self.outputs(images, features).permute(0, 2, 3, 1), used).permute(0, 3, 1, 2)


class _Network(nn.Module):
    def __init__(self, colors: int, size: int, config: VAEConfig) -> None:
        super().__init__()
        c = config.channels
        self.size, self.cells = size, math.ceil(size / 4)
        self.embed = nn.Embedding(colors, config.embed)
        self.encoder = nn.Sequential(
            nn.Conv2d(config.embed, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        encoded = self.encoder(torch.zeros(1, config.embed, size, size)).shape[1]
        self.to_code = nn.Linear(encoded, 2 * config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, 2 * c * self.cells * self.cells), nn.ReLU(),
            nn.Unflatten(1, (2 * c, self.cells, self.cells)),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = _PixelCNNHead(colors, c, config) if config.decoder == "pixelcnn" else nn.Conv2d(c, colors, 1)

    @property
    def autoregressive(self) -> bool:
        return isinstance(self.head, _PixelCNNHead)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(code | image)."""
        features = self.encoder(self.embed(images).permute(0, 3, 1, 2))
        mean, log_var = self.to_code(features).chunk(2, dim=1)
        return mean, log_var

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """The code as a feature map (B, C, S, S)."""
        return self.decoder(codes)[:, :, : self.size, : self.size]

    def logits(self, codes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Color logits (B, K, S, S) of each pixel of ``images`` given its code (and, autoregressive, the pixels before it)."""
        features = self.features(codes)
        return self.head(images, features) if self.autoregressive else self.head(features)


class VAE(TorchModel):
    name = "vae"
    Config = VAEConfig
    Sampling = VAESampling
    likelihood = "bound"
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    # A moving average of the weights (ema) is validated and kept: over seeds 0 and 1, test bound 2.28 / 2.31 ->
    # 2.26 / 2.30 bits/pixel, precision 0.89 / 0.91 -> 0.93 / 0.93, C2ST 0.66 / 0.76 -> 0.64 / 0.68 (benchmarks/RESULTS.md).
    train_defaults = {"epochs": 60, "batch_size": 32, "lr": 1e-3, "patience": 8, "ema": 0.99}

    def __init__(self, config: VAEConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Network(colors, size, config)

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        if self.module.autoregressive:
            self.module.head.shared_colors.copy_(shared_colors(train, self.colors, self.config.shared_color_share))
        return super().fit(train, val, settings, context)

    def _terms(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: reconstruction negative log-likelihood in nats, and the KL of each code dimension (B, D)."""
        mean, log_var = self.module.encode(images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        codes = mean + torch.exp(0.5 * log_var) * noise
        reconstruction = F.cross_entropy(self.module.logits(codes, images), images, reduction="none").sum(dim=(1, 2))
        kl = 0.5 * (log_var.exp() - (1 + log_var) + mean.pow(2))
        return reconstruction, kl

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        reconstruction, kl = self._terms(batch)
        # Free bits: each dimension's KL, averaged over the batch, counts no lower than free_bits.
        kl_term = kl.mean(dim=0).clamp(min=self.config.free_bits).sum()
        return (reconstruction.mean() + self.config.beta * kl_term) / (self.size * self.size)

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        reconstruction, kl = self._terms(val)
        pixels = self.size * self.size
        return {
            "val_bits_per_pixel": bits_per_pixel(reconstruction + kl.sum(dim=1), pixels),  # the ELBO, as bits/pixel
            "val_kl_bits_per_pixel": bits_per_pixel(kl.sum(dim=1), pixels),
            "val_code_dims_in_use": float((kl.mean(dim=0) > ACTIVE_CODE_NATS).sum()),
        }

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def elbo(self, images: np.ndarray, seed: int = 0) -> np.ndarray:
        """Evidence lower bound of each image, in nats (one code per image, drawn with ``seed``)."""
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        reconstruction, kl = self._terms(batch, self._generator(seed))
        return -(reconstruction + kl.sum(dim=1)).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def kl_per_dimension(self, images: np.ndarray) -> np.ndarray:
        """Mean KL(q(code | x) || N(0, I)) of each code dimension over ``images``, in nats: ~0 is a collapsed one."""
        self.module.eval()
        mean, log_var = self.module.encode(torch.as_tensor(images, dtype=torch.long, device=self.device))
        return (0.5 * (log_var.exp() - (1 + log_var) + mean.pow(2))).mean(dim=0).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def log_prob(self, images: np.ndarray, samples: int | None = None, seed: int = 0) -> np.ndarray:
        """Importance-weighted lower bound on log p(x) with k = samples (default iw_samples), in nats."""
        self.module.eval()
        k = samples or self.config.iw_samples
        generator = self._generator(seed)
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        bounds = []
        for chunk in batch.split(max(1, 1024 // k)):  # 1,024 codes a chunk: ~0.5 GB each for the logits, with the gate
            mean, log_var = self.module.encode(chunk)
            std = torch.exp(0.5 * log_var)
            noise = torch.randn((k, *mean.shape), generator=generator, device=self.device)
            codes = mean + std * noise  # (k, B, D)
            targets = chunk.repeat(k, 1, 1)
            logits = self.module.logits(codes.reshape(-1, codes.shape[-1]), targets)
            log_px = -F.cross_entropy(logits, targets, reduction="none").sum(dim=(1, 2)).reshape(k, -1)
            log_pz = (-0.5 * codes.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_qz = (-0.5 * noise.pow(2) - 0.5 * math.log(2 * math.pi) - 0.5 * log_var).sum(-1)
            bounds.append(torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(k))
        return torch.cat(bounds).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Mean code of each image, (n, latent_dim) float32."""
        self.module.eval()
        mean, _ = self.module.encode(torch.as_tensor(images, dtype=torch.long, device=self.device))
        return mean.cpu().numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray, seed: int = 0) -> np.ndarray:
        """A sprite for each code, (n, S, S) uint8. PixelCNN: drawn pixel by pixel with the same random numbers
        (from ``seed``) for every code, so that sprites differ only through their codes, as the latent grid needs;
        factorized: each pixel's most likely color."""
        uniforms = torch.rand((1, self.size, self.size), generator=torch.Generator().manual_seed(seed))
        return self._decode(codes, uniforms.expand(len(codes), -1, -1))

    @torch.no_grad()
    def _decode(self, codes: np.ndarray, uniforms: torch.Tensor) -> np.ndarray:
        self.module.eval()
        codes_t = torch.as_tensor(codes, dtype=torch.float32, device=self.device)
        if not self.module.autoregressive:
            return self.module.logits(codes_t, None).argmax(dim=1).cpu().numpy().astype(np.uint8)
        return self._draw(self.module.features(codes_t), uniforms.to(self.device)).cpu().numpy().astype(np.uint8)

    def _draw(self, features: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Raster-order sampling by inverse CDF of ``uniforms`` (n, S, S). Each step runs the head only on the
        rows that reach the current one."""
        head, size, n = self.module.head, self.size, len(features)
        canvas = torch.zeros((n, size, size), dtype=torch.long, device=features.device)
        used = torch.zeros((n, self.colors), dtype=torch.bool, device=features.device)  # the colors each sprite has drawn
        for row in range(size):
            top = max(0, row - head.rows_seen)
            window_features = features[:, :, top : row + 1]
            for column in range(size):
                logits = head.gate(
                    head.outputs(canvas[:, top : row + 1], window_features)[:, :, row - top, column], used
                )
                cumulative = torch.softmax(logits / self.sampling.temperature, dim=1).cumsum(dim=1)
                drawn = (cumulative < uniforms[:, row, column, None]).sum(dim=1).clamp(max=self.colors - 1)
                canvas[:, row, column] = drawn
                used[torch.arange(n, device=used.device), drawn] = True
        return canvas

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randn((n, self.config.latent_dim), generator=generator).numpy()
        return self._decode(codes, torch.rand((n, self.size, self.size), generator=generator))
