"""VAE with the lecture's 10-dimensional code; a convolutional encoder and decoder over the K palette colors.

The lecture writes the code as c = exp(σ)·e + m and the KL term as Σ exp(σ) − (1 + σ) + m².
That KL treats exp(σ) as a variance, so σ is read here as the log-variance, and the code is
drawn with the matching standard deviation:

    c = exp(σ / 2) · e + m,      e ~ N(0, I)
    KL(q(c|x) || N(0, I)) = ½ Σ exp(σ) − (1 + σ) + m²

i.e. the lecture's KL term, halved (the lecture drops the ½, which only rescales it against
the reconstruction term). log_prob is the importance-weighted bound with k = iw_samples
codes (Burda et al., 2016); elbo() is the k = 1 case. Both are lower bounds on log p(x).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pokegen.plugin import Resources, bits_per_pixel
from pokegen.training import TorchModel


class VAEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    latent_dim: int = Field(10, ge=1, description="code size (the lecture: 10)")
    embed: int = Field(16, ge=1, description="per-pixel color embedding fed to the encoder")
    channels: int = Field(64, ge=1)
    beta: float = Field(1.0, gt=0, description="weight of the KL term (1 = the true ELBO)")
    iw_samples: int = Field(64, ge=1, description="k of the importance-weighted bound used by log_prob")


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
            nn.Conv2d(c, colors, 1),
        )  # fmt: skip

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(code | image)."""
        features = self.encoder(self.embed(images).permute(0, 3, 1, 2))
        mean, log_var = self.to_code(features).chunk(2, dim=1)
        return mean, log_var

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-pixel color logits (B, K, S, S)."""
        return self.decoder(codes)[:, :, : self.size, : self.size]


class VAE(TorchModel):
    name = "vae"
    Config = VAEConfig
    likelihood = "bound"
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    train_defaults = {"epochs": 60, "batch_size": 32, "lr": 1e-3, "patience": 8}

    def __init__(self, config: VAEConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Network(colors, size, config)

    def _terms(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: reconstruction negative log-likelihood and KL, in nats, one code drawn per image."""
        mean, log_var = self.module.encode(images)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        codes = mean + torch.exp(0.5 * log_var) * noise
        reconstruction = F.cross_entropy(self.module.decode(codes), images, reduction="none").sum(dim=(1, 2))
        kl = 0.5 * (log_var.exp() - (1 + log_var) + mean.pow(2)).sum(dim=1)
        return reconstruction, kl

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        reconstruction, kl = self._terms(batch)
        return (reconstruction + self.config.beta * kl).mean() / (self.size * self.size)

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        reconstruction, kl = self._terms(val)
        pixels = self.size * self.size
        return {
            "val_bits_per_pixel": bits_per_pixel(reconstruction + kl, pixels),  # the ELBO, as bits/pixel
            "val_kl_bits_per_pixel": bits_per_pixel(kl, pixels),
        }

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def elbo(self, images: np.ndarray, seed: int = 0) -> np.ndarray:
        """Evidence lower bound of each image, in nats (one code per image, drawn with ``seed``)."""
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        reconstruction, kl = self._terms(batch, self._generator(seed))
        return -(reconstruction + kl).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def log_prob(self, images: np.ndarray, samples: int | None = None, seed: int = 0) -> np.ndarray:
        """Importance-weighted lower bound on log p(x) with k = samples (default iw_samples), in nats."""
        self.module.eval()
        k = samples or self.config.iw_samples
        generator = self._generator(seed)
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        bounds = []
        for chunk in batch.split(max(1, 2048 // k)):
            mean, log_var = self.module.encode(chunk)
            std = torch.exp(0.5 * log_var)
            noise = torch.randn((k, *mean.shape), generator=generator, device=self.device)
            codes = mean + std * noise  # (k, B, D)
            logits = self.module.decode(codes.reshape(-1, codes.shape[-1]))
            targets = chunk.repeat(k, 1, 1)
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
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The most likely color of every pixel given each code, (n, S, S) uint8."""
        self.module.eval()
        logits = self.module.decode(torch.as_tensor(codes, dtype=torch.float32, device=self.device))
        return logits.argmax(dim=1).cpu().numpy().astype(np.uint8)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        return self.decode(torch.randn((n, self.config.latent_dim), generator=generator).numpy())
