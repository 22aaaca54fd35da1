"""The shared training loop for torch plugins: seed, epochs, early stop, checkpoint, resume, progress.

A TorchModel (pokegen.torch_model) supplies its network (``module``), its ``optimizers`` and a ``training_step``
(most supply only ``loss``); this loop does everything else, once, for every plugin. The loop lives apart from
TorchModel so that an edit here re-trains the models but re-runs no evaluation (which only loads and samples).

With ``ema`` set, the weights validated, kept as the best epoch's and saved are a moving average of the
weights after every step (Polyak averaging): the last steps' noise averages out, which on 712 sprites
gives better likelihoods and cleaner samples at the same cost (benchmarks/RESULTS.md).

Every epoch starts from torch.manual_seed(seed, epoch): shuffling, dropout and noise depend
only on the seed and the epoch, so a run resumed from the checkpoint written after epoch e
ends with the same weights as one that never stopped (on the CPU; GPU kernels may differ).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from pokegen.errors import PluginContractError, TrainingDiverged
from pokegen.fileio import atomic_path
from pokegen.plugin import FitContext, FitResult, TrainSettings
from pokegen.registry import plugin_info
from pokegen.torch_model import TorchModel

if TYPE_CHECKING:
    from pokegen.params import ModelSpec

log = logging.getLogger(__name__)
RESUME_FILE = "resume.pt"


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class WeightAverage:
    """An exponential moving average of a module's weights: after each step, average = ema * average + (1 - ema) * weights.
    Integer buffers (counters) are copied, not averaged."""

    def __init__(self, module: nn.Module, ema: float) -> None:
        self.ema = ema
        self.state = {key: value.detach().clone() for key, value in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].mul_(self.ema).add_(value, alpha=1 - self.ema)
            else:
                self.state[key].copy_(value)

    def swap_in(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Load the average into ``module``; returns the weights it had, for load_state_dict to put back."""
        trained = copy.deepcopy(module.state_dict())
        module.load_state_dict(self.state)
        return trained


def _batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(count, generator=generator)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def run_training(model: TorchModel, train: np.ndarray, val: np.ndarray, settings: TrainSettings, context: FitContext) -> FitResult:
    """Train ``model`` in place and keep its best validation epoch (the last without a monitor).

    Raises TrainingDiverged, or PluginContractError if validation_metrics lacks the monitored figure."""
    device = torch.device(context.device)
    model.module.to(device)
    model.settings = settings
    optimizers = model.optimizers(settings)
    train_t = torch.as_tensor(train, dtype=torch.long)
    val_t = torch.as_tensor(val, dtype=torch.long).to(device)
    resume = context.resume_dir / RESUME_FILE if context.resume_dir else None

    history: list[dict[str, float]] = []
    best_score, best_state, best_epoch, stale = math.inf, None, 0, 0
    average = WeightAverage(model.module, settings.ema) if settings.ema else None
    if resume is not None and resume.is_file():
        saved = torch.load(resume, map_location=device, weights_only=True)
        model.module.load_state_dict(saved["module"])
        for optimizer, state in zip(optimizers, saved["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        history, best_score, best_state, stale = saved["history"], saved["best_score"], saved["best_state"], saved["stale"]
        best_epoch = saved.get("best_epoch", 0)
        if average is not None:
            average.state = saved["average"]
        log.info("%s: resuming after epoch %d from %s", model.name, len(history), resume)

    for epoch in range(len(history), settings.epochs):
        if settings.patience is not None and stale >= settings.patience:
            break
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(settings.seed, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
        model.module.train()
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)  # a GAN reports its generator loss on some steps only
        batches = _batches(len(train_t), settings.batch_size, generator)
        for step, index in enumerate(batches):
            metrics = model.training_step(train_t[index].to(device), optimizers, step)
            if average is not None:
                average.update(model.module)
            if context.on_batch:
                context.on_batch(epoch + 1, step + 1, len(batches))
            bad = [key for key, value in metrics.items() if not math.isfinite(value)]
            if bad:
                raise TrainingDiverged(
                    f"{model.name}: {', '.join(bad)} became {metrics[bad[0]]} in epoch {epoch + 1}, batch {step + 1}. "
                    f"The last good checkpoint is kept{f' at {resume}' if resume else ''}; lower models.{model.name}.train.lr "
                    "or change the seed, then run again."
                )
            for key, value in metrics.items():
                sums[key] += value
                counts[key] += 1
        row: dict[str, float] = {"epoch": epoch + 1, **{f"train_{key}": sums[key] / counts[key] for key in sums}}
        model.module.eval()
        trained = average.swap_in(model.module) if average is not None else None  # validated and kept: the average
        with torch.no_grad():
            row.update(model.validation_metrics(val_t, epoch + 1))
        history.append(row)

        due = (epoch + 1) % model.monitor_every == 0 or epoch + 1 == settings.epochs
        if model.monitor is not None and due and model.monitor not in row:
            raise PluginContractError(
                f"{model.name}: validation_metrics returned {sorted(k for k in row if k != 'epoch')} without "
                f"{model.monitor!r} in epoch {epoch + 1}, the figure {type(model).__name__}.monitor names for early stopping "
                "and the best epoch; return it from validation_metrics, or set monitor = None to keep the last epoch"
            )
        if model.monitor is not None and model.monitor in row:
            score = row[model.monitor] if model.monitor_mode == "min" else -row[model.monitor]  # lower is better below
            if score < best_score:
                best_score, best_state, best_epoch, stale = score, copy.deepcopy(model.module.state_dict()), epoch + 1, 0
            else:
                stale += 1
        elif model.monitor is None:
            best_epoch = epoch + 1
        if trained is not None:
            model.module.load_state_dict(trained)  # training goes on from the trained weights, not the average
        if context.on_epoch:
            context.on_epoch(row)
        # Wall time is logged, not stored: outputs stay byte-identical for the same seed.
        log.info("%s epoch %d/%d (%.1fs): %s", model.name, epoch + 1, settings.epochs, time.perf_counter() - started, _describe(row))
        if resume is not None:
            with atomic_path(resume) as tmp:
                state = {
                    "module": model.module.state_dict(),
                    "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                    "history": history,
                    "best_score": best_score,
                    "best_state": best_state,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "average": average.state if average is not None else None,
                }
                torch.save(state, tmp)

    if best_state is not None:
        model.module.load_state_dict(best_state)  # the best validation epoch, not the last
    elif average is not None:
        model.module.load_state_dict(average.state)  # no monitor: the last epoch's average
    return FitResult(history, best_epoch or len(history), model.monitor)


def resume_key(spec: ModelSpec, data_sha256: str) -> str:
    """What a resumable training state belongs to: the plugin and its version, config, settings and data."""
    info = plugin_info(spec.name)
    record = {
        "plugin": info.target, "version": info.version, "config": spec.config.model_dump(mode="json"),
        "train": spec.train.model_dump(mode="json"), "data": data_sha256,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def prepare_resume_dir(folder: Path, key: str) -> None:
    """Keep ``folder``'s state only if it was written for ``key``; otherwise start it afresh."""
    stamp = folder / "fingerprint"
    if folder.exists() and (not stamp.is_file() or stamp.read_text() != key):
        shutil.rmtree(folder)  # state of another config or data set
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


def curves_csv(history: list[dict[str, float]]) -> bytes:
    """One row per epoch, one column per metric (DVC plots read it)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" if c in row else "" for c in columns) for row in history]
    return ("\n".join(lines) + "\n").encode()


def _describe(row: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch")


