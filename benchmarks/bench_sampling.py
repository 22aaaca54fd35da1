"""How the raster models' sampling settings trade stray pixels against precision and recall, on trained models.

For each model, 256 sprites drawn at each setting from the same trained weights and seed, scored by the
evaluation's own precision/recall/coverage and C2ST against the held-out sprites; the grids are written
beside for looking at. `same` is the share of neighbouring pixel pairs of one color (how flat the sprites
are), `stray` the share of pixels none of whose four neighbours has their color, `lone` the share of
pixels whose four neighbours share one other color (a lone pixel in a flat region: the speckle an eye
sees; evaluate@MODEL's lone_pixels), `colors` the distinct colors per sprite (evaluate@MODEL's
colors_per_sprite: one-off colors strewn through a sprite raise it), `outlined` the share of edge pixels in a
dark color (evaluate@MODEL's outlined_edges), `frag` the small pieces apart from the body per sprite
(evaluate@MODEL's fragments); all are printed for the real test sprites first. Run from a reproduced repository (after `dvc repro`):

    python benchmarks/bench_sampling.py [--models pixelrnn,transformer] [--seeds 0,1,2,3] [--settings 0.9,0,1[,0[,0.5]]] [--out sampling-grids]

A setting is temperature, epsilon, top-p and optionally min-p and the new-color penalty (0: none).

Precision and recall are taken against the validation sprites too (val P, val R, and their F1): choose a
default on the mean val F1 over seeds, and read the test figures as what it gives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pokegen.artifacts import SpriteDataset
from pokegen.autoregressive import draw
from pokegen.checkpoint import load_checkpoint
from pokegen.evaluation import (
    classifier_two_sample_accuracy,
    colors_per_sprite,
    fragments_per_sprite,
    lone_pixel_share,
    outlined_edge_share,
)
from pokegen.images import palette_grid
from pokegen.layout import Layout
from pokegen.stats import distribution_metrics, f1_score

# (temperature, epsilon, top-p[, min-p[, new-color penalty]]): the full distribution first, the baseline
SETTINGS = [
    (1.0, 0.0, 1.0), (0.85, 0.0, 1.0), (0.9, 0.0, 1.0), (0.95, 0.0, 1.0), (1.05, 0.0, 1.0), (1.1, 0.0, 1.0),
    (1.0, 0.0, 1.0, 0.0, 0.5), (1.0, 0.0, 1.0, 0.0, 0.25), (0.95, 0.0, 1.0, 0.0, 0.5), (1.0, 0.02, 1.0), (1.0, 0.0, 0.9),
]  # fmt: skip


def same_color_share(images: np.ndarray) -> float:
    """The share of horizontally and vertically neighbouring pixel pairs that have one color."""
    return float(((images[:, :, 1:] == images[:, :, :-1]).mean() + (images[:, 1:] == images[:, :-1]).mean()) / 2)


def stray_share(images: np.ndarray) -> float:
    """The share of inner pixels whose color none of their four neighbours has (outline corners and shading count too)."""
    inner = images[:, 1:-1, 1:-1]
    alone = (inner != images[:, :-2, 1:-1]) & (inner != images[:, 2:, 1:-1]) & (inner != images[:, 1:-1, :-2]) & (inner != images[:, 1:-1, 2:])
    return float(alone.mean())


def nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p (Holtzman et al. 2020), for comparison only: the likeliest colors up to a total of top_p."""
    ordered, order = probabilities.sort(dim=-1, descending=True)
    kept = torch.zeros_like(probabilities).scatter(-1, order, ((ordered.cumsum(-1) - ordered) < top_p).to(probabilities.dtype))
    return probabilities * kept / (probabilities * kept).sum(-1, keepdim=True)


def min_p(probabilities: torch.Tensor, fraction: float) -> torch.Tensor:
    """Min-p (Nguyen et al. 2024), for comparison only: the colors at least ``fraction`` times as likely as the likeliest."""
    kept = probabilities >= fraction * probabilities.max(-1, keepdim=True).values
    return probabilities * kept / (probabilities * kept).sum(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="pixelrnn,transformer")
    parser.add_argument("--seeds", default="0", help="sampling seeds, each a row per setting")
    parser.add_argument("--settings", help="temperature,epsilon,top-p[,min-p[,penalty]];... instead of the built-in list")
    parser.add_argument("--out", type=Path, default=Path("sampling-grids"))
    args = parser.parse_args()
    layout = Layout(Path("."))
    dataset = SpriteDataset.load(layout.dataset)
    test, val, palette = dataset.splits["test"], dataset.splits["val"], dataset.palette
    settings = [tuple(map(float, item.split(","))) for item in args.settings.split(";")] if args.settings else SETTINGS
    settings = [(*setting, 0.0, 0.0)[:5] for setting in settings]  # min-p and penalty 0 where left out
    held_out = np.concatenate([test, dataset.splits["val"]])
    args.out.mkdir(exist_ok=True)
    print(f"real test sprites: same {same_color_share(test):.3f} stray {stray_share(test):.3f} lone {lone_pixel_share(test):.4f} colors {colors_per_sprite(test):.1f}"
          f" outlined {outlined_edge_share(test, palette):.3f} frag {fragments_per_sprite(test):.2f}")
    print(
        f"{'model':<12}{'temperature':>12}{'epsilon':>8}{'top-p':>6}{'min-p':>6}{'penalty':>8}{'seed':>5}{'precision':>10}{'recall':>8}"
        f"{'coverage':>9}{'C2ST':>7}{'same':>7}{'stray':>7}{'lone':>8}{'colors':>7}{'outlined':>9}{'frag':>6}{'val P':>7}{'val R':>7}{'val F1':>7}"
    )
    for name in args.models.split(","):
        model = load_checkpoint(layout.model_dir(name))
        model.module.eval()
        for (temperature, epsilon, top_p, fraction, penalty), seed in ((setting, int(seed)) for setting in settings for seed in args.seeds.split(",")):
            step = model.drawing_step(256)
            if top_p < 1 or fraction > 0:  # wrap the step: draw() then truncates nothing more (epsilon 0)
                inner = step

                def step(neighbours, position, used, inner=inner, top_p=top_p, fraction=fraction, temperature=temperature):
                    probabilities = torch.softmax(inner(neighbours, position, used) / temperature, -1)
                    probabilities = min_p(nucleus(probabilities, top_p), fraction)
                    return torch.log(probabilities.clamp_min(1e-30)) * temperature

            generator = torch.Generator().manual_seed(seed)
            samples, _ = draw(
                step, 256, test.shape[1], len(palette), temperature=temperature, epsilon=epsilon, new_color_penalty=penalty,
                generator=generator,
            )  # fmt: skip
            samples = samples.numpy().astype(np.uint8)
            found = distribution_metrics(samples, test, palette, 5)
            c2st, _ = classifier_two_sample_accuracy(samples, held_out, palette, 0)
            on_val = distribution_metrics(samples, val, palette, 5)
            print(
                f"{name:<12}{temperature:>12}{epsilon:>8}{top_p:>6}{fraction:>6}{penalty:>8}{seed:>5}{found['precision']:>10.3f}{found['recall']:>8.3f}"
                f"{found['coverage']:>9.3f}{c2st:>7.3f}{same_color_share(samples):>7.3f}{stray_share(samples):>7.3f}"
                f"{lone_pixel_share(samples):>8.4f}{colors_per_sprite(samples):>7.1f}"
                f"{outlined_edge_share(samples, palette):>9.3f}{fragments_per_sprite(samples):>6.2f}{on_val['precision']:>7.3f}{on_val['recall']:>7.3f}{f1_score(on_val['precision'], on_val['recall']):>7.3f}"
            )
            palette_grid(samples[:64], palette, columns=8, scale=4).save(args.out / f"{name}-t{temperature}-e{epsilon}-p{top_p}-m{fraction}-n{penalty}-s{seed}.png")


if __name__ == "__main__":
    main()
