"""Figures that plugins may compute while they train (pokegen.evaluation, the grader, builds on them).

numpy, and `prdc` (scikit-learn) imported only when the k-NN figures are asked for: a plugin importing this
pulls in no evaluation machinery, pictures or params. The GAN scores its samples on the validation sprites
with the grader's own feature space and k-NN precision/recall, from here.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

NEIGHBOUR_WEIGHT = 8.0  # so the two neighbour-agreement features count about as much as the 75 layout values
FEATURE_SPACE = (
    "RGB / 255 averaged over square blocks of S//5 pixels (a 5x5 grid, 75 values, for 20x20 sprites), plus the "
    f"shares of horizontally and of vertically adjacent pixel pairs of the same color, each times {NEIGHBOUR_WEIGHT:g}; "
    "Euclidean distance"
)


def features(images: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The fixed feature space (FEATURE_SPACE) of palette images (n, S, S): (n, 3 * cells**2 + 2) float32."""
    count, size, _ = images.shape
    block = max(1, size // 5)
    cut = (size // block) * block
    rgb = palette[images[:, :cut, :cut]].astype(np.float32) / 255.0
    cells = cut // block
    layout = rgb.reshape(count, cells, block, cells, block, 3).mean(axis=(2, 4)).reshape(count, -1)
    across = (images[:, :, 1:] == images[:, :, :-1]).mean(axis=(1, 2))
    down = (images[:, 1:, :] == images[:, :-1, :]).mean(axis=(1, 2))
    return np.hstack([layout, NEIGHBOUR_WEIGHT * across[:, None], NEIGHBOUR_WEIGHT * down[:, None]]).astype(np.float32)


def palette_js_divergence(a: np.ndarray, b: np.ndarray, colors: int) -> float:
    """Jensen-Shannon divergence (bits, 0..1) between the palette histograms of two image sets."""
    p = np.bincount(a.reshape(-1), minlength=colors) / a.size
    q = np.bincount(b.reshape(-1), minlength=colors) / b.size
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nonzero = x > 0
        return float((x[nonzero] * np.log2(x[nonzero] / m[nonzero])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def distribution_metrics(samples: np.ndarray, reference: np.ndarray, palette: np.ndarray, nearest_k: int) -> dict:
    """Palette histogram divergence and k-NN precision/recall/density/coverage of samples against reference."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints its input sizes
        prdc = compute_prdc(features(reference, palette), features(samples, palette), nearest_k)
    return {"palette_js": palette_js_divergence(samples, reference, len(palette)), **{key: float(value) for key, value in prdc.items()}}


def f1_score(precision: float, recall: float) -> float:
    """The harmonic mean of precision and recall (0 when both are 0): how the report ranks, and the GAN picks its epoch."""
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
