"""Contract checks for model plugins, to run in a plugin's own tests (like scikit-learn's check_estimator).

    from pokegen.testing import check_model
    from mypkg.model import MyModel

    def test_my_model_keeps_the_contract():
        check_model(MyModel, config={"hidden": 8})   # a tiny config keeps it fast

Each check raises AssertionError with a message naming the check and what went wrong.
The built-in models pass them (tests/test_plugins.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pokegen.checkpoint import load_checkpoint, save_checkpoint
from pokegen.plugin import FitContext, GenerativeModel, TrainSettings
from pokegen.registry import check_plugin_class


def toy_sprites(count: int = 48, colors: int = 6, size: int = 8, seed: int = 0) -> np.ndarray:
    """Small structured palette images: a background color and a few blocks, (count, size, size) uint8."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size), dtype=np.uint8)
    for image in images:
        for _ in range(2):
            top, left = rng.integers(0, size - 2, 2)
            image[top : top + size // 2, left : left + size // 2] = rng.integers(1, colors)
    return images


def _check(condition: bool, check: str, detail: str) -> None:
    if not condition:
        raise AssertionError(f"[{check}] {detail}")


def check_model(
    plugin: type[GenerativeModel],
    config: dict[str, Any] | None = None,
    *,
    colors: int = 6,
    size: int = 8,
    epochs: int = 2,
) -> list[str]:
    """Run every contract check on ``plugin``; return the names of the checks that ran."""
    ran = []
    check_plugin_class(plugin, plugin.name)
    ran.append("declaration")

    settings = TrainSettings(**{**plugin.train_defaults, "epochs": epochs, "batch_size": 16, "patience": None, "seed": 0})
    data = toy_sprites(colors=colors, size=size)
    train, val = data[:40], data[40:]

    def build() -> GenerativeModel:
        torch.manual_seed(0)
        return plugin(plugin.Config.model_validate(config or {}), colors, size)

    model = build()
    history = model.fit(train, val, settings, FitContext())
    _check(isinstance(history, list) and len(history) >= 1, "fit", f"fit returned {history!r}, expected one row per epoch")
    _check(all(np.isfinite(v) for row in history for v in row.values()), "fit", f"non-finite metrics: {history}")
    ran.append("fit")

    samples = model.sample(5, seed=1)
    _check(isinstance(samples, np.ndarray) and samples.shape == (5, size, size), "sample", f"shape {getattr(samples, 'shape', None)}, expected (5, {size}, {size})")
    _check(samples.dtype == np.uint8, "sample", f"dtype {samples.dtype}, expected uint8")
    _check(int(samples.max()) < colors, "sample", f"color index {int(samples.max())} outside the {colors}-color palette")
    _check(np.array_equal(samples, model.sample(5, seed=1)), "seeding", "sample(n, seed) gave different sprites for the same seed")
    ran += ["sample", "seeding"]

    again = build()
    again.fit(train, val, settings, FitContext())
    _check(np.array_equal(again.sample(5, seed=1), samples), "seeding", "two trainings with the same seed gave different models")

    capabilities = plugin.capabilities()
    if "log_prob" in capabilities:
        log_prob = model.log_prob(val)
        _check(np.shape(log_prob) == (len(val),), "log_prob", f"shape {np.shape(log_prob)}, expected ({len(val)},)")
        _check(bool(np.all(np.isfinite(log_prob))) and bool(np.all(np.asarray(log_prob) <= 1e-6)), "log_prob", "log-probabilities of discrete images must be finite and <= 0")
        ran.append("log_prob")
    if "complete" in capabilities:
        mask = np.zeros(val.shape, dtype=bool)
        mask[:, size // 2 :] = True
        completed = model.complete(val, mask, seed=0)
        _check(completed.shape == val.shape and completed.dtype == np.uint8, "complete", f"shape/dtype {completed.shape} {completed.dtype}")
        _check(np.array_equal(completed[~mask], val[~mask]), "complete", "complete changed pixels outside the mask")
        _check(int(completed.max()) < colors, "complete", "completed pixels outside the palette")
        ran.append("complete")
    if "conditional_log_prob" in capabilities:
        mask = np.zeros(val.shape, dtype=bool)
        mask[:, size // 2 :] = True
        conditional = model.conditional_log_prob(val, mask)
        whole = model.log_prob(val)
        _check(np.shape(conditional) == (len(val),), "conditional_log_prob", f"shape {np.shape(conditional)}, expected ({len(val)},)")
        _check(bool(np.all(conditional <= 1e-6)) and bool(np.all(conditional >= whole - 1e-4)), "conditional_log_prob", "log p(covered | rest) must lie between log p(image) and 0")
        _check(np.allclose(model.conditional_log_prob(val, np.ones_like(mask)), whole, atol=1e-4), "conditional_log_prob", "with everything covered it must equal log_prob")
        ran.append("conditional_log_prob")
    if "encode" in capabilities:
        codes = model.encode(val)
        decoded = model.decode(codes)
        _check(np.ndim(codes) == 2 and len(codes) == len(val), "encode", f"codes shape {np.shape(codes)}, expected (n, dims)")
        _check(decoded.shape == val.shape and decoded.dtype == np.uint8, "decode", f"decode gave {decoded.shape} {decoded.dtype}")
        ran.append("encode/decode")

    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(model, Path(folder), data_sha256="0" * 64, summary={})
        loaded = load_checkpoint(Path(folder))
        _check(type(loaded) is plugin, "save/load", f"loaded a {type(loaded).__name__}")
        _check(np.array_equal(loaded.sample(5, seed=1), samples), "save/load", "the reloaded model samples differently")
        if "log_prob" in capabilities:
            _check(np.allclose(loaded.log_prob(val), model.log_prob(val)), "save/load", "the reloaded model scores differently")
    ran.append("save/load")
    return ran
