"""The VAE's decoders side by side in one run, on the same data, seed and training settings: the lecture's
(every pixel on its own given the code), the PixelCNN conditioned on the code (PixelVAE) without the
new-color gate, and with it (the default), each trained and evaluated through the stage functions
`dvc repro` calls.

    python benchmarks/bench_vae.py data/tensors/dataset.safetensors [--out /tmp/vae-bench]

Prints training seconds, epochs, the test bound, precision, recall, C2ST, colors per sprite and the code
dimensions in use, and writes OUT/samples-DECODER.png and OUT/latent_grid-DECODER.png to look at.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DECODERS = {  # name: the settings it changes in params.yaml's models.vae
    "factorized": {"decoder": "factorized"},
    "pixelcnn-nogate": {"decoder": "pixelcnn", "new_color_gate": False},
    "pixelcnn": {"decoder": "pixelcnn", "new_color_gate": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("vae-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pokegen.layout import Layout
    from pokegen.params import load_models
    from pokegen.stages.evaluate import run_evaluate
    from pokegen.stages.train import run_train

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for decoder, settings_changed in DECODERS.items():
        with tempfile.TemporaryDirectory() as folder:
            layout = Layout(Path(folder))
            layout.dataset.parent.mkdir(parents=True)
            shutil.copy2(args.dataset, layout.dataset)
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            params["models"] = {"vae": {**params["models"]["vae"], **settings_changed}}
            params["pipeline"]["models"] = ["vae"]
            layout.params.write_text(yaml.safe_dump(params, sort_keys=False))
            settings, specs = load_models(layout.params)
            started = time.perf_counter()
            summary = run_train(specs["vae"], layout)
            trained = time.perf_counter() - started
            started = time.perf_counter()
            metrics = run_evaluate(settings, layout, specs["vae"])
            evaluated = time.perf_counter() - started
            for picture in ("samples", "latent_grid"):
                shutil.copy2(layout.evaluation_pictures("vae") / f"{picture}.png", args.out / f"{picture}-{decoder}.png")
            likelihood, distribution = metrics["likelihood"], metrics["distribution"]
            rows.append(
                f"{decoder:15} {trained:8.1f} {summary['epochs_run']:>6} {evaluated:7.1f} {likelihood['bits_per_pixel']:9.3f} "
                f"{distribution['precision']:6.3f} {distribution['recall']:6.3f} {distribution['c2st_accuracy']:6.3f} "
                f"{distribution['colors_per_sprite']:6.1f} "
                f"{likelihood['code_dims_in_use']:>4} of {likelihood['code_dims']}"
            )
    print(f"{'decoder':15} {'train s':>8} {'epochs':>6} {'eval s':>7} {'test bpp':>9} {'P':>6} {'R':>6} {'C2ST':>6} {'colors':>6} code dims in use")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
