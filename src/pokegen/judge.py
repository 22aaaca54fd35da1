"""The judge: a small convolutional network, trained from scratch, that tells a model's samples from real sprites.

This is the neural classifier two-sample test of Lopez-Paz & Oquab ("Revisiting Classifier Two-Sample Tests",
ICLR 2017), and the feature space of the project's precision and recall. For each seed a fresh network learns the training sprites against as many samples, with 15% of both
held back to stop its training when it no longer improves there; then it labels the held-out real sprites
(validation and test, which neither it nor the model saw) against as many fresh samples. Its accuracy on those:
0.5 means it cannot tell the samples from real sprites, 1.0 that they are trivially fake. The figure is the mean
over the seeds, beside its spread (standard deviation).

It sees what a person sees, each pixel's RGB color, and learns from mirror images and shifts of up to two pixels
of both sides alike, so it looks at what a sprite is drawn like, not where. Its last layer reads the whole
5x5 feature map (where things are: a body plan) and each feature's strongest response anywhere (a stray
speck, a broken outline). Known answers keep it honest (tests/test_judge.py): real against real 0.4-0.6;
uniform noise, the left-and-upper-neighbour baseline, real sprites with their quadrants shuffled (structure)
or 10% of their pixels recolored (speckle) are all caught at least 90% of the time.

Precision and recall (Kynkäänniemi et al. 2019, k-NN; density and coverage, Naeem et al. 2020) are taken in the
judge's own feature space, what its last layer reads, on the same held-out pairs: a space that sees shape, since
it was trained to tell these samples from sprites. Precision: the share of fresh samples that fall among the
held-out real sprites there; recall: the share of those real sprites that fall among the samples (the variety).
Known answers: held-out real sprites against real ones score at least 0.8 on both; the neighbour baseline's
fragments at most 0.3 precision (tests/test_judge.py). The old fixed space (block colors) could not see shape: it
gave that baseline 0.93.

No downloaded weights: torch only, a few seconds a seed on two CPU cores.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pokegen.plugin import Sampler, sample_in_chunks

CHANNELS = 16
MAX_EPOCHS = 20
MIN_EPOCHS = 8  # before it may stop: the first epochs' held-back loss says little
PATIENCE = 5  # epochs without a lower held-back loss before it stops
HELD_BACK = 0.15  # of its training pairs, to choose when to stop
BATCH = 64
LEARNING_RATE = 1e-3
SHIFT = 2  # pixels each way, the uncovered edge in white
PROTOCOL = (
    f"a {CHANNELS}-channel, 5-layer convolutional network on each pixel's RGB, trained from scratch per seed on the "
    f"training sprites against as many samples (mirror images and shifts of up to {SHIFT} pixels for both, "
    f"{HELD_BACK:.0%} held back to stop training, at most {MAX_EPOCHS} epochs), then scored on the held-out real "
    "sprites (validation and test) against as many fresh samples"
)


class JudgeNetwork(nn.Module):
    """RGB maps (n, 3, S, S) in [-1, 1] -> one logit each: above 0, real."""

    def __init__(self, size: int, channels: int = CHANNELS) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1), nn.BatchNorm2d(4 * c), nn.LeakyReLU(0.2),
        )  # fmt: skip
        cells = self.body(torch.zeros(1, 3, size, size)).shape[2:].numel()
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * c * (cells + 1), 1))

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """What the last layer reads: where each feature is (the layout), and its strongest response anywhere
        (a speck shows wherever it is). (n, 4 * channels * (cells + 1))."""
        features = self.body(maps)
        return torch.cat([features.flatten(1), features.amax(dim=(2, 3))], dim=1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(maps)).squeeze(1)


def rgb_maps(images: np.ndarray, palette: np.ndarray) -> torch.Tensor:
    """Palette images (n, S, S) -> their RGB (n, 3, S, S) float32 in [-1, 1]."""
    return torch.as_tensor(np.asarray(palette)[np.asarray(images)], dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1


def augmented(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each map mirrored with probability 1/2 and shifted by up to SHIFT pixels each way, white coming in at the edge."""
    count, _, height, width = maps.shape
    mirror = torch.rand(count, generator=generator) < 0.5
    maps = torch.where(mirror[:, None, None, None], maps.flip(3), maps)
    padded = F.pad(maps - 1, (SHIFT,) * 4) + 1  # white is 1 in every channel
    down, right = (torch.randint(0, 2 * SHIFT + 1, (count,), generator=generator) for _ in range(2))
    rows = (torch.arange(height)[None, :] + down[:, None])[:, :, None]
    columns = (torch.arange(width)[None, :] + right[:, None])[:, None, :]
    return padded[torch.arange(count)[:, None, None], :, rows, columns].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class JudgeRun:
    """One seed's verdict on the held-out pairs: its accuracy, on each side, the epochs it trained, and the k-NN
    figures of the fresh samples against the held-out real sprites in its feature space."""

    accuracy: float
    real_right: float  # share of the held-out real sprites it called real
    fake_right: float  # share of the fresh samples it called fake
    epochs: int
    neighbours: dict[str, float]  # precision, recall, density, coverage


def nearest_neighbour_figures(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """k-NN precision, recall, density and coverage of ``fake`` against ``real`` feature vectors (the prdc package)."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints its input sizes
        return {key: float(value) for key, value in compute_prdc(real, fake, k).items()}


def judge_once(
    real_train: np.ndarray, fake_train: np.ndarray, real_test: np.ndarray, fake_test: np.ndarray, palette: np.ndarray,
    seed: int, nearest_k: int = 5,
) -> JudgeRun:  # fmt: skip
    """Train a fresh judge on ``real_train`` against ``fake_train`` and score it on ``real_test`` against ``fake_test``.

    It leaves torch's global random state as it found it, and trains even when called under torch.no_grad() (a
    plugin's validation_metrics)."""
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        return _judge_once(real_train, fake_train, real_test, fake_test, palette, seed, nearest_k)


def _judge_once(
    real_train: np.ndarray, fake_train: np.ndarray, real_test: np.ndarray, fake_test: np.ndarray, palette: np.ndarray,
    seed: int, nearest_k: int,
) -> JudgeRun:  # fmt: skip
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    maps = torch.cat([rgb_maps(real_train, palette), rgb_maps(fake_train, palette)])
    labels = torch.cat([torch.ones(len(real_train)), torch.zeros(len(fake_train))])
    order = torch.randperm(len(maps), generator=generator)
    held = order[: int(len(maps) * HELD_BACK)]
    learn = order[len(held) :]
    network = JudgeNetwork(real_train.shape[1])
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    best_loss, best_state, stale, epochs = float("inf"), None, 0, 0
    for epoch in range(1, MAX_EPOCHS + 1):
        epochs = epoch
        network.train()
        shuffled = learn[torch.randperm(len(learn), generator=generator)]
        for start in range(0, len(shuffled), BATCH):
            batch = shuffled[start : start + BATCH]
            loss = F.binary_cross_entropy_with_logits(network(augmented(maps[batch], generator)), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch < MIN_EPOCHS:
            continue
        network.eval()
        with torch.no_grad():
            held_loss = float(F.binary_cross_entropy_with_logits(network(maps[held]), labels[held]))
        if held_loss < best_loss:
            best_loss, best_state, stale = held_loss, {key: value.clone() for key, value in network.state_dict().items()}, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    with torch.no_grad():
        real_features, fake_features = network.features(rgb_maps(real_test, palette)), network.features(rgb_maps(fake_test, palette))
        says_real_of_real, says_real_of_fake = network.head(real_features)[:, 0] > 0, network.head(fake_features)[:, 0] > 0
    real_called_real, fake_called_fake = int(says_real_of_real.sum()), int((~says_real_of_fake).sum())
    real_right, fake_right = real_called_real / len(real_test), fake_called_fake / len(fake_test)
    accuracy = (real_called_real + fake_called_fake) / (len(real_test) + len(fake_test))
    figures = nearest_neighbour_figures(real_features.numpy(), fake_features.numpy(), min(nearest_k, len(real_test) - 1, len(fake_test) - 1))
    return JudgeRun(accuracy, real_right, fake_right, epochs, figures)


def validation_judge(train: np.ndarray, val: np.ndarray, palette: np.ndarray, seed: int = 0, nearest_k: int = 5):
    """What a plugin's fit may ask of the judge (FitContext.judge): given a sampler ``(count, seed) -> sprites``, a
    JudgeRun of one judge trained on ``train`` against len(train) samples and scored on ``val`` against as many fresh
    ones. The test split is never seen."""

    def verdict(sample: Sampler) -> JudgeRun:
        fake, fresh = sample_in_chunks(sample, len(train), seed), sample_in_chunks(sample, len(val), seed + 1_000)
        return judge_once(train, fake, val, fresh, palette, seed, min(nearest_k, len(val) - 1))

    return verdict


def judge(
    fake_train: np.ndarray, fresh: list[np.ndarray], real_train: np.ndarray, real_held_out: np.ndarray, palette: np.ndarray,
    nearest_k: int = 5,
) -> dict:  # fmt: skip
    """The judge's verdict over len(``fresh``) seeds, seed i scored against ``fresh[i]`` (as many as the held-out
    sprites): {accuracy (the mean), spread (standard deviation), real_right, fake_right, per_seed, precision, recall,
    density, coverage (means over the seeds, in its feature space), sprites_per_side}."""
    runs = [judge_once(real_train, fake_train, real_held_out, fake_test, palette, seed, nearest_k) for seed, fake_test in enumerate(fresh)]
    accuracies = np.array([run.accuracy for run in runs])
    return {
        "accuracy": float(accuracies.mean()),
        "spread": float(accuracies.std()),
        "real_right": float(np.mean([run.real_right for run in runs])),
        "fake_right": float(np.mean([run.fake_right for run in runs])),
        "per_seed": [round(float(value), 4) for value in accuracies],
        **{key: float(np.mean([run.neighbours[key] for run in runs])) for key in ("precision", "recall", "density", "coverage")},
        "sprites_per_side": {"train": len(real_train), "test": len(real_held_out)},
    }
