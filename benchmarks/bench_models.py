"""Benchmark the built-in models on the real course split (run `dvc repro tensorize` first).

    python benchmarks/bench_models.py [--naive-sprites 16] [--full-pixelrnn]

- PixelRNN sampling, side by side on the same weights: pokegen's sampler carries the LSTM state
  (one step per pixel) against the naive sampler of a public re-implementation of the lecture,
  which re-reads the last 100 pixels from a fresh state at every step.
- Training throughput (sprites/s) of one epoch of PixelRNN, VAE and GAN at their default settings.
- With --full-pixelrnn: train the default PixelRNN to its early stop and report the best validation
  bits/pixel and the wall time to reach it.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from pokegen.artifacts import SpriteDataset
from pokegen.params import load_params, model_specs
from pokegen.plugin import FitContext, TrainSettings
from pokegen.plugins.pixelrnn import PixelRNN

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 100


@torch.no_grad()
def naive_window_sample(model: PixelRNN, n: int, seed: int) -> np.ndarray:
    """The public re-implementation's sampler: every pixel re-reads the last WINDOW pixels from a zero state."""
    model.module.eval()
    generator = torch.Generator().manual_seed(seed)
    total = model.size * model.size
    pixels = torch.full((n, 1), model.colors, dtype=torch.long)  # the start symbol
    for _ in range(total):
        logits, _ = model.module(pixels[:, -WINDOW:])
        pixel = torch.multinomial(torch.softmax(logits[:, -1], dim=-1), 1, generator=generator)
        pixels = torch.cat([pixels, pixel], dim=1)
    return pixels[:, 1:].reshape(n, model.size, model.size).numpy().astype(np.uint8)


def throughput(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} sprites/s ({seconds:.2f} s for {count})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--naive-sprites", type=int, default=16)
    parser.add_argument("--full-pixelrnn", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    dataset = SpriteDataset.load(ROOT / "data/tensors/dataset.safetensors")
    train, val = dataset.splits["train"], dataset.splits["val"]
    specs = model_specs(load_params(ROOT / "params.yaml"))
    colors, size = len(dataset.palette), train.shape[1]

    torch.manual_seed(0)
    pixelrnn = PixelRNN(specs["pixelrnn"].config, colors, size)
    start = time.perf_counter()
    pixelrnn.sample(64, seed=0)
    carried = time.perf_counter() - start
    start = time.perf_counter()
    naive_window_sample(pixelrnn, args.naive_sprites, seed=0)
    naive = time.perf_counter() - start
    print(f"machine: {torch.get_num_threads()} threads, CPU; PixelRNN hidden {pixelrnn.config.hidden}")
    print(f"sampling, carried LSTM state (batch 64)       {throughput(64, carried)}")
    print(f"sampling, naive 100-pixel window (batch {args.naive_sprites:<3})  {throughput(args.naive_sprites, naive)}")
    print(f"  speed-up per sprite                          {(naive / args.naive_sprites) / (carried / 64):8.1f} x")

    for name, spec in specs.items():
        torch.manual_seed(0)
        model = spec.plugin(spec.config, colors, size)
        settings = TrainSettings(**{**spec.train.model_dump(), "epochs": 1, "patience": None})
        start = time.perf_counter()
        row = model.fit(train, val, settings, FitContext()).history[-1]
        print(f"training {name:9s} one epoch (batch {settings.batch_size:3d})    {throughput(len(train), time.perf_counter() - start)}  {row}")

    if args.full_pixelrnn:
        spec = specs["pixelrnn"]
        torch.manual_seed(spec.train.seed)
        model = PixelRNN(spec.config, colors, size)
        marks: list[tuple[float, float]] = []
        start = time.perf_counter()
        model.fit(train, val, spec.train, FitContext(on_epoch=lambda row: marks.append((time.perf_counter() - start, row["val_bits_per_pixel"]))))
        best_time, best = min(marks, key=lambda mark: mark[1])
        print(f"default PixelRNN: best val bits/pixel {best:.3f} after {best_time:.0f} s ({len(marks)} epochs run)")
        print("  per epoch: " + ", ".join(f"{bpp:.3f}" for _, bpp in marks))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
