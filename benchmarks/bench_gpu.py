"""The README's GPU profile, measured: each built-in model trained and evaluated on one GPU through the
same stage functions `dvc repro` calls (run_train, run_evaluate), on the course data set.

    python benchmarks/bench_gpu.py --dataset data/tensors/dataset.safetensors --out /tmp/gpu [--smoke]

Prints one row per model (training seconds and epochs, device, test bits/pixel, precision, recall,
C2ST) and copies each model's samples.png to OUT/samples-MODEL.png. --smoke: one epoch each on the
CPU, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The README's "On a GPU" settings, merged over each model's section of params.yaml: every built-in model asks
# for the GPU, and the GAN gets the epochs it needs (tests/test_layout.py keeps the two the same).
GPU_PROFILE = {
    "pixelrnn": {"resources": {"gpus": 1}},
    "vae": {"resources": {"gpus": 1}},
    "transformer": {"resources": {"gpus": 1}},
    "gan": {"resources": {"gpus": 1}, "train": {"epochs": 1000}},
}
SMOKE = {name: {"resources": {"gpus": 0}, "train": {"epochs": 1}} for name in GPU_PROFILE}


def merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from pokegen.layout import Layout
    from pokegen.params import load_models
    from pokegen.stages.evaluate import run_evaluate
    from pokegen.stages.train import run_train

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        layout = Layout(Path(folder))
        layout.dataset.parent.mkdir(parents=True)
        shutil.copy2(args.dataset, layout.dataset)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        for name, extra in (SMOKE if args.smoke else GPU_PROFILE).items():
            params["models"][name] = merged(params["models"][name], extra)
        layout.params.write_text(yaml.safe_dump(params, sort_keys=False))
        settings, specs = load_models(layout.params)
        for name, spec in specs.items():
            started = time.perf_counter()
            summary = run_train(spec, layout)
            trained = time.perf_counter() - started
            started = time.perf_counter()
            metrics = run_evaluate(settings, layout, spec)
            evaluated = time.perf_counter() - started
            shutil.copy2(layout.evaluation_pictures(name) / "samples.png", args.out / f"samples-{name}.png")
            rows.append({
                "model": name,
                "device": summary["device"],
                "epochs": summary["epochs_run"],
                "best_epoch": summary["best_epoch"],
                "train_s": round(trained, 1),
                "evaluate_s": round(evaluated, 1),
                "test_bits_per_pixel": (metrics.get("likelihood") or {}).get("bits_per_pixel"),
                "kind": (metrics.get("likelihood") or {}).get("kind"),
                "precision": metrics["distribution"]["precision"],
                "recall": metrics["distribution"]["recall"],
                "c2st": metrics["distribution"]["c2st_accuracy"],
            })  # fmt: skip
    (args.out / "gpu_profile.json").write_text(json.dumps(rows, indent=2))
    print(f"{'model':12} {'device':6} {'epochs':>6} {'train s':>8} {'eval s':>7} {'test bpp':>9} {'P':>6} {'R':>6} {'C2ST':>6}")
    for r in rows:
        bpp = f"{r['test_bits_per_pixel']:.3f}" if r["test_bits_per_pixel"] is not None else "—"
        print(f"{r['model']:12} {r['device']:6} {r['epochs']:>6} {r['train_s']:>8} {r['evaluate_s']:>7} {bpp:>9} "
              f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['c2st']:>6.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
