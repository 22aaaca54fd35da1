"""Where the raster models' fragments come from: the dots and dashes beside the body (evaluate@MODEL's fragments).

For each model, 256 sprites drawn from the trained weights at its default sampling settings and seed, and on
those sprites the model's own view of its fragments, with the rest of the sprite's pixels side by side as the
baseline:

    p(drawn)      the probability the model gave each pixel's color, given the pixels before it (temperature 1):
                  median, and the share below 0.05 (a draw from the tail)
    p(bg) below   on the fragments: the probability of the background at the pixels just below a fragment's
                  lowest row (below-left to below-right), which the sampler then drew as background
    erased        per sprite with fragments: how many nats its log-likelihood gains when every fragment is set
                  to the background (median, and the share of sprites that gain)

Raster models only (an exact likelihood). Run from a reproduced repository (after `dvc repro`):

    python benchmarks/bench_fragments.py [--models pixelrnn,transformer] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pokegen.autoregressive import RasterModel
from pokegen.checkpoint import load_checkpoint
from pokegen.errors import DataError
from pokegen.evaluation import background_color, fragment_pieces
from pokegen.layout import Layout

SAMPLES = 256


def drawn_probabilities(model: RasterModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p(each pixel's color | the pixels before it), (n, S, S), and every color's, (n, S*S, K)."""
    distributions = model.pixel_distributions(images)  # (n, S*S, K)
    flat = images.reshape(len(images), -1, 1).astype(np.int64)
    return np.take_along_axis(distributions, flat, axis=2).reshape(images.shape), distributions


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pixelrnn,transformer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    layout = Layout(Path.cwd())
    print(f"{'model':<12}{'fragments':>10}{'pixels':>8} | p(drawn): fragment pixels{'other pixels':>14} | "
          f"p(bg) below | erased: gain nats  share gaining")  # fmt: skip
    for name in args.models.split(","):
        try:
            model = load_checkpoint(layout.model_dir(name))
        except DataError as exc:
            parser.error(str(exc))
        if not isinstance(model, RasterModel):
            parser.error(f"--models: {name} has no exact per-pixel likelihood; give raster models (pixelrnn, transformer)")
        samples = model.sample(SAMPLES, seed=args.seed)
        background = background_color(samples)  # the one fragment_pieces finds the pieces on
        pieces, fragments = fragment_pieces(samples)
        if not fragments.any():
            print(f"{name:<12}{0:>10.2f}       0 | no fragments: nothing to look at")
            continue
        in_fragment = np.isin(pieces, np.flatnonzero(fragments) + 1)
        other = (samples != background) & ~in_fragment
        drawn, distributions = drawn_probabilities(model, samples)
        below = below_background(distributions, pieces, fragments, background)
        hit = np.flatnonzero(in_fragment.any(axis=(1, 2)))
        erased = samples[hit].copy()
        erased[in_fragment[hit]] = background
        gain = model.log_prob(erased) - model.log_prob(samples[hit])
        print(
            f"{name:<12}{fragments.sum() / SAMPLES:>10.2f}{in_fragment.sum():>8} | "
            f"median {np.median(drawn[in_fragment]):.3f}, <0.05 {np.mean(drawn[in_fragment] < 0.05):.2f}   "
            f"median {np.median(drawn[other]):.3f}, <0.05 {np.mean(drawn[other] < 0.05):.2f} | "
            f"median {np.median(below):.2f}  | {np.median(gain):>8.1f} {np.mean(gain > 0):>14.2f}"
        )


if __name__ == "__main__":
    main()
