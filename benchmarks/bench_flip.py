"""What adding each training sprite's mirror image (tensorize.flip) does to test bits/pixel, side by side.

Both arms use the same quantized sprites, split and seed; only the train split differs (712 sprites, or
712 plus their mirror images). Test figures are on the unflipped test sprites.

    python benchmarks/bench_flip.py path/to/data/quantized/sprites.safetensors [--epochs 8] [--hidden 128]

Three arms: no flip for --epochs; flip for half as many epochs (the same number of optimizer steps);
flip for --epochs (the same number of passes, twice the steps).

Models: the neighbour baseline (counts) and a PixelRNN smaller than the default (the default takes
minutes per arm on a CPU); the flag changes the data only, so any model can use it.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from pokegen.artifacts import QuantizedSprites
from pokegen.plugin import FitContext, TrainSettings
from pokegen.plugins.baselines import NeighbourBaseline, NeighbourConfig
from pokegen.plugins.pixelrnn import PixelRNN, PixelRNNConfig
from pokegen.tensorize import split_sprites


def bits(model, images) -> float:
    return float(-model.log_prob(images).mean() / (images.shape[1] * images.shape[2] * math.log(2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sprites", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    sprites = QuantizedSprites.load(args.sprites)
    print(f"{'flip':<6}{'train':>6}{'epochs':>7}  {'neighbours':>10}  {'pixelrnn':>9}  pixelrnn seconds   (test bits/pixel)")
    for flip, epochs in ((False, args.epochs), (True, args.epochs // 2), (True, args.epochs)):
        data = split_sprites(sprites, val=40, test=40, seed=0, flip=flip)
        train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
        neighbours = NeighbourBaseline(NeighbourConfig(), len(data.palette), train.shape[1])
        neighbours.fit(train, val)
        torch.manual_seed(0)
        rnn = PixelRNN(PixelRNNConfig(hidden=args.hidden), len(data.palette), train.shape[1])
        started = time.perf_counter()
        rnn.fit(train, val, TrainSettings(epochs=epochs, batch_size=32, lr=0.005, patience=None), FitContext())
        seconds = time.perf_counter() - started
        print(f"{flip!s:<6}{len(train):>6}{epochs:>7}  {bits(neighbours, test):>10.4f}  {bits(rnn, test):>9.4f}  {seconds:>8.0f}")


if __name__ == "__main__":
    main()
