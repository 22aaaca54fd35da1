"""What the moving average of the weights (train.ema) costs per training step, side by side in one process.

    python benchmarks/bench_ema.py path/to/data/tensors/dataset.safetensors [--steps 40] [--rounds 3]

For PixelRNN, the Transformer and the VAE at their default configs and batch sizes, on the real training sprites:
the seconds of --steps training steps without the average and with it (0.99), alternated for --rounds,
and the ratio of the medians. What the average does to the figures is in benchmarks/RESULTS.md (the
pipeline's own evaluate@MODEL, with train.ema 0.99 and 0).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pokegen.artifacts import SpriteDataset
from pokegen.plugin import TrainSettings
from pokegen.plugins.pixelrnn import PixelRNN, PixelRNNConfig
from pokegen.plugins.transformer import SpriteTransformer, TransformerConfig
from pokegen.plugins.vae import VAE, VAEConfig
from pokegen.training import WeightAverage


def seconds(model, batches: list[torch.Tensor], average: WeightAverage | None) -> float:
    optimizers = model.optimizers(model.settings)
    model.module.train()
    started = time.perf_counter()
    for step, batch in enumerate(batches):
        model.training_step(batch, optimizers, step)
        if average is not None:
            average.update(model.module)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dataset = SpriteDataset.load(args.dataset)
    train, colors = torch.as_tensor(dataset.splits["train"], dtype=torch.long), len(dataset.palette)
    size = train.shape[1]
    print(f"{'model':<12}{'steps':>6}{'without s':>11}{'with ema s':>12}{'ratio':>8}")
    for plugin, config in ((PixelRNN, PixelRNNConfig()), (SpriteTransformer, TransformerConfig()), (VAE, VAEConfig())):
        torch.manual_seed(0)
        model = plugin(config, colors, size)
        model.settings = TrainSettings(**plugin.train_defaults)
        batch_size = model.settings.batch_size
        batches = [train[torch.randint(0, len(train), (batch_size,))] for _ in range(args.steps)]
        without, with_ema = [], []
        for _ in range(args.rounds):  # alternated, so a slower spell of the machine hits both arms
            without.append(seconds(model, batches, None))
            with_ema.append(seconds(model, batches, WeightAverage(model.module, 0.99)))
        a, b = statistics.median(without), statistics.median(with_ema)
        print(f"{plugin.name:<12}{args.steps:>6}{a:>11.2f}{b:>12.2f}{b / a:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
