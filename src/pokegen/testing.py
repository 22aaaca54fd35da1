"""Contract checks for model plugins, to run in a plugin's own tests (like scikit-learn's check_estimator).

One test per check, each named, so pytest lists what passed and what broke::

    from pokegen.testing import parametrize_with_checks
    from mypkg.model import MyModel

    @parametrize_with_checks(MyModel, config={"hidden": 8})   # a tiny config keeps it fast
    def test_my_model(check):
        check()

or all at once, every failure listed: ``check_model(MyModel, {"hidden": 8})``. The class need not be
pip-installed yet: nothing here goes through the entry-point registry. The model is trained once
per process and shared by the checks. The built-in models pass them (tests/test_plugins.py).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pokegen.checkpoint import load_checkpoint, save_checkpoint
from pokegen.errors import PluginContractError
from pokegen.judge import validation_judge
from pokegen.params import DVC_ISSUE, run_cache_blind_fields
from pokegen.plugin import (
    ALWAYS_ACCEPTED,
    TRAIN_SETTINGS,
    FitContext,
    GenerativeModel,
    TrainSettings,
    checked_fit_result,
)
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


def toy_palette(colors: int = 6, seed: int = 0) -> np.ndarray:
    """RGB colors for toy_sprites' indices, (colors, 3) uint8: index 0, their background, is white."""
    palette = np.random.default_rng(seed).integers(0, 256, (colors, 3)).astype(np.uint8)
    palette[0] = 255
    return palette


def _check(condition: bool, check: str, detail: str) -> None:
    if not condition:
        raise AssertionError(f"[{check}] {detail}")


@dataclass(frozen=True)
class Check:
    """One named contract check; calling it raises AssertionError('[name] what went wrong') when it fails."""

    name: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()

    def __repr__(self) -> str:
        return self.name


class _Subject:
    """The plugin under test, trained once on toy sprites when a check first needs it."""

    def __init__(self, plugin: type[GenerativeModel], config: dict[str, Any] | None, colors: int, size: int, epochs: int) -> None:
        self.plugin, self.config, self.colors, self.size = plugin, config or {}, colors, size
        self.settings = TrainSettings(**{**plugin.train_defaults, "epochs": epochs, "batch_size": 16, "patience": None, "seed": 0})
        data = toy_sprites(colors=colors, size=size)
        self.train, self.val = data[:40], data[40:]

    def build(self) -> GenerativeModel:
        torch.manual_seed(0)
        return self.plugin(self.plugin.Config.model_validate(self.config), self.colors, self.size)

    def fit(self) -> tuple[GenerativeModel, Any]:
        model = self.build()
        palette = toy_palette(self.colors)
        context = FitContext(palette=palette, judge=validation_judge(self.train, self.val, palette))
        return model, model.fit(self.train, self.val, self.settings, context)

    @functools.cached_property
    def trained(self) -> tuple[GenerativeModel, Any]:
        return self.fit()

    @property
    def model(self) -> GenerativeModel:
        return self.trained[0]

    def mask(self) -> np.ndarray:
        mask = np.zeros(self.val.shape, dtype=bool)
        mask[:, self.size // 2 :] = True
        return mask


def model_checks(plugin: type[GenerativeModel], config: dict[str, Any] | None = None, *, colors: int = 6, size: int = 8, epochs: int = 2) -> list[Check]:
    """Every contract check that applies to ``plugin`` (its optional capabilities included), in order."""
    subject = _Subject(plugin, config, colors, size, epochs)
    capabilities = plugin.capabilities()

    def declaration() -> None:
        try:
            check_plugin_class(plugin, plugin.name)
        except TypeError as exc:
            raise AssertionError(f"[declaration] {exc}") from None
        unknown = set(plugin.train_settings) - TRAIN_SETTINGS
        _check(not unknown, "declaration", f"train_settings names {sorted(unknown)}, which pokegen.plugin.TrainSettings does not have")
        unused = set(plugin.train_defaults) - plugin.train_settings - ALWAYS_ACCEPTED
        _check(
            not unused,
            "declaration",
            f"train_defaults sets {sorted(unused)}, which train_settings says fit does not use",
        )
        for attribute in ("Config", "Sampling"):
            blind = run_cache_blind_fields(getattr(plugin, attribute))
            _check(
                not blind,
                "declaration",
                f"{attribute} has settings DVC's run cache cannot see, {blind} ({DVC_ISSUE}): rename them",
            )

    def fit() -> None:
        model, returned = subject.trained
        try:  # a bare history list (API 1.0) passes with a PluginAPIDeprecationWarning, until API 1.2
            result = checked_fit_result(model, returned)
        except PluginContractError as exc:
            raise AssertionError(f"[fit] {exc}") from None
        _check(
            all(np.isfinite(v) for row in result.history for v in row.values()),
            "fit",
            f"non-finite metrics: {result.history}",
        )

    def sample() -> None:
        samples = subject.model.sample(5, seed=1)
        _check(isinstance(samples, np.ndarray) and samples.shape == (5, size, size), "sample", f"shape {getattr(samples, 'shape', None)}, expected (5, {size}, {size})")
        _check(samples.dtype == np.uint8, "sample", f"dtype {samples.dtype}, expected uint8")
        _check(int(samples.max()) < colors, "sample", f"color index {int(samples.max())} outside the {colors}-color palette")

    def seeding() -> None:
        samples = subject.model.sample(5, seed=1)
        _check(np.array_equal(samples, subject.model.sample(5, seed=1)), "seeding", "sample(n, seed) gave different sprites for the same seed")
        again, _ = subject.fit()
        _check(np.array_equal(again.sample(5, seed=1), samples), "seeding", "two trainings with the same seed gave different models")

    def log_prob() -> None:
        scores = subject.model.log_prob(subject.val)
        _check(np.shape(scores) == (len(subject.val),), "log_prob", f"shape {np.shape(scores)}, expected ({len(subject.val)},)")
        _check(bool(np.all(np.isfinite(scores))) and bool(np.all(np.asarray(scores) <= 1e-6)), "log_prob", "log-probabilities of discrete images must be finite and <= 0")

    def elbo() -> None:
        bound = subject.model.elbo(subject.val)
        _check(np.shape(bound) == (len(subject.val),), "elbo", f"shape {np.shape(bound)}, expected ({len(subject.val)},)")
        _check(bool(np.all(np.isfinite(bound))) and bool(np.all(np.asarray(bound) <= 1e-6)), "elbo", "the ELBO of discrete images must be finite and <= 0")

    def complete() -> None:
        mask = subject.mask()
        completed = subject.model.complete(subject.val, mask, seed=0)
        _check(completed.shape == subject.val.shape and completed.dtype == np.uint8, "complete", f"shape/dtype {completed.shape} {completed.dtype}")
        _check(np.array_equal(completed[~mask], subject.val[~mask]), "complete", "complete changed pixels outside the mask")
        _check(int(completed.max()) < colors, "complete", "completed pixels outside the palette")
        if plugin.completes_any_mask:  # declared: then a mask that is not the lower rows must work as well
            left = np.zeros_like(mask)
            left[:, :, : size // 2] = True
            filled = subject.model.complete(subject.val, left, seed=0)
            _check(np.array_equal(filled[~left], subject.val[~left]), "complete", "completes_any_mask: filling the left half changed other pixels")
            _check(filled.shape == subject.val.shape and int(filled.max()) < colors, "complete", "completes_any_mask: bad left-half completion")

    def conditional_log_prob() -> None:
        model, val, mask = subject.model, subject.val, subject.mask()
        conditional, whole = model.conditional_log_prob(val, mask), model.log_prob(val)
        _check(np.shape(conditional) == (len(val),), "conditional_log_prob", f"shape {np.shape(conditional)}, expected ({len(val)},)")
        _check(bool(np.all(conditional <= 1e-6)) and bool(np.all(conditional >= whole - 1e-4)), "conditional_log_prob", "log p(covered | rest) must lie between log p(image) and 0")
        _check(np.allclose(model.conditional_log_prob(val, np.ones_like(mask)), whole, atol=1e-4), "conditional_log_prob", "with everything covered it must equal log_prob")

    def encode_decode() -> None:
        codes = subject.model.encode(subject.val)
        decoded = subject.model.decode(codes)
        _check(np.ndim(codes) == 2 and len(codes) == len(subject.val), "encode", f"codes shape {np.shape(codes)}, expected (n, dims)")
        _check(decoded.shape == subject.val.shape and decoded.dtype == np.uint8, "decode", f"decode gave {decoded.shape} {decoded.dtype}")

    def kl_per_dimension() -> None:
        kl = np.asarray(subject.model.kl_per_dimension(subject.val))
        _check(kl.ndim == 1 and len(kl) >= 1, "kl_per_dimension", f"shape {kl.shape}, expected (code dims,)")
        _check(bool(np.all(np.isfinite(kl))) and bool(np.all(kl >= -1e-6)), "kl_per_dimension", "a KL is finite and >= 0")

    def save_load() -> None:
        model = subject.model
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(model, Path(folder), data_sha256="0" * 64, summary={})
            loaded = load_checkpoint(Path(folder), plugin=plugin)
            _check(type(loaded) is plugin, "save/load", f"loaded a {type(loaded).__name__}")
            _check(np.array_equal(loaded.sample(5, seed=1), model.sample(5, seed=1)), "save/load", "the reloaded model samples differently")
            if "log_prob" in capabilities:
                _check(np.allclose(loaded.log_prob(subject.val), model.log_prob(subject.val)), "save/load", "the reloaded model scores differently")

    optional = {"log_prob": log_prob, "elbo": elbo, "kl_per_dimension": kl_per_dimension, "complete": complete, "conditional_log_prob": conditional_log_prob, "encode": encode_decode}
    checks = [Check("declaration", declaration), Check("fit", fit), Check("sample", sample), Check("seeding", seeding)]
    checks += [Check("encode/decode" if name == "encode" else name, run) for name, run in optional.items() if name in capabilities]
    return checks + [Check("save/load", save_load)]


def parametrize_with_checks(plugin: type[GenerativeModel], config: dict[str, Any] | None = None, **options: Any):
    """A pytest.mark.parametrize over model_checks, one test per check, named after it (scikit-learn's idiom)."""
    import pytest

    checks = model_checks(plugin, config, **options)
    return pytest.mark.parametrize("check", checks, ids=[check.name for check in checks])


def check_model(plugin: type[GenerativeModel], config: dict[str, Any] | None = None, **options: Any) -> list[str]:
    """Run every check on ``plugin``; return their names, or raise one AssertionError listing every failed check."""
    checks = model_checks(plugin, config, **options)
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError(f"{plugin.__name__} breaks {len(failures)} of {len(checks)} contract checks:\n" + "\n".join(failures))
    return [check.name for check in checks]
