"""GAN for palette images: WGAN-GP with a per-pixel palette choice seen in RGB, DiffAugment and upsample-convolve.

Output scheme: the generator gives, for every pixel, a softmax over the K palette colors and draws
the most likely one. The critic sees what a user sees: each pixel's RGB color, for real sprites and
generated ones alike. Between the two, a straight-through estimator (Bengio et al., 2013): forward,
the generated map is the chosen colors' RGB exactly; backward, the gradient flows through the
softmax as if the map were the probability-weighted colors. So the critic cannot tell generated
sprites by blended, off-palette colors (a softmax map scored against one-hot maps drew dark gray
blobs here; recall 0.25), and the generator learns palettes, not averages. The RGB colors come from
the palette the core hands to ``fit`` (``FitContext.palette``); sampling needs only the softmax.

The critic is frozen (requires_grad off) while the generator steps, and the generator's output
is detached while the critic steps. A few hundred sprites are too few for a critic on its own: it
memorises them and its gradient stops telling the generator anything. DiffAugment (Zhao et al.,
NeurIPS 2020) shows the critic every map, real and generated alike, through the same random
translation and cutout, in the critic's step and the generator's, so neither side can win by what
the augmentation hides. The generator upsamples by nearest neighbour and then convolves:
transposed convolutions with stride 2 leave a checkerboard (Odena et al., Distill 2016), which on
sprites showed as vertical stripes.

Every sprite's code also sets a preference over the palette: a linear map of the code added to all its
pixels' logits. Without it, each training settled on one handful of colors (four or five) for every
sprite, mixed in patches (palette JS 0.41); with it each sprite gets its own color scheme, often a flat
body in one color inside a dark outline (palette JS 0.25, C2ST 0.60 against 0.69-0.74, for some
precision: benchmarks/RESULTS.md).

A GAN has no likelihood, and its losses say little about its pictures; and what it draws moves from epoch to epoch
(on two machines the same commit kept epochs 98 and 43, one far noisier). So it validates and keeps a moving average
of its weights (the core's ``ema``: Yazici et al., ICLR 2019; the EMA generator of ProGAN and StyleGAN), which holds
still between epochs, and every ``monitor_every`` epochs asks the evaluation's own judge (FitContext.judge) how often
it tells the generator's sprites from the validation sprites; the core keeps the epoch it found hardest to tell,
never looking at the test split. Each epoch also logs the samples' diversity. NaN losses stop training (the core's
guard); so does a collapse to near-identical samples.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pokegen.errors import ParamsError, PluginContractError, TrainingDiverged
from pokegen.plugin import FitContext, FitResult, Resources, TrainSettings
from pokegen.torch_model import TorchModel


class GANConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    latent_dim: int = Field(64, ge=1)
    channels: int = Field(64, ge=1)
    critic_steps: int = Field(2, ge=1, description="critic updates per generator update (5 left the generator ~200 steps in 100 epochs)")
    gradient_penalty: float = Field(10.0, ge=0)
    collapse_diversity: float = Field(0.02, ge=0, lt=1, description="stop if samples differ in fewer than this share of pixels")
    collapse_after_epochs: int = Field(10, ge=0, description="epochs before the collapse guard starts watching")
    augment: list[Literal["translation", "cutout"]] = Field(["translation", "cutout"], description="DiffAugment policy; [] for none")


class _Generator(nn.Module):
    def __init__(self, colors: int, size: int, config: GANConfig) -> None:
        super().__init__()
        c, self.size, cells = config.channels, size, math.ceil(size / 4)
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim, 2 * c * cells * cells), nn.ReLU(),
            nn.Unflatten(1, (2 * c, cells, cells)),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, colors, 1),
        )  # fmt: skip
        # Each sprite's preference over the palette, straight from its code, added to every pixel's logits: a
        # sprite's colors vary with its code as a whole, where the convolutions alone settled on one handful for all.
        self.palette_bias = nn.Linear(config.latent_dim, colors)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-pixel color probabilities (B, K, S, S)."""
        logits = self.net(codes)[:, :, : self.size, : self.size] + self.palette_bias(codes)[:, :, None, None]
        return torch.softmax(logits, dim=1)


class _Critic(nn.Module):
    """Scores RGB maps (B, 3, S, S) in [-1, 1]."""

    def __init__(self, size: int, config: GANConfig) -> None:
        super().__init__()
        c = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )  # fmt: skip
        self.score = nn.Linear(self.features(torch.zeros(1, 3, size, size)).shape[1], 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(maps)).squeeze(1)


def translate(maps: torch.Tensor, background: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each map by up to ratio * size pixels each way (DiffAugment's translation). What comes in at
    the edge is the ``background`` color (C,), one value per channel: sprites stand on it, where photos would get zeros."""
    count, _, height, width = maps.shape
    reach = max(1, round(height * ratio))
    shift = torch.randint(-reach, reach + 1, (2, count, 1, 1), device=maps.device)
    rows = torch.arange(height, device=maps.device).view(1, height, 1) + shift[0] + reach
    columns = torch.arange(width, device=maps.device).view(1, 1, width) + shift[1] + reach
    padded = F.pad(maps - background.view(1, -1, 1, 1), (reach, reach, reach, reach)) + background.view(1, -1, 1, 1)
    return padded[torch.arange(count, device=maps.device).view(count, 1, 1), :, rows, columns].permute(0, 3, 1, 2)


def cutout(maps: torch.Tensor, background: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Paint one square of ratio * size pixels a side, at a random place in each map, in the ``background``
    color (DiffAugment's cutout)."""
    count, _, height, width = maps.shape
    half = max(1, round(height * ratio / 2))
    centre = torch.stack([torch.randint(0, height, (count,), device=maps.device), torch.randint(0, width, (count,), device=maps.device)])
    rows = torch.arange(height, device=maps.device).view(1, height, 1)
    columns = torch.arange(width, device=maps.device).view(1, 1, width)
    hole = (((rows - centre[0].view(count, 1, 1)).abs() < half) & ((columns - centre[1].view(count, 1, 1)).abs() < half)).unsqueeze(1)
    return torch.where(hole, background.view(1, -1, 1, 1), maps)


AUGMENTATIONS = {"translation": translate, "cutout": cutout}


class _Pair(nn.Module):
    def __init__(self, colors: int, size: int, config: GANConfig) -> None:
        super().__init__()
        self.generator = _Generator(colors, size, config)
        self.critic = _Critic(size, config)
        # The palette's RGB in [-1, 1], filled by fit; a buffer so it moves to the training device with the
        # networks, and not persistent: sampling needs only the softmax, so checkpoints stay as they were.
        self.register_buffer("palette", torch.zeros(colors, 3), persistent=False)


class GAN(TorchModel):
    name = "gan"
    Config = GANConfig
    resources = Resources(gpus=0, cpus=2, memory_gb=2)
    # No likelihood: every epoch trains, and of those the judge looked at, the one it found hardest to tell is kept.
    monitor, monitor_mode, monitor_every = "val_judge", "min", 10
    train_defaults = {"epochs": 100, "batch_size": 64, "lr": 5e-4, "ema": 0.99}
    # Its own training_step (Adam, no clipping, no weight decay); no patience: a GAN's figures fall and recover.
    train_settings = frozenset({"epochs", "batch_size", "lr", "ema", "seed"})

    def __init__(self, config: GANConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.module = _Pair(colors, size, config)
        self.judge = None  # FitContext.judge, for validation_metrics

    def optimizers(self, settings: TrainSettings) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.module.generator.parameters(), lr=settings.lr, betas=(0.5, 0.9)),
            torch.optim.Adam(self.module.critic.parameters(), lr=settings.lr, betas=(0.5, 0.9)),
        ]

    def _codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.config.latent_dim), generator=generator, device=self.device)

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        mix = torch.rand((len(real), 1, 1, 1), device=real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (gradient,) = torch.autograd.grad(self.module.critic(between).sum(), between, create_graph=True)
        return ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def _augment(self, maps: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        for name in self.config.augment:
            maps = AUGMENTATIONS[name](maps, background)
        return maps

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        if context.palette is None or np.shape(context.palette) != (self.colors, 3):
            raise PluginContractError(
                f"gan: fit needs the palette's RGB colors, FitContext(palette=...) of shape ({self.colors}, 3), "
                f"got {None if context.palette is None else np.shape(context.palette)}; the core's train stage passes it"
            )
        if context.judge is None:
            raise PluginContractError("gan: fit needs the evaluation's judge to choose its epoch, FitContext(judge=...); the core's train stage passes it")
        if len(val) < 2:
            raise ParamsError(
                f"gan: choosing the best epoch needs at least 2 validation sprites (the judge's k-NN figures), got {len(val)}; "
                "raise tensorize.val in params.yaml"
            )
        self.judge = context.judge
        self.module.palette.copy_(torch.as_tensor(np.asarray(context.palette), dtype=torch.float32) / 127.5 - 1)
        return super().fit(train, val, settings, context)

    def _seen(self, probabilities: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
        """RGB maps (B, 3, S, S) of the chosen colors, with the softmax's gradient (straight-through)."""
        chosen = F.one_hot(probabilities.argmax(dim=1), self.colors).permute(0, 3, 1, 2).to(probabilities.dtype)
        return torch.einsum("bkhw,kc->bchw", chosen + probabilities - probabilities.detach(), palette)

    def training_step(self, batch: torch.Tensor, optimizers: list[torch.optim.Optimizer], step: int) -> dict[str, float]:
        generator_opt, critic_opt = optimizers
        gen, critic = self.module.generator, self.module.critic
        palette = self.module.palette
        corners = batch[:, [0, 0, -1, -1], [0, -1, 0, -1]].reshape(-1)  # the background: the batch's commonest corner color
        background = palette[torch.bincount(corners, minlength=self.colors).argmax()]
        real = self._augment(palette[batch].permute(0, 3, 1, 2), background)

        fake = self._augment(self._seen(gen(self._codes(len(batch))), palette).detach(), background)  # the critic's step leaves the generator alone
        wasserstein = critic(real).mean() - critic(fake).mean()
        critic_loss = -wasserstein + self.config.gradient_penalty * self._penalty(real, fake)
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        metrics = {"critic_loss": critic_loss.item(), "wasserstein": wasserstein.item()}

        if step % self.config.critic_steps == self.config.critic_steps - 1:
            critic.requires_grad_(False)  # the critic is frozen while the generator steps
            generator_loss = -critic(self._augment(self._seen(gen(self._codes(len(batch))), palette), background)).mean()
            generator_opt.zero_grad(set_to_none=True)
            generator_loss.backward()
            generator_opt.step()
            critic.requires_grad_(True)
            metrics["generator_loss"] = generator_loss.item()
        return metrics

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        samples = self.sample(256, seed=0)
        half = len(samples) // 2
        diversity = float((samples[:half] != samples[half:]).mean())
        if epoch > self.config.collapse_after_epochs and diversity < self.config.collapse_diversity:
            raise TrainingDiverged(
                f"gan: mode collapse in epoch {epoch}: samples differ in only {diversity:.1%} of pixels. "
                "The last good checkpoint is kept; lower models.gan.train.lr or change the seed, then run again."
            )
        row = {"sample_diversity": diversity}
        if epoch % self.monitor_every == 0 or epoch == self.settings.epochs:  # the judge takes seconds: not every epoch
            verdict = self.judge(self.sample)
            row.update(val_judge=verdict.accuracy, val_precision=verdict.neighbours["precision"], val_recall=verdict.neighbours["recall"])
        return row

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        was_training = self.module.training
        self.module.eval()
        probabilities = self.module.generator(self._codes(n, torch.Generator(device=self.device).manual_seed(seed)))
        self.module.train(was_training)
        return probabilities.argmax(dim=1).cpu().numpy().astype(np.uint8)
