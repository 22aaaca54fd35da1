"""Figures that plugins may compute while they train (pokegen.evaluation, the grader, builds on them).

numpy only: a plugin importing this pulls in no evaluation machinery, params or scikit-learn.
"""

from __future__ import annotations

import numpy as np


def palette_js_divergence(a: np.ndarray, b: np.ndarray, colors: int) -> float:
    """Jensen-Shannon divergence (bits, 0..1) between the palette histograms of two image sets."""
    p = np.bincount(a.reshape(-1), minlength=colors) / a.size
    q = np.bincount(b.reshape(-1), minlength=colors) / b.size
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nonzero = x > 0
        return float((x[nonzero] * np.log2(x[nonzero] / m[nonzero])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)
