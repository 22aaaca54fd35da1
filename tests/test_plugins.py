"""Issue 3: the plugin API, registry, built-in models, shared training loop and train@MODEL stage."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import BIN, REPO_ROOT, make_repo, run

from pokegen.artifacts import SpriteDataset
from pokegen.checkpoint import load_checkpoint
from pokegen.judge import validation_judge
from pokegen.layout import Layout
from pokegen.plugin import (
    API_VERSION,
    FitContext,
    FitResult,
    PluginAPIDeprecationWarning,
    TrainSettings,
    checked_fit_result,
)
from pokegen.plugins.gan import GAN, GANConfig
from pokegen.plugins.pixelrnn import PixelRNN, PixelRNNConfig
from pokegen.plugins.transformer import SpriteTransformer, TransformerConfig
from pokegen.plugins.vae import VAE, VAEConfig
from pokegen.registry import discover
from pokegen.testing import check_model, model_checks, toy_palette, toy_sprites

TINY = {
    "pixelrnn": {"hidden": 16},
    "vae": {"channels": 8, "embed": 4, "head_channels": 8, "iw_samples": 4},
    "gan": {"channels": 8, "latent_dim": 8},
    "transformer": {"width": 16, "layers": 1, "heads": 2},
}


BUILT_IN_CHECKS = [(plugin, check) for plugin in (PixelRNN, VAE, GAN, SpriteTransformer) for check in model_checks(plugin, TINY[plugin.name])]
# The lecture's VAE decoder (each pixel on its own) stays a choice: it keeps the contract too.
BUILT_IN_CHECKS += [(VAE, check) for check in model_checks(VAE, {**TINY["vae"], "decoder": "factorized"})]


@pytest.mark.parametrize(("plugin", "check"), BUILT_IN_CHECKS, ids=[f"{p.name}-{c.name}-{i}" for i, (p, c) in enumerate(BUILT_IN_CHECKS)])
def test_the_built_ins_keep_the_contract(plugin, check) -> None:
    check()


@pytest.mark.parametrize("plugin", [PixelRNN, VAE, GAN, SpriteTransformer], ids=lambda p: p.name)
def test_every_declared_capability_has_its_own_check(plugin) -> None:
    names = [check.name for check in model_checks(plugin, TINY[plugin.name])]
    assert {"declaration", "fit", "sample", "seeding", "save/load"} <= set(names)
    for capability in plugin.capabilities():
        assert any(capability in name for name in names), f"{capability} was not checked"


class _Unregistered(PixelRNN):
    """A plugin that is not pip-installed: the kit must check it all the same."""

    name = "not-installed-rnn"


class _Broken(_Unregistered):
    """Breaks two checks at once: samples outside the palette, and a fit that returns its figures as a dict."""

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return np.full((n, self.size, self.size), 255, dtype=np.uint8)

    def fit(self, train, val, settings, context):
        return super().fit(train, val, settings, context).history[-1]


class _WrittenForAPI10(_Unregistered):
    """A plugin written from 50494d6's docs/plugins.md (plugin API 1.0), whose fit returns the bare history list."""

    def fit(self, train, val, settings, context):
        return super().fit(train, val, settings, context).history


def test_the_kit_checks_a_class_that_is_not_installed() -> None:
    assert "save/load" in check_model(_Unregistered, {"hidden": 8}, epochs=1)


def test_the_kit_lists_every_broken_check_not_only_the_first() -> None:
    with pytest.raises(AssertionError) as failure:
        check_model(_Broken, {"hidden": 8}, epochs=1)
    message = str(failure.value)
    assert "[fit] _Broken.fit returned dict; return pokegen.plugin.FitResult(history, best_epoch)" in message
    assert "[sample] color index 255 outside the 6-color palette" in message
    assert "[declaration]" not in message and "[log_prob]" not in message


def test_a_plugin_written_for_the_previous_api_passes_the_kit_with_a_warning_naming_the_change() -> None:
    change = r"_WrittenForAPI10.fit returned a bare history list \(plugin API 1.0\).*FitResult\(history, best_epoch\).*API 1.2"
    with pytest.warns(PluginAPIDeprecationWarning, match=change):
        assert "fit" in check_model(_WrittenForAPI10, {"hidden": 8}, epochs=1)
    model = _WrittenForAPI10(PixelRNNConfig(hidden=8), colors=6, size=8)
    history = [{"train_loss": 2.0}, {"train_loss": 1.0}]
    with pytest.warns(PluginAPIDeprecationWarning):
        assert checked_fit_result(model, history) == FitResult(history, best_epoch=2), "API 1.0 kept the last epoch"
    assert API_VERSION == "1.1", "a new API version needs its Changelog entry in docs/plugins.md"
    assert f"### {API_VERSION}" in (REPO_ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize(
    ("plugin", "config", "loss"),
    [
        (PixelRNN, PixelRNNConfig(hidden=32, dropout=0.0), "train_loss"),
        (VAE, VAEConfig(channels=8, embed=4), "train_loss"),
        (GAN, GANConfig(channels=16, latent_dim=8, critic_steps=2), "train_critic_loss"),
        (SpriteTransformer, TransformerConfig(width=16, layers=1, heads=2, dropout=0.0), "train_loss"),
    ],
    ids=["pixelrnn", "vae", "gan", "transformer"],
)
def test_a_tiny_config_learns(plugin, config, loss: str) -> None:
    data = toy_sprites(count=64)
    torch.manual_seed(0)
    model = plugin(config, colors=6, size=8)
    settings = TrainSettings(**{**plugin.train_defaults, "epochs": 6, "batch_size": 16, "patience": None})
    context = FitContext(palette=toy_palette(), judge=validation_judge(data[:56], data[56:], toy_palette()))
    history = model.fit(data[:56], data[56:], settings, context).history
    assert history[-1][loss] < history[0][loss], [row[loss] for row in history]


def test_pixelrnn_next_pixel_distributions_sum_to_one_over_the_palette() -> None:
    torch.manual_seed(0)
    model = PixelRNN(PixelRNNConfig(hidden=16), colors=167, size=20)
    images = np.random.default_rng(0).integers(0, 167, (3, 20, 20)).astype(np.uint8)
    probabilities = model.pixel_distributions(images)
    assert probabilities.shape == (3, 400, 167)
    assert np.allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    # and log_prob is exactly the sum of the log-probabilities of the pixels that are there
    picked = np.take_along_axis(probabilities, images.reshape(3, 400, 1).astype(np.int64), axis=-1)[..., 0]
    assert np.allclose(model.log_prob(images), np.log(picked).sum(axis=1), rtol=1e-4)


def test_pixelrnn_samples_with_temperature_and_completes_the_lower_half() -> None:
    torch.manual_seed(0)
    model = PixelRNN(PixelRNNConfig(hidden=16), colors=10, size=6)
    samples = model.sample(4, seed=3)
    assert samples.shape == (4, 6, 6) and samples.max() < 10
    images = toy_sprites(count=4, colors=10, size=6)
    mask = np.zeros(images.shape, dtype=bool)
    mask[:, 3:] = True
    completed = model.complete(images, mask, seed=0)
    assert np.array_equal(completed[:, :3], images[:, :3])
    holes = np.zeros(images.shape, dtype=bool)
    holes[:, 1, 1] = holes[:, 4, 2] = True  # not a raster suffix: filled all the same, the rest kept
    filled = model.complete(images, holes, seed=0)
    assert np.array_equal(filled[~holes], images[~holes]) and filled.max() < 10
    with pytest.raises(ValueError, match="raster suffix"):  # but no exact conditional likelihood is claimed for it
        model.conditional_log_prob(images, holes)


def test_vae_bounds_are_ordered_and_codes_have_the_lectures_size() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8)
    data = toy_sprites(count=64)
    model.fit(data[:56], data[56:], TrainSettings(epochs=3, batch_size=16), FitContext())
    val = data[56:]
    assert model.encode(val).shape == (8, 10)
    elbo, iwae = model.elbo(val).mean(), model.log_prob(val, samples=64).mean()
    assert iwae >= elbo - 1e-3, "the importance-weighted bound is at least the ELBO"
    # k = 1 estimates the ELBO with a sampled KL instead of the closed form: the same bound, other noise.
    assert np.isclose(model.log_prob(val, samples=1).mean(), elbo, rtol=0.02)


def test_the_vae_decoder_draws_each_pixel_from_earlier_pixels_only() -> None:
    """The PixelCNN decoder's masks: a pixel's colour moves the logits of later pixels (raster order) only."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8)
    codes = torch.randn(1, 10)
    images = torch.as_tensor(toy_sprites(count=1, size=8), dtype=torch.long)
    changed = images.clone()
    changed[0, 3, 4] = (changed[0, 3, 4] + 1) % 6
    with torch.no_grad():
        moved = (model.module.logits(codes, images) - model.module.logits(codes, changed)).abs().amax(dim=1)[0] > 0
    order = torch.arange(64).reshape(8, 8)  # raster position of each pixel
    assert not moved[order <= 3 * 8 + 4].any(), "no pixel up to and including the changed one is affected"
    assert moved[3, 5] and moved[4, 4], "its right neighbour and the pixel below see it"
    assert not moved[order > (3 + model.module.head.rows_seen) * 8 + 8].any(), "a pixel far below does not: the view is local"


def test_the_vae_samples_with_a_window_as_with_the_whole_canvas() -> None:
    """Sampling runs the decoder on the rows that reach the current pixel only, and keeps the colors drawn so far for the
    new-color gate; the same draws as the teacher-forced decoder on the whole canvas, whose gate sees every pixel before."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8)
    model.module.eval()
    model.module.head.shared_colors.copy_(torch.tensor([True, False, False, True, False, False]))  # spared in both ways
    features = model.module.features(torch.randn(3, 10))
    uniforms = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        windowed = model._draw(features, uniforms)
        canvas = torch.zeros_like(windowed)
        for row in range(8):
            for column in range(8):
                logits = model.module.head(canvas, features)[:, :, row, column]
                cumulative = torch.softmax(logits / 0.85, dim=1).cumsum(dim=1)
                canvas[:, row, column] = (cumulative < uniforms[:, row, column, None]).sum(dim=1).clamp(max=5)
    assert torch.equal(windowed, canvas)
    assert len(set(windowed.flatten().tolist())) > 1, "a real drawing, not one colour"


def test_the_vae_reports_the_kl_of_each_code_dimension() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8)
    data = toy_sprites(count=64, size=8)
    kl = model.kl_per_dimension(data)
    assert kl.shape == (10,) and np.all(kl >= 0)
    mean, log_var = model.module.encode(torch.as_tensor(data, dtype=torch.long))
    by_hand = (0.5 * (log_var.exp() - 1 - log_var + mean.pow(2))).mean(dim=0).detach().numpy()
    assert np.allclose(kl, by_hand, atol=1e-6)
    # Free bits: a dimension whose KL is below free_bits adds free_bits to the loss, whatever its KL.
    floor = VAE(VAEConfig(channels=8, embed=4, head_channels=8, free_bits=100.0), colors=6, size=8)
    floor.module.load_state_dict(model.module.state_dict())
    batch = torch.as_tensor(data, dtype=torch.long)
    torch.manual_seed(1)
    reconstruction, _ = floor._terms(batch)
    torch.manual_seed(1)
    assert torch.isclose(floor.loss(batch), (reconstruction.mean() + 10 * 100.0) / 64)


# --- registry and listing ------------------------------------------------------------------


def _fake_distribution(site: Path, entries: dict[str, str], modules: dict[str, str]) -> dict[str, str]:
    """A real installed distribution (dist-info + modules) on a PYTHONPATH folder, registering ``entries``."""
    info = site / "broken_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pokegen.models]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    return {"PYTHONPATH": str(site)}


def test_broken_plugins_are_listed_with_their_error_and_the_others_still_load(tmp_path: Path) -> None:
    bad_config = "from pokegen.plugins.vae import VAE\nclass Loose(VAE):\n    name = 'loose'\n    class Config: pass\n"
    env = _fake_distribution(
        tmp_path / "site",
        {"ghost": "no_such_module:Model", "loose": "loose_plugin:Loose"},
        {"loose_plugin": bad_config},
    )
    listing = run(["pokegen", "models"], tmp_path, env=env).stdout
    assert f"pokegen.models (plugin API {API_VERSION})" in listing
    assert "ghost" in listing and "ModuleNotFoundError" in listing
    assert "loose" in listing and "must be a pydantic BaseModel" in listing
    for name in ("pixelrnn", "vae", "gan", "transformer"):
        assert any(line.split("│")[1].strip() == name and "ok" in line for line in listing.splitlines() if "│" in line)


def test_a_plugin_setting_named_size_is_refused_by_the_check_stage_and_the_kit(tmp_path: Path) -> None:
    sized = (
        "from pydantic import BaseModel, ConfigDict\nfrom pokegen.plugins.vae import VAE, VAEConfig\n"
        "class SizedConfig(VAEConfig):\n    size: int = 4\n"
        "class Sized(VAE):\n    name = 'sized'\n    Config = SizedConfig\n"
    )
    env = _fake_distribution(tmp_path / "site", {"sized": "sized_plugin:Sized"}, {"sized_plugin": sized})
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"models": ["sized"]}, "models": {"sized": {}}, "sample": {"sized": {}}})
    )
    result = run(["pokegen", "stage", "check"], repo, env=env, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "models.sized.size: a setting of the sized plugin named 'size', which DVC's run cache cannot see" in message
    assert "treeverse/dvc/issues/10296" in message and "the plugin must rename it" in message
    assert not (repo / "checks").exists(), "a failed check writes nothing"
    kit = run(["python", "-c", "from sized_plugin import Sized; from pokegen.testing import model_checks; model_checks(Sized)[0]()"], repo, env=env, check=False)
    assert "[declaration] Config has settings DVC's run cache cannot see, ['size']" in kit.stderr


def test_the_listing_shows_distribution_version_capabilities_and_resources() -> None:
    found = {info.name: info for info in discover()}
    assert {"pixelrnn", "vae", "gan", "transformer"} <= set(found)
    for raster in ("pixelrnn", "transformer"):
        assert found[raster].distribution == "pokegen" and found[raster].capabilities == ["log_prob", "complete", "conditional_log_prob"]
        assert found[raster].plugin.likelihood == "exact" and found[raster].plugin.completes_any_mask
    assert found["vae"].capabilities == ["log_prob", "elbo", "kl_per_dimension", "encode", "decode"] and found["vae"].plugin.likelihood == "bound"
    assert found["gan"].capabilities == [] and found["gan"].plugin.likelihood is None
    listing = run(["pokegen", "models"], REPO_ROOT).stdout
    assert "log_prob, elbo, kl_per_dimension, encode, decode" in listing and "gpus=0 cpus=2" in listing


def test_an_unknown_model_fails_validation_with_the_known_ones(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["pipeline"]["models"] = ["pixelrnn", "vea"]
    params["models"]["pixelrnn"]["hiden"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(["pokegen", "params", "check"], tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no model plugin named 'vea'" in result.stderr and "known: frequencies, gan, neighbours, pixelrnn, positions, transformer, vae" in result.stderr
    assert "models.pixelrnn.hiden: unknown key (did you mean 'hidden'?)" in result.stderr


# --- the train stage -----------------------------------------------------------------------


def _train_repo(path: Path, models: dict) -> Path:
    """A folder with a tiny data set already tensorized and params.yaml naming ``models``."""
    path.mkdir(parents=True)
    data = toy_sprites(count=48, colors=6, size=8)
    palette = np.random.default_rng(0).integers(0, 256, (6, 3)).astype(np.uint8)
    splits = {"train": data[:40], "val": data[40:44], "test": data[44:]}
    SpriteDataset(palette, splits, {k: tuple(f"{k}{i}" for i in range(len(v))) for k, v in splits.items()}).save(
        Layout(path).dataset
    )
    (path / "params.yaml").write_text(
        yaml.safe_dump(
            {"pipeline": {"models": list(models)}, "models": models, "sample": {name: {} for name in models}}
        )
    )
    return path


def test_train_writes_a_readable_checkpoint_metrics_and_curves(tmp_path: Path) -> None:
    repo = _train_repo(tmp_path / "repo", {"vae": {**TINY["vae"], "train": {"epochs": 3}}})
    run(["pokegen", "train", "vae"], repo)
    layout = Layout(repo)
    record = json.loads((layout.model_dir("vae") / "checkpoint.json").read_text())
    assert record["plugin"] == "vae" and record["distribution"] == "pokegen" and record["config"]["latent_dim"] == 10
    assert len(record["data_sha256"]) == 64 and record["training"]["epochs_run"] == 3
    assert (layout.model_dir("vae") / "weights.safetensors").read_bytes()[8:9] == b"{", "safetensors, not a pickle"
    model = load_checkpoint(layout.model_dir("vae"))
    assert model.sample(2).shape == (2, 8, 8)
    curves = (layout.train_curves("vae")).read_text().splitlines()
    assert curves[0].startswith("epoch,") and len(curves) == 4
    assert json.loads(layout.train_metrics("vae").read_text())["best"]["val_bits_per_pixel"] > 0
    assert not layout.resume_dir("vae").exists(), "a finished training leaves nothing to resume"


def test_a_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    models = {"pixelrnn": {"hidden": 64, "train": {"epochs": 8, "batch_size": 8}}}
    whole = _train_repo(tmp_path / "whole", models)
    run(["pokegen", "train", "pixelrnn"], whole)

    killed = _train_repo(tmp_path / "killed", models)
    resume = Layout(killed).resume_dir("pixelrnn") / "resume.pt"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(["pokegen", "train", "pixelrnn"], cwd=killed, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the training ended before it could be killed"
    epochs_done = len(torch.load(resume, weights_only=True)["history"])
    assert 1 <= epochs_done < 8

    again = run(["pokegen", "train", "pixelrnn"], killed)
    assert f"resuming after epoch {epochs_done}" in again.stderr
    weights = lambda repo: (Layout(repo).model_dir("pixelrnn") / "weights.safetensors").read_bytes()  # noqa: E731
    assert weights(killed) == weights(whole)
    assert Layout(killed).train_curves("pixelrnn").read_text() == Layout(whole).train_curves("pixelrnn").read_text()


def test_a_gpu_request_on_a_cpu_machine_fails_clearly_unless_fallback_is_allowed(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request would be met")
    strict = _train_repo(tmp_path / "strict", {"vae": {**TINY["vae"], "resources": {"gpus": 1}}})
    result = run(["pokegen", "train", "vae"], strict, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "models.vae.resources.gpus = 1, but this machine has 0 GPU(s)" in result.stderr
    assert "cpu_fallback: true" in result.stderr
    assert not Layout(strict).model_dir("vae").exists()

    lenient = _train_repo(tmp_path / "lenient", {"vae": {**TINY["vae"], "resources": {"gpus": 1}, "train": {"epochs": 1, "cpu_fallback": True}}})
    result = run(["pokegen", "train", "vae"], lenient)
    assert "training on the CPU" in result.stderr
    assert json.loads(Layout(lenient).train_metrics("vae").read_text())["device"] == "cpu"


def test_plan_prints_each_task_with_its_resources(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", models={"vae": {"resources": {"gpus": 2, "cpus": 4}}, "gan": {}})
    lines = {line.split()[0]: line for line in run(["pokegen", "plan"], repo).stdout.splitlines()}
    assert "gpus=2 cpus=4" in lines["train@vae"] and "gpus=2 cpus=4" in lines["evaluate@vae"]
    assert "gpus=0 cpus=2" in lines["train@gan"] and "after check, tensorize" in lines["train@gan"]
    not_dvc = _train_repo(tmp_path / "plain", {"gan": {}})
    refused = run(["pokegen", "plan"], not_dvc, check=False)
    assert refused.returncode == 2 and "not a DVC repository" in refused.stderr and "Traceback" not in refused.stderr


# --- a third-party plugin ------------------------------------------------------------------


@pytest.mark.slow
def test_the_example_plugin_installs_lists_and_trains(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run(["pip", "install", "-q", "--no-deps", "--target", str(site), str(REPO_ROOT / "examples" / "pokegen-mixture")], tmp_path)
    env = {"PYTHONPATH": str(site)}
    listing = run(["pokegen", "models"], tmp_path, env=env).stdout
    row = next(line for line in listing.splitlines() if "│ mixture" in line)
    assert "pokegen-mixture" in row and "0.1.0" in row and "log_prob, complete" in row and "ok" in row

    repo = _train_repo(tmp_path / "repo", {"mixture": {"components": 3, "train": {"epochs": 5}}, "vae": TINY["vae"]})
    run(["pokegen", "train", "mixture"], repo, env=env)
    record = json.loads((Layout(repo).model_dir("mixture") / "checkpoint.json").read_text())
    assert record["distribution"] == "pokegen-mixture" and record["class"] == "pokegen_mixture.model:CategoricalMixture"
    curves = Layout(repo).train_curves("mixture").read_text().splitlines()
    assert len(curves) == 6 and float(curves[-1].split(",")[1]) < float(curves[1].split(",")[1]), "EM lowers the bits/pixel"
    contract = run(["python", "-m", "pytest", "-v", "-p", "no:cacheprovider", str(REPO_ROOT / "examples/pokegen-mixture/tests")], tmp_path, env=env)
    for check in ("declaration", "fit", "sample", "seeding", "log_prob", "complete", "save/load"):
        assert f"test_the_mixture_keeps_the_pokegen_contract[{check}] PASSED" in contract.stdout, "each check is its own test"
    assert "7 passed" in contract.stdout

    # Evaluated and reported beside the others, with every metric its capabilities allow.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pipeline"]["models"] = ["mixture"]
    params["evaluate"] = {"samples": 16, "grid": 4, "completion_rows": 2, "nearest_k": 2}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(["pokegen", "evaluate", "mixture"], repo, env=env)
    metrics = json.loads(Layout(repo).evaluation_metrics("mixture").read_text())
    assert metrics["likelihood"]["kind"] == "exact" and set(metrics["completion"]) == {"cover_50", "cover_75"}
    run(["pokegen", "report"], repo, env=env)
    assert re.search(
        r"\| mixture \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ exact \|", (Layout(repo).reports_dir / "report.md").read_text()
    )


class _NoMonitoredFigure(PixelRNN):
    name = "pixelrnn"

    def validation_metrics(self, val, epoch):
        return {"val_loss": 1.0}


def test_a_plugin_without_its_monitored_figure_gets_a_message_not_a_key_error() -> None:
    from pokegen.errors import PluginContractError

    model = _NoMonitoredFigure(PixelRNNConfig(hidden=8), colors=6, size=8)
    data = toy_sprites()
    with pytest.raises(PluginContractError, match=r"validation_metrics returned \['train_loss', 'val_loss'\] without 'val_bits_per_pixel'.*set monitor = None"):
        model.fit(data[:40], data[40:], TrainSettings(epochs=1, batch_size=16), FitContext())


def test_a_checkpoint_an_older_plugin_wrote_is_refused_with_the_fix(tmp_path: Path) -> None:
    from pokegen.checkpoint import CHECKPOINT_JSON, save_checkpoint
    from pokegen.errors import DataError

    model = PixelRNN(PixelRNNConfig(hidden=8), colors=6, size=8)
    save_checkpoint(model, tmp_path, data_sha256="0" * 64, summary={})
    record = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    record["config"]["layers"] = 2  # a setting this version's PixelRNN does not have
    record["version"] = "0.0.9"
    (tmp_path / CHECKPOINT_JSON).write_text(json.dumps(record))
    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert "layers: Extra inputs are not permitted" in message and "written by pokegen 0.0.9" in message
    assert "dvc repro train@pixelrnn" in message


def test_weights_an_older_network_wrote_are_refused_with_the_fix(tmp_path: Path) -> None:
    from safetensors.torch import load, save

    from pokegen.checkpoint import WEIGHTS, save_checkpoint
    from pokegen.errors import DataError

    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    save_checkpoint(model, tmp_path, data_sha256="0" * 64, summary={})
    tensors = load((tmp_path / WEIGHTS).read_bytes())
    del tensors["generator.palette_bias.weight"]  # as a GAN from before the palette preference saved it
    (tmp_path / WEIGHTS).write_bytes(save(tensors))
    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / WEIGHTS}: its weights do not fit the installed gan plugin's network" in message
    assert "generator.palette_bias.weight" in message and "dvc repro train@gan" in message


def test_a_long_list_of_misfit_weights_is_cut_at_a_word(tmp_path: Path) -> None:
    from safetensors.torch import load, save

    from pokegen.checkpoint import WEIGHTS, save_checkpoint
    from pokegen.errors import DataError

    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    save_checkpoint(model, tmp_path, data_sha256="0" * 64, summary={})
    tensors = load((tmp_path / WEIGHTS).read_bytes())
    kept = {"generator.palette_bias.weight": tensors["generator.palette_bias.weight"]}  # every other tensor missing
    (tmp_path / WEIGHTS).write_bytes(save(kept))
    with pytest.raises(RuntimeError) as torch_says:
        GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8).load_state(kept)
    assert len(str(torch_says.value)) > 400  # long enough to be cut
    with pytest.raises(DataError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    detail = message.split("network (", 1)[1].rsplit("); ", 1)[0]
    assert len(detail) <= 300 and detail.endswith(" ...")
    assert set(detail.removesuffix(" ...").split()) <= set(str(torch_says.value).split())  # whole words only
    assert "dvc repro train@gan" in message.rsplit("); ", 1)[1]


class _Scripted(PixelRNN):
    """Validation figures set by the test: epoch 2 is the best, epoch 3 the last."""

    name = "pixelrnn"
    SCRIPT = {1: 3.0, 2: 1.0, 3: 2.0}

    def validation_metrics(self, val, epoch):
        return {"val_bits_per_pixel": self.SCRIPT[epoch]}


def test_train_records_the_best_epoch_fit_returns_not_the_last(tmp_path: Path) -> None:
    from pokegen.params import ModelSpec
    from pokegen.plugin import Resources
    from pokegen.stages.train import run_train

    repo = _train_repo(tmp_path / "repo", {"pixelrnn": TINY["pixelrnn"]})
    spec = ModelSpec("pixelrnn", _Scripted, PixelRNNConfig(hidden=8), TrainSettings(epochs=3, batch_size=16), Resources())
    summary = run_train(spec, Layout(repo))
    assert (summary["best_epoch"], summary["monitor"], summary["epochs_run"]) == (2, "val_bits_per_pixel", 3)
    assert summary["best"]["val_bits_per_pixel"] == 1.0 and summary["final"]["val_bits_per_pixel"] == 2.0
    assert json.loads(Layout(repo).train_metrics("pixelrnn").read_text()) == summary


class _ScriptedHigherIsBetter(PixelRNN):
    """A figure where higher is better, scripted so the lowest (epoch 2) would be kept under "min"."""

    name = "pixelrnn"
    monitor, monitor_mode = "val_score", "max"
    SCRIPT = {1: 0.5, 2: 0.1, 3: 0.9, 4: 0.7}

    def validation_metrics(self, val, epoch):
        self.weights_after[epoch] = {name: tensor.clone() for name, tensor in self.module.state_dict().items()}
        return {"val_score": self.SCRIPT[epoch]}


def test_a_higher_is_better_monitor_keeps_the_epoch_of_the_highest_figure_and_its_weights() -> None:
    torch.manual_seed(0)
    model = _ScriptedHigherIsBetter(PixelRNNConfig(hidden=8), colors=6, size=8)
    model.weights_after = {}
    data = toy_sprites()
    result = model.fit(data[:40], data[40:], TrainSettings(epochs=4, batch_size=16, patience=None), FitContext())
    assert (result.best_epoch, result.monitor, len(result.history)) == (3, "val_score", 4)
    kept = model.module.state_dict()
    assert all(torch.equal(kept[name], tensor) for name, tensor in model.weights_after[3].items())
    assert not all(torch.equal(kept[name], tensor) for name, tensor in model.weights_after[4].items())


class _RecordingSteps(PixelRNN):
    """Records the weights before and after every training step, and the weights each validation saw."""

    name = "pixelrnn"
    monitor = None  # keep the last epoch: the average after the last step

    def training_step(self, batch, optimizers, step):
        self.before_steps.append(copy.deepcopy(self.module.state_dict()))
        metrics = super().training_step(batch, optimizers, step)
        self.after_steps.append(copy.deepcopy(self.module.state_dict()))
        return metrics

    def validation_metrics(self, val, epoch):
        self.validated.append(copy.deepcopy(self.module.state_dict()))
        return super().validation_metrics(val, epoch)


def test_with_ema_the_moving_average_of_the_weights_is_validated_and_kept_while_training_goes_on_from_the_trained_ones() -> None:
    torch.manual_seed(0)
    model = _RecordingSteps(PixelRNNConfig(hidden=8, dropout=0.0), colors=6, size=8)
    model.before_steps, model.after_steps, model.validated = [], [], []
    initial = copy.deepcopy(model.module.state_dict())
    data = toy_sprites()
    model.fit(data[:40], data[40:], TrainSettings(epochs=2, batch_size=16, lr=0.05, ema=0.5), FitContext())
    steps_per_epoch = 3  # 40 sprites in batches of 16

    def average(after: int) -> dict[str, torch.Tensor]:  # by hand: a <- 0.5 a + 0.5 w, from the initial weights
        state = {name: tensor.clone() for name, tensor in initial.items()}
        for weights in model.after_steps[:after]:
            state = {name: 0.5 * state[name] + 0.5 * weights[name] for name in state}
        return state

    def same(a: dict, b: dict) -> bool:
        return all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)

    assert len(model.after_steps) == 2 * steps_per_epoch and len(model.validated) == 2
    assert same(model.validated[0], average(steps_per_epoch)), "epoch 1 validates the average of its steps"
    assert not same(model.validated[0], model.after_steps[steps_per_epoch - 1]), "the average differs from the last step's weights"
    assert same(model.before_steps[steps_per_epoch], model.after_steps[steps_per_epoch - 1]), "epoch 2 trains on from the trained weights"
    assert same(model.module.state_dict(), average(2 * steps_per_epoch)), "the average after the last step is kept"


def test_the_gan_keeps_the_epoch_the_judge_found_hardest_to_tell_from_the_validation_sprites() -> None:
    data, palette = toy_sprites(count=96), toy_palette()
    asked: list[int] = []

    def judge(sample):  # the evaluation's judge, counting its calls
        asked.append(len(asked))
        return validation_judge(data[:80], data[80:], palette)(sample)

    torch.manual_seed(0)
    model = GAN(GANConfig(channels=16, latent_dim=8), colors=6, size=8)
    model.monitor_every = 2
    result = model.fit(data[:80], data[80:], TrainSettings(epochs=5, batch_size=16, lr=5e-3, ema=0.9), FitContext(palette=palette, judge=judge))
    judged = {row["epoch"]: row["val_judge"] for row in result.history if "val_judge" in row}
    assert list(judged) == [2, 4, 5] and len(asked) == 3, "every monitor_every epochs and the last: the judge takes seconds"
    assert result.monitor == "val_judge" and result.best_epoch == min(judged, key=lambda epoch: (judged[epoch], epoch)), judged
    assert all({"val_precision", "val_recall"} <= set(row) for row in result.history if "val_judge" in row)
    # The kept weights are the best epoch's: their samples, judged again, give that epoch's verdict.
    assert validation_judge(data[:80], data[80:], palette)(model.sample).accuracy == judged[result.best_epoch]


def test_a_gan_without_the_judge_is_told_what_to_pass() -> None:
    from pokegen.errors import PluginContractError

    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    data = toy_sprites()
    with pytest.raises(PluginContractError, match=r"FitContext\(judge=...\); the core's train stage passes it"):
        model.fit(data[:40], data[40:], TrainSettings(epochs=1, batch_size=16), FitContext(palette=toy_palette()))


def test_a_gan_sprites_code_sets_a_color_preference_shared_by_all_its_pixels() -> None:
    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    generator = model.module.generator
    with torch.no_grad():  # silence the convolutions: what is left is the per-sprite palette preference
        generator.net[-1].weight.zero_()
        generator.net[-1].bias.zero_()
    codes = torch.randn((32, 8), generator=torch.Generator().manual_seed(0))
    colors = generator(codes).argmax(dim=1)  # (32, 8, 8)
    assert (colors == colors[:, :1, :1]).all(), "every pixel of a sprite gets its code's preferred color"
    assert len(torch.unique(colors[:, 0, 0])) >= 3, "different codes prefer different colors"


def test_a_gan_with_one_validation_sprite_is_told_to_raise_tensorize_val() -> None:
    from pokegen.errors import ParamsError

    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    data = toy_sprites()
    with pytest.raises(ParamsError, match=r"at least 2 validation sprites.*got 1; raise tensorize.val"):
        model.fit(data[:40], data[40:41], TrainSettings(epochs=1, batch_size=16), FitContext(palette=toy_palette(), judge=lambda sample: None))


def test_diffaugment_moves_and_paints_in_the_background_color_and_lets_gradients_through() -> None:
    from pokegen.plugins.gan.model import cutout, translate

    torch.manual_seed(0)
    colors, background = 5, torch.nn.functional.one_hot(torch.tensor(0), 5).float()
    images = torch.randint(1, colors, (16, 8, 8))  # no background inside, so every background pixel came from the edge
    maps = torch.nn.functional.one_hot(images, colors).permute(0, 3, 1, 2).float().requires_grad_(True)
    moved = translate(maps, background, ratio=0.25)
    assert moved.shape == maps.shape and torch.allclose(moved.sum(dim=1), torch.ones(16, 8, 8)), "still one color a pixel"
    came_in = moved.argmax(dim=1) == 0
    assert 0 < came_in.float().mean() < 0.5, "some pixels came in from the edge, in the background color"
    kept = moved.argmax(dim=1)[~came_in]
    assert set(kept.unique().tolist()) <= set(images.unique().tolist())
    holes = cutout(maps, background, ratio=0.5).argmax(dim=1) == 0
    assert 0 < holes.float().mean() < 0.5 and torch.allclose(cutout(maps, background).sum(dim=1), torch.ones(16, 8, 8))
    (moved.sum() + cutout(maps, background).sum()).backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0, "differentiable, so the generator's step learns through it"


def test_the_gan_critic_sees_the_chosen_colors_rgb_and_the_generator_gets_the_softmax_gradient() -> None:
    model = GAN(GANConfig(channels=8, latent_dim=8), colors=4, size=8)  # _seen works on any map size
    palette = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    logits = torch.zeros(4, 2, 2)
    logits[2, 0, 0] = logits[0, 0, 1] = logits[0, 1, 0] = logits[1, 1, 1] = 3.0  # each pixel's winning color
    probabilities = torch.softmax(logits.unsqueeze(0), dim=1).requires_grad_(True)
    seen = model._seen(probabilities, palette)
    chosen = probabilities.argmax(dim=1)[0]
    assert torch.equal(chosen, torch.tensor([[2, 0], [0, 1]]))
    assert torch.allclose(seen[0].permute(1, 2, 0), palette[chosen]), "forward: exactly the chosen palette colors, no blend"
    seen[:, 0].sum().backward()  # the red channel: colors 0 and 2 have it
    assert torch.allclose(probabilities.grad[0, :, 0, 0], palette[:, 0]), "backward: as if the map were the probability-weighted colors"


def test_a_gan_trained_without_the_palette_is_told_what_to_pass() -> None:
    from pokegen.errors import PluginContractError

    model = GAN(GANConfig(channels=8, latent_dim=8), colors=6, size=8)
    data = toy_sprites()
    with pytest.raises(PluginContractError, match=r"gan: fit needs the palette's RGB colors, FitContext\(palette=...\) of shape \(6, 3\), got None"):
        model.fit(data[:40], data[40:], TrainSettings(epochs=1, batch_size=16), FitContext())
