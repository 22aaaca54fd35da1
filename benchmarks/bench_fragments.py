"""Where the raster models' fragments come from: the dots and dashes beside the body (evaluate@MODEL's fragments).

For each model, 256 sprites drawn from the trained weights at its default sampling settings and seed, and beside
them the held-out real sprites (test and validation, which no model trained on), each seen through the model
(teacher-forced: p(pixel | the pixels before it) at temperature 1):

    fragments     pieces of at most 3 pixels apart from the body, per sprite (evaluate@MODEL's figure)
    p(drawn)      the probability the model gives each pixel's color: median and share below 0.05 (a draw from the
                  tail), on the fragments' pixels and on the sprite's other pixels
    p(bg) below   the probability of the background at the pixels just below a fragment's lowest row
    erased        per sprite with fragments: how many nats its log-likelihood gains when every fragment is set to
                  the background (median, and the share of sprites that gain). The same figure on real sprites
                  says whether the likelihood tells a stray from a real detail
    starts        pixels of anything but the background whose pixels before them (left, above-left, above,
                  above-right) are all background: where a raster model begins a piece (the top of an ear, a dot).
                  Per sprite; the share carried on (one of the three pixels below is not background: a start that
                  is not carried on is a fragment's first pixel); and at the pixel just below, the model's
                  p(not background) beside how often it is not

Raster models only (an exact likelihood). Run from a reproduced repository (after `dvc repro`):

    python benchmarks/bench_fragments.py [--models pixelrnn,transformer] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pokegen.artifacts import SpriteDataset
from pokegen.autoregressive import RasterModel
from pokegen.checkpoint import load_checkpoint
from pokegen.errors import DataError
from pokegen.evaluation import background_color, fragment_pieces
from pokegen.layout import Layout

SAMPLES = 256


def drawn_probabilities(distributions: np.ndarray, images: np.ndarray) -> np.ndarray:
    """p(each pixel's color | the pixels before it), (n, S, S), from every color's, (n, S*S, K)."""
    flat = images.reshape(len(images), -1, 1).astype(np.int64)
    return np.take_along_axis(distributions, flat, axis=2).reshape(images.shape)


def below_background(distributions: np.ndarray, pieces: np.ndarray, fragments: np.ndarray, background: int) -> np.ndarray:
    """p(background) at the pixels just below each fragment's lowest row, from its left-1 to its right+1 column."""
    size = pieces.shape[1]
    found = []
    for label in np.flatnonzero(fragments) + 1:
        sprite, rows, columns = np.nonzero(pieces == label)
        below = rows.max() + 1
        if below == size:
            continue
        for column in range(max(columns.min() - 1, 0), min(columns.max() + 2, size)):
            found.append(distributions[sprite[0], below * size + column, background])
    return np.array(found)


def fragment_row(model: RasterModel, images: np.ndarray, distributions: np.ndarray, background: int) -> str:
    """The fragments of ``images`` seen through ``model`` (its p(pixel | the pixels before it), ``distributions``,
    (n, S*S, K)): one printed row (the module docstring's columns)."""
    pieces, fragments = fragment_pieces(images)
    if not fragments.any():
        return f"{0:>10.2f}       0 | no fragments: nothing to look at"
    in_fragment = np.isin(pieces, np.flatnonzero(fragments) + 1)
    other = (images != background) & ~in_fragment
    drawn = drawn_probabilities(distributions, images)
    below = below_background(distributions, pieces, fragments, background)
    hit = np.flatnonzero(in_fragment.any(axis=(1, 2)))
    erased = images[hit].copy()
    erased[in_fragment[hit]] = background
    gain = model.log_prob(erased) - model.log_prob(images[hit])
    return (
        f"{fragments.sum() / len(images):>10.2f}{in_fragment.sum():>8} | "
        f"median {np.median(drawn[in_fragment]):.3f}, <0.05 {np.mean(drawn[in_fragment] < 0.05):.2f}   "
        f"median {np.median(drawn[other]):.3f}, <0.05 {np.mean(drawn[other] < 0.05):.2f} | "
        f"median {np.median(below):.2f}  | {np.median(gain):>8.1f} {np.mean(gain > 0):>14.2f}"
    )


def piece_starts(images: np.ndarray, background: int) -> np.ndarray:
    """(n, S, S) bool: pixels of anything but the background whose left, above-left, above and above-right pixels
    are all background or off the sprite: where a raster model begins a piece."""
    clear = np.pad(images == background, ((0, 0), (1, 0), (1, 1)), constant_values=True)  # a row on top, a column each side
    above_clear = clear[:, :-1, :-2] & clear[:, :-1, 1:-1] & clear[:, :-1, 2:]
    left_clear = clear[:, 1:, :-2]
    return (images != background) & above_clear & left_clear


def starts_row(images: np.ndarray, distributions: np.ndarray, background: int) -> str:
    """How many pieces ``images`` begin, how many of them go on in the next row, and the model's view of that."""
    size = images.shape[1]
    sprite, row, column = np.nonzero(piece_starts(images, background)[:, :-1])  # a start in the last row cannot go on
    below = [images[sprite, row + 1, np.clip(column + offset, 0, size - 1)] != background for offset in (-1, 0, 1)]
    model_below = 1 - distributions[sprite, (row + 1) * size + column, background]
    return (
        f"{len(sprite) / len(images):>8.2f} | {np.mean(np.any(below, axis=0)):>11.2f} | "
        f"{model_below.mean():>14.2f} {np.mean(below[1]):>10.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pixelrnn,transformer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    layout = Layout(Path.cwd())
    try:
        splits = SpriteDataset.load(layout.dataset).splits
    except DataError as exc:
        parser.error(str(exc))
    real = np.concatenate([splits["test"], splits["val"]])  # every real sprite no model trained on
    models = {}
    for name in args.models.split(","):
        try:
            models[name] = load_checkpoint(layout.model_dir(name))
        except DataError as exc:
            parser.error(str(exc))
        if not isinstance(models[name], RasterModel):
            parser.error(f"--models: {name} has no exact per-pixel likelihood; give raster models (pixelrnn, transformer)")
    fragment_rows, start_rows = [], []
    for name, model in models.items():
        for kind, images in (("drawn", model.sample(SAMPLES, seed=args.seed)), ("real", real)):
            distributions = model.pixel_distributions(images)  # (n, S*S, K), once for both tables
            background = background_color(images)  # the one fragment_pieces finds the pieces on
            fragment_rows.append(f"{name:<12}{kind:<10}{fragment_row(model, images, distributions, background)}")
            start_rows.append(f"{name:<12}{kind:<10}{starts_row(images, distributions, background)}")
    print(f"{'model':<12}{'sprites':<10}{'fragments':>10}{'pixels':>8} | p(drawn): fragment pixels{'other pixels':>14} | "
          f"p(bg) below | erased: gain nats  share gaining")  # fmt: skip
    print("\n".join(fragment_rows))
    print(f"\n{'model':<12}{'sprites':<10}{'starts':>8} | {'carried on':>11} | just below: model p(not bg)  actual")
    print("\n".join(start_rows))


if __name__ == "__main__":
    main()
