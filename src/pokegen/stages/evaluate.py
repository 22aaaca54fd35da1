"""Stage evaluate@NAME: metrics by the model's capabilities, and its pictures, on the test split."""

from __future__ import annotations

import logging

from pokegen.artifacts import SpriteDataset
from pokegen.checkpoint import load_checkpoint, read_checkpoint_info
from pokegen.devices import choose_device
from pokegen.errors import DataError, ParamsError
from pokegen.evaluation import evaluate, pictures, summary_line
from pokegen.fileio import sha256_file, write_folder_atomic, write_json_atomic
from pokegen.images import png_bytes
from pokegen.layout import Layout
from pokegen.params import ModelSpec, Params

log = logging.getLogger(__name__)


def run_evaluate(params: Params, layout: Layout, spec: ModelSpec) -> dict:
    """Score the trained model ``spec.name``; write its metrics.json, pictures and sampling speed. Returns the metrics."""
    name, settings = spec.name, params.evaluate
    dataset = SpriteDataset.load(layout.dataset)
    if settings.nearest_k >= len(dataset.splits["test"]):
        raise ParamsError(
            f"evaluate.nearest_k = {settings.nearest_k} needs more test sprites than that "
            f"({len(dataset.splits['test'])} in {layout.dataset}); lower evaluate.nearest_k or raise tensorize.test"
        )
    trained_on = read_checkpoint_info(layout.model_dir(name)).get("data_sha256")
    if trained_on != sha256_file(layout.dataset):
        raise DataError(f"{layout.model_dir(name)} was trained on other data than {layout.dataset}; re-train it: dvc repro train@{name}")
    device = choose_device(name, spec.resources, spec.train.cpu_fallback)
    model = load_checkpoint(layout.model_dir(name)).to(device)
    model.sampling = spec.sampling  # sample.<name>: how it draws, apart from what it learned
    result = evaluate(model, dataset, settings)

    metrics = {"model": name, "samples": len(result.samples), **result.metrics}
    drawn = pictures(model, result, dataset, settings)
    write_folder_atomic(layout.evaluation_pictures(name), {file: png_bytes(picture) for file, picture in drawn.items()})
    write_json_atomic(layout.evaluation_metrics(name), metrics)
    speed = {"sprites_per_second": round(result.sprites_per_second, 1), "device": device, "sprites": result.sampled}
    write_json_atomic(layout.sampling_speed(name), {"sampling": speed})
    log.info("evaluate@%s: %s; sampling %.1f sprites/s on %s", name, summary_line(metrics), result.sprites_per_second, device)
    return metrics
