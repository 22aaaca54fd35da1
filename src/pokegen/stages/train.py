"""Stage train@NAME: fit one model plugin on the train split; write its checkpoint, metrics and curves."""

from __future__ import annotations

import logging
import shutil
import time

import torch

from pokegen.artifacts import SpriteDataset
from pokegen.checkpoint import save_checkpoint
from pokegen.devices import choose_device
from pokegen.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from pokegen.judge import validation_judge
from pokegen.layout import Layout
from pokegen.params import ModelSpec
from pokegen.plugin import FitContext, checked_fit_result
from pokegen.training import curves_csv, prepare_resume_dir, resume_key

log = logging.getLogger(__name__)


def run_train(spec: ModelSpec, layout: Layout, context: FitContext | None = None) -> dict:
    """Train ``spec``'s model; return the summary written to train_metrics.json.

    Resumable: the state after each epoch is kept in .pokegen/resume/NAME (outside DVC's outputs)
    and used by the next run with the same plugin, config, settings and data.
    """
    name = spec.name
    dataset = SpriteDataset.load(layout.dataset)
    data_sha256 = sha256_file(layout.dataset)
    context = context or FitContext()
    context.palette = dataset.palette
    context.judge = validation_judge(dataset.splits["train"], dataset.splits["val"], dataset.palette)
    context.device = choose_device(name, spec.resources, spec.train.cpu_fallback)
    context.resume_dir = layout.resume_dir(name)
    prepare_resume_dir(context.resume_dir, resume_key(spec, data_sha256))

    torch.manual_seed(spec.train.seed)  # the same initial weights for the same seed
    train, val = dataset.splits["train"], dataset.splits["val"]
    model = spec.plugin(spec.config, colors=len(dataset.palette), size=train.shape[1])
    started = time.perf_counter()
    result = checked_fit_result(model, model.fit(train, val, spec.train, context))
    seconds = time.perf_counter() - started

    history, best = result.history, result.history[result.best_epoch - 1]
    summary = {
        "epochs_run": len(history),
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "device": context.device,
        "final": {key: value for key, value in history[-1].items() if key != "epoch"},
        "best": {key: value for key, value in best.items() if key != "epoch"},
    }
    save_checkpoint(model, layout.model_dir(name), data_sha256=data_sha256, summary=summary)
    write_json_atomic(layout.train_metrics(name), summary)
    write_bytes_atomic(layout.train_curves(name), curves_csv(history))
    write_json_atomic(layout.training_time(name), {"training": {"seconds": round(seconds, 1), "device": context.device, "epochs": len(history)}})
    shutil.rmtree(context.resume_dir)  # finished: nothing left to resume
    log.info("train@%s: %d epochs in %.1fs on %s; best epoch %d", name, len(history), seconds, context.device, result.best_epoch)
    return summary
