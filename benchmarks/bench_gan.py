"""The GAN of a baseline commit and this tree's, side by side in one run, each on its own default params.

The "before" is plugins/gan/model.py of a baseline commit, loaded from git: default 879e562 (a softmax
map scored by a critic on 167 one-hot channels, lr 2e-4); 4b83ec0 is the one before DiffAugment and
upsample-convolve. The "after" is this tree's (the chosen colors seen in RGB, straight-through, lr 5e-4).
Both train on the same data with the same seed, then go through the same evaluation as evaluate@gan.

    python benchmarks/bench_gan.py path/to/data/tensors/dataset.safetensors [--base 879e562] [--epochs 100] [--seeds 0,1,2] [--batch-size 32]

2c7e17b is the last GAN that kept its last epoch instead of its best validation F1.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pokegen.artifacts import SpriteDataset
from pokegen.evaluation import evaluate
from pokegen.params import EvaluateParams
from pokegen.plugin import FitContext, TrainSettings
from pokegen.plugins.gan import GAN, GANConfig

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--base", default="879e562")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", default="0", help="training seeds, each arm trained once per seed")
    parser.add_argument("--batch-size", type=int, help="both arms' batch size (default: each arm's own)")
    args = parser.parse_args()
    dataset = SpriteDataset.load(args.dataset)
    old_source = subprocess.run(["git", "show", f"{args.base}:plugins/gan/model.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "gan_before.py").write_text(old_source)
        before = _load(Path(scratch) / "gan_before.py", "gan_before")
    arms = {f"before ({args.base})": (before.GAN, before.GANConfig()), "after (this tree)": (GAN, GANConfig())}
    print(f"{'GAN':<22}{'seed':>5}{'train s':>8}{'kept':>5}{'precision':>10}{'recall':>8}{'coverage':>9}{'C2ST':>7}{'pal JS':>7}   ({args.epochs} epochs, batch {args.batch_size or 'of each arm'}, each arm's own lr)")
    for seed in map(int, args.seeds.split(",")):
        for label, (plugin, config) in arms.items():
            torch.manual_seed(seed)
            model = plugin(config, len(dataset.palette), dataset.splits["train"].shape[1])
            settings = TrainSettings(**{**plugin.train_defaults, "epochs": args.epochs, "seed": seed, "grad_clip": None})
            if args.batch_size:
                settings = settings.model_copy(update={"batch_size": args.batch_size})
            started = time.perf_counter()
            result = model.fit(dataset.splits["train"], dataset.splits["val"], settings, FitContext(palette=dataset.palette))
            seconds = time.perf_counter() - started
            found = evaluate(model, dataset, EvaluateParams()).metrics["distribution"]
            print(
                f"{label:<22}{seed:>5}{seconds:>8.0f}{result.best_epoch:>5}{found['precision']:>10.3f}{found['recall']:>8.3f}"
                f"{found['coverage']:>9.3f}{found['c2st_accuracy']:>7.3f}{found['palette_js']:>7.3f}"
            )


if __name__ == "__main__":
    main()
