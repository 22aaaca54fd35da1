"""How the raster models' sampling settings trade stray pixels against precision and recall, on trained models.

For each model, 256 sprites drawn at each setting from the same trained weights and seed, scored by the
evaluation's own precision/recall/coverage and C2ST against the held-out sprites; the grids are written
beside for looking at. Run from a reproduced repository (after `dvc repro`):

    python benchmarks/bench_sampling.py [--models pixelrnn,transformer] [--out sampling-grids]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pokegen.artifacts import SpriteDataset
from pokegen.autoregressive import draw
from pokegen.checkpoint import load_checkpoint
from pokegen.evaluation import classifier_two_sample_accuracy, distribution_metrics
from pokegen.images import palette_grid
from pokegen.layout import Layout

# (temperature, epsilon, top-p): the default first
SETTINGS = [(1.0, 0.0, 1.0), (0.9, 0.0, 1.0), (0.8, 0.0, 1.0), (1.0, 0.005, 1.0), (1.0, 0.02, 1.0), (1.0, 0.0, 0.9)]


def nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p (Holtzman et al. 2020), for comparison only: the likeliest colors up to a total of top_p."""
    ordered, order = probabilities.sort(dim=-1, descending=True)
    kept = torch.zeros_like(probabilities).scatter(-1, order, ((ordered.cumsum(-1) - ordered) < top_p).to(probabilities.dtype))
    return probabilities * kept / (probabilities * kept).sum(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pixelrnn,transformer")
    parser.add_argument("--out", type=Path, default=Path("sampling-grids"))
    args = parser.parse_args()
    layout = Layout(Path("."))
    dataset = SpriteDataset.load(layout.dataset)
    test, palette = dataset.splits["test"], dataset.palette
    held_out = np.concatenate([test, dataset.splits["val"]])
    args.out.mkdir(exist_ok=True)
    print(f"{'model':<12}{'temperature':>12}{'epsilon':>8}{'top-p':>6}{'precision':>10}{'recall':>8}{'coverage':>9}{'C2ST':>7}")
    for name in args.models.split(","):
        model = load_checkpoint(layout.model_dir(name))
        model.module.eval()
        for temperature, epsilon, top_p in SETTINGS:
            step = model.make_step(256)
            if top_p < 1:  # wrap the step: draw() then truncates nothing more (epsilon 0)
                inner = step

                def step(neighbours, position, inner=inner, top_p=top_p):
                    probabilities = nucleus(torch.softmax(inner(neighbours, position) / temperature, -1), top_p)
                    return torch.log(probabilities.clamp_min(1e-30)) * temperature

            generator = torch.Generator().manual_seed(0)
            samples, _ = draw(step, 256, test.shape[1], len(palette), temperature=temperature, epsilon=epsilon, generator=generator)
            samples = samples.numpy().astype(np.uint8)
            found = distribution_metrics(samples, test, palette, 5)
            c2st, _ = classifier_two_sample_accuracy(samples, held_out, palette, 0)
            print(f"{name:<12}{temperature:>12}{epsilon:>8}{top_p:>6}{found['precision']:>10.3f}{found['recall']:>8.3f}{found['coverage']:>9.3f}{c2st:>7.3f}")
            palette_grid(samples[:64], palette, columns=8, scale=4).save(args.out / f"{name}-t{temperature}-e{epsilon}-p{top_p}.png")


if __name__ == "__main__":
    main()
