"""What raster-order plugins share: the neighbours each pixel is fed, the pixel-by-pixel sampler, and
completion of any mask.

A raster model draws pixel t from p(x_t | x_<t). Besides its own memory of x_<t, each model is fed the
neighbours of t that are already drawn: the pixel before it, the three above it (above-left, above,
above-right), and the one two rows above, in that order; a model takes the first few it wants (FED). An LSTM
that sees only the pixel before must carry the pixel above through 20 steps of memory; handed to it, the same
512 cells reach a far better likelihood (benchmarks/RESULTS.md).

Models plug in a *step*: a callable that takes the neighbour tokens of one position for a batch,
(n, NEIGHBOURS) int64, with the position, and returns that position's outputs (n, K + 1), carrying its
own state (an LSTM's (h, c), a Transformer's key/value cache) from one call to the next. The sampler
calls a *drawing step*: the same, also given the colors each sprite has used so far, returning color logits.

A raster network gives one output more than there are colors: a *new-color gate*. Every color the sprite
has not used yet loses softplus(gate) nats from its logit (palette_gated). Real sprites use about a dozen
of the 167 colors, and a pixel takes a color new to its sprite ~2% of the time; yet both networks, trained
without the gate, put ~13% of each pixel's probability on new colors (on the test sprites), which drawn
400 times is confetti. The palette so far is exact knowledge of the pixels before, so the likelihood stays
exact; the network learns in training, pixel by pixel, how much to trust it (benchmarks/RESULTS.md).

Some colors are in nearly every sprite: the white background, the outline's dark grays, the lighter gray of
the lines inside the body (99% of the course's sprites use it; its first pixel comes around the fourth row).
The gate spares those *shared colors* from the first pixel on: gated as new, the inner-line gray was drawn
in 16% of the sprites the models drew, which came out as flat blobs without inner lines. The shared colors
are the ones at least ``shared_color_share`` of the training sprites use; fit finds them, the checkpoint keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from pokegen.plugin import FitContext, FitResult, TrainSettings, bits_per_pixel
from pokegen.torch_model import TorchModel

NEIGHBOURS = 5  # the pixel before (in raster order), above-left, above, above-right, two above
# The neighbours a model is fed, by name: the first 1, 4 or 5 of them.
FED = {"previous": 1, "neighbours": 4, "two_rows": 5}
Step = Callable[[torch.Tensor, int], torch.Tensor]  # (neighbour tokens (n, NEIGHBOURS), position) -> outputs (n, K + 1)
# (neighbour tokens, position, the colors each sprite has used before it (n, K) bool) -> color logits (n, K)
DrawingStep = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def neighbour_tokens(images: torch.Tensor, outside: int) -> torch.Tensor:
    """For every raster position, the tokens of its already-drawn neighbours: (n, S*S, NEIGHBOURS).

    ``outside`` (the number of colors) stands for a neighbour off the sprite, and for the pixel before the first."""
    n, size = images.shape[0], images.shape[1]
    padded = F.pad(images, (1, 1, 2, 0), value=outside)  # two rows on top, one column each side: (n, S+2, S+2)
    above_left, above, above_right = padded[:, 1:-1, :-2], padded[:, 1:-1, 1:-1], padded[:, 1:-1, 2:]
    two_above = padded[:, :size, 1:-1]
    flat = images.reshape(n, -1)
    before = torch.cat([torch.full((n, 1), outside, dtype=flat.dtype, device=flat.device), flat[:, :-1]], dim=1)
    return torch.stack([before] + [pixels.reshape(n, -1) for pixels in (above_left, above, above_right, two_above)], dim=-1)


def neighbours_at(drawn: torch.Tensor, position: int, size: int, outside: int) -> torch.Tensor:
    """The neighbour tokens of ``position`` from the raster pixels drawn so far, drawn (n, >= position): (n, NEIGHBOURS)."""
    row, column = divmod(position, size)
    n = drawn.shape[0]

    def pixel(r: int, c: int) -> torch.Tensor:
        if r < 0 or not 0 <= c < size:
            return torch.full((n,), outside, dtype=drawn.dtype, device=drawn.device)
        return drawn[:, r * size + c]

    before = drawn[:, position - 1] if position > 0 else pixel(-1, 0)
    above = [pixel(row - 1, column - 1), pixel(row - 1, column), pixel(row - 1, column + 1), pixel(row - 2, column)]
    return torch.stack([before, *above], dim=1)


def colors_used_before(flat: torch.Tensor, colors: int) -> torch.Tensor:
    """For raster tokens (n, L): has the sprite used color k before position t? (n, L, K) bool.

    From each color's first position, so nothing larger than the answer is made: a running count over one-hot
    int64 maps took 16 times its memory (2.2 GB for the VAE's importance-weighted bound, 2,048 sprites a chunk)."""
    n, length = flat.shape
    positions = torch.arange(length, device=flat.device)
    first = torch.full((n, colors), length, dtype=torch.long, device=flat.device)  # never used: past the end
    first.scatter_reduce_(1, flat, positions.expand(n, -1), reduce="amin")
    return first[:, None, :] < positions[None, :, None]


def shared_colors(sprites: np.ndarray, colors: int, share: float) -> torch.Tensor:
    """The colors at least ``share`` of ``sprites`` (n, S, S) use, (K,) bool: the palette nearly every sprite shares."""
    flat = torch.as_tensor(np.asarray(sprites), dtype=torch.long).reshape(len(sprites), -1)
    in_sprite = torch.zeros((len(sprites), colors), dtype=torch.bool).scatter_(1, flat, True)
    return in_sprite.float().mean(dim=0) >= share


def palette_gated(outputs: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """A raster network's outputs (..., K + 1) -> color logits (..., K): the last output is the new-color gate,
    and each color not ``used`` (..., K) yet loses softplus(gate) nats."""
    return outputs[..., :-1] - F.softplus(outputs[..., -1:]) * ~used


@torch.no_grad()
def draw(
    step: DrawingStep, n: int, size: int, colors: int, *, temperature: float, generator: torch.Generator,
    new_color_penalty: float = 0.0, known: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Draw n sprites pixel by pixel in raster order: (pixels (n, S, S), log_weights (n,)).

    Without ``mask`` every pixel is sampled at ``temperature``; from the second row on, every color the sprite has not used yet first loses ``new_color_penalty``
    from its logit (the first row is background in nearly every sprite). With ``known`` and ``mask`` (n, S*S), pixels under
    the mask are sampled and the others kept; each kept pixel's log-probability under the model (at temperature 1),
    given everything drawn before it, is added to its sprite's log-weight: how well the drawn pixels agree with the
    known pixels after them. ``step`` is given the colors each sprite has drawn (or kept) before the position."""
    device = generator.device
    drawn = torch.zeros((n, size * size), dtype=torch.long, device=device)
    log_weights = torch.zeros(n, dtype=torch.float64, device=device)
    used = torch.zeros((n, colors), dtype=torch.bool, device=device)  # the colors each sprite has drawn or kept so far
    for position in range(size * size):
        logits = step(neighbours_at(drawn, position, size, colors), position, used)
        shaped = logits - new_color_penalty * (~used) if new_color_penalty and position >= size else logits
        probabilities = torch.softmax(shaped / temperature, dim=-1)
        sampled = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        drawn[:, position] = sampled if mask is None else torch.where(mask[:, position], sampled, known[:, position])
        used[torch.arange(n, device=device), drawn[:, position]] = True
        if mask is None:
            continue
        free, kept = mask[:, position], known[:, position]
        kept_log_prob = torch.log_softmax(logits.double(), dim=-1).gather(1, kept[:, None]).squeeze(1)
        log_weights += torch.where(free, torch.zeros_like(kept_log_prob), kept_log_prob)
    return drawn.reshape(n, size, size), log_weights


def is_raster_suffix(mask: np.ndarray) -> np.ndarray:
    """Per image: does the mask cover exactly the pixels from some raster position on (the lecture's lower rows)?"""
    flat = np.asarray(mask, dtype=bool).reshape(len(mask), -1)
    first = np.where(flat.any(axis=1), flat.argmax(axis=1), flat.shape[1])
    return np.array([flat[i, start:].all() for i, start in enumerate(first)], dtype=bool)


def complete_any_mask(
    drawing_step: Callable[[int], DrawingStep], images: np.ndarray, mask: np.ndarray, colors: int, *,
    temperature: float, candidates: int, seed: int, device: torch.device, new_color_penalty: float = 0.0,
    chunk: int = 256,
) -> np.ndarray:  # fmt: skip
    """Fill the pixels under any mask (True: fill), by sampling-importance-resampling.

    A raster model can only draw a pixel from the pixels before it, but a mask such as the left half leaves known
    pixels after the ones to fill. So ``candidates`` completions of each sprite are drawn in raster order (masked
    pixels sampled, known ones kept), each weighted by the probability of the known pixels that follow its drawn
    ones, and one is picked in proportion to its weight: a draw from p(masked | known) as candidates grow (at the
    sampling temperature and new-color penalty). A mask that covers a raster suffix (the lower rows) leaves nothing after the drawn
    pixels, so one candidate is exact there. ``drawing_step(batch)`` builds a fresh step for a batch of that size."""
    images = np.asarray(images)
    mask = np.asarray(mask, dtype=bool)
    size = images.shape[1]
    per_image = 1 if is_raster_suffix(mask).all() else candidates
    generator = torch.Generator(device=device).manual_seed(seed)
    known = torch.as_tensor(images.reshape(len(images), -1), dtype=torch.long, device=device).repeat_interleave(per_image, 0)
    covered = torch.as_tensor(mask.reshape(len(mask), -1), device=device).repeat_interleave(per_image, 0)
    drawn, log_weights = [], []
    for start in range(0, len(known), chunk):
        rows = slice(start, start + chunk)
        pixels, weights = draw(
            drawing_step(len(known[rows])), len(known[rows]), size, colors,
            temperature=temperature, new_color_penalty=new_color_penalty, generator=generator,
            known=known[rows], mask=covered[rows],
        )  # fmt: skip
        drawn.append(pixels)
        log_weights.append(weights)
    pixels = torch.cat(drawn).reshape(len(images), per_image, size, size)
    weights = torch.cat(log_weights).reshape(len(images), per_image)
    chosen = torch.multinomial(torch.softmax(weights, dim=1).float(), 1, generator=generator).squeeze(1)
    return pixels[torch.arange(len(images), device=device), chosen].cpu().numpy().astype(np.uint8)


class SharedColorsConfig(BaseModel):
    """The config field of every model with a new-color gate: which colors it spares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shared_color_share: float = Field(
        0.5, gt=0, le=1, description="colors at least this share of the training sprites use are never new to a sprite: the gate spares them"
    )


class RasterSampling(BaseModel):
    """How a RasterModel draws: its Sampling (sample.<name> in params.yaml). Each plugin subclasses it to set its own
    defaults: the settings of the best judge on the validation sprites (benchmarks/RESULTS.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    # On top of the model's own new-color gate: a color new to the sprite made less likely still draws fewer,
    # flatter colors (evaluate's colors_per_sprite; real sprites use about a dozen).
    new_color_penalty: float = Field(
        0.0, ge=0, description="nats taken from the logit of each color the sprite has not used yet, from its second row on (0: none)"
    )
    completion_candidates: int = Field(
        8, ge=1, description="raster completions weighed per sprite to fill a mask that is not the lower rows"
    )


class RasterModel(TorchModel):
    """Base of torch plugins that draw in raster order with an exact likelihood (PixelRNN, the Transformer).

    A subclass supplies ``outputs(images)`` (teacher-forced, every position's K color logits and the new-color
    gate, (n, S*S, K + 1), from the pixels before it) and ``make_step(n)`` (the same network one position at a
    time, for sampling, giving (n, K + 1)), a config with SharedColorsConfig's field and a Sampling subclassing
    RasterSampling. Everything else lives here
    once: the gate, the loss, the validation figure, the likelihoods, sampling and completion of any mask."""

    likelihood = "exact"
    completes_any_mask = True
    SHARED_COLORS = "shared_colors"  # the checkpoint's tensor of them, beside the network's weights

    Sampling = RasterSampling

    def __init__(self, config: SharedColorsConfig, colors: int, size: int) -> None:
        super().__init__(config, colors, size)
        self.shared_colors = torch.zeros(colors, dtype=torch.bool)  # none until fit finds them in the training sprites

    def fit(self, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
        self.shared_colors = shared_colors(train, self.colors, self.config.shared_color_share)
        return super().fit(train, val, settings, context)

    def state(self) -> dict[str, Any]:
        return {**super().state(), self.SHARED_COLORS: self.shared_colors.clone()}

    def load_state(self, tensors: dict[str, Any]) -> None:
        weights = dict(tensors)
        self.shared_colors = torch.as_tensor(weights.pop(self.SHARED_COLORS)).to(torch.bool)  # KeyError: written before them
        super().load_state(weights)

    def _used(self, used: torch.Tensor) -> torch.Tensor:
        """The colors each sprite has used (..., K), with the shared colors counted as used from the start."""
        return used | self.shared_colors.to(used.device)

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Every raster position's color logits and new-color gate from the pixels before it: (n, S*S, K + 1)."""
        raise NotImplementedError

    def make_step(self, n: int) -> Step:
        """A fresh step for a batch of n sprites (see the module docstring) that gives K + 1 outputs."""
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Color logits of every raster position from the pixels before it, the gate applied: (n, S*S, K)."""
        return palette_gated(self.outputs(images), self._used(colors_used_before(images.reshape(len(images), -1), self.colors)))

    def drawing_step(self, n: int) -> DrawingStep:
        """make_step's step with the gate applied to the colors the sampler says each sprite has used: logits (n, K)."""
        step = self.make_step(n)
        return lambda neighbours, position, used: palette_gated(step(neighbours, position), self._used(used))

    def _nats_per_pixel(self, images: torch.Tensor) -> torch.Tensor:
        targets = images.reshape(len(images), -1)
        return F.cross_entropy(self.logits(images).transpose(1, 2), targets, reduction="none")

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self._nats_per_pixel(batch).mean()

    def _in_chunks(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """-log p of each pixel given those before it, (n, S*S), for the whole batch in chunks, without gradients."""
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        with torch.no_grad():
            return torch.cat([self._nats_per_pixel(chunk) for chunk in batch.split(256)])

    def validation_metrics(self, val: torch.Tensor, epoch: int) -> dict[str, float]:
        return {"val_bits_per_pixel": bits_per_pixel(self._in_chunks(val).sum(dim=1), self.size * self.size)}

    @torch.no_grad()
    def pixel_distributions(self, images: np.ndarray) -> np.ndarray:
        """p(pixel t | pixels before t) for every position: (n, size*size, colors), rows summing to 1."""
        self.module.eval()
        batch = torch.as_tensor(images, dtype=torch.long, device=self.device)
        return torch.softmax(self.logits(batch), dim=-1).cpu().numpy()

    def log_prob(self, images: np.ndarray) -> np.ndarray:
        """Exact log-likelihood of each image, in nats."""
        return -self._in_chunks(images).sum(dim=1).cpu().numpy().astype(np.float64)

    def _sampling(self) -> dict[str, float]:
        """The sampling rules (self.sampling), as draw and complete_any_mask take them."""
        rules = self.sampling
        return {
            "temperature": rules.temperature,
            "new_color_penalty": rules.new_color_penalty,
        }

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        self.module.eval()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        pixels, _ = draw(self.drawing_step(n), n, self.size, self.colors, generator=generator, **self._sampling())
        return pixels.cpu().numpy().astype(np.uint8)

    def complete(self, images: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
        """Fill the covered pixels (mask True), whatever their shape: the lower rows exactly, others by
        sampling-importance-resampling over ``completion_candidates`` raster completions."""
        self.module.eval()
        return complete_any_mask(
            self.drawing_step, images, mask, self.colors, candidates=self.sampling.completion_candidates, seed=seed,
            device=self.device, **self._sampling(),
        )  # fmt: skip

    def conditional_log_prob(self, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Exact log p(covered pixels | the pixels before them), nats. Exact only when the cover is a raster suffix
        (such as the lower rows): ValueError for any other mask."""
        if not is_raster_suffix(mask).all():
            raise ValueError(f"{self.name}: an exact conditional likelihood needs a cover of the lower rows (a raster suffix)")
        log_probs = -self._in_chunks(images).cpu().numpy().astype(np.float64)
        return (log_probs * np.asarray(mask, dtype=bool).reshape(len(images), -1)).sum(axis=1)
