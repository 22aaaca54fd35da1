"""Issue 4: evaluation metrics on cases with known answers, the pictures, the evaluate stage and the user CLI."""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import BASELINES, TOY_MODELS, make_sprite, run
from PIL import Image
from scipy import ndimage

from pokegen.artifacts import SpriteDataset
from pokegen.errors import ParamsError
from pokegen.evaluation import (
    classifier_two_sample_accuracy,
    colors_per_sprite,
    completion_masks,
    completion_metrics,
    cover_mask,
    evaluate,
    fragment_pieces,
    fragments_per_sprite,
    latent_grid_codes,
    likelihood_metrics,
    lone_pixel_share,
    nearest_hamming,
    novelty_metrics,
    outlined_edge_share,
)
from pokegen.images import COVER_RGB, GUTTER_RGB
from pokegen.layout import Layout
from pokegen.params import EvaluateParams, LatentGridParams
from pokegen.plugin import FitResult, GenerativeModel
from pokegen.plugins.baselines import (
    FrequencyBaseline,
    FrequencyConfig,
    NeighbourBaseline,
    NeighbourConfig,
    PositionBaseline,
)
from pokegen.stats import distribution_metrics
from pokegen.testing import toy_sprites


class _Fixed(GenerativeModel):
    """Test doubles with known answers: a uniform model over K colors, or one that returns training sprites."""

    name = "fixed"
    Config = FrequencyConfig
    likelihood = "exact"

    def __init__(self, colors: int, size: int, memorized: np.ndarray | None = None) -> None:
        super().__init__(FrequencyConfig(), colors, size)
        self.memorized = memorized

    def fit(self, train, val, settings, context) -> FitResult:
        return FitResult([{"epoch": 1}], best_epoch=1)

    def log_prob(self, images: np.ndarray) -> np.ndarray:
        return np.full(len(images), -images[0].size * math.log(self.colors))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.memorized is not None:
            return self.memorized[rng.integers(0, len(self.memorized), n)]
        return rng.integers(0, self.colors, (n, self.size, self.size)).astype(np.uint8)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, tensors: dict[str, Any]) -> None:
        pass


def _fitted(plugin: type[GenerativeModel], config, course: SpriteDataset) -> GenerativeModel:
    model = plugin(config, len(course.palette), course.splits["train"].shape[1])
    model.fit(course.splits["train"], course.splits["val"])
    return model


@pytest.fixture(scope="module")
def course(course_run) -> SpriteDataset:
    layout, _, _ = course_run
    return SpriteDataset.load(layout.dataset)


def test_a_uniform_model_scores_log2_of_the_palette_size() -> None:
    test = np.random.default_rng(0).integers(0, 167, (10, 20, 20)).astype(np.uint8)
    metrics = likelihood_metrics(_Fixed(167, 20), test)
    assert metrics == {"kind": "exact", "bits_per_pixel": pytest.approx(math.log2(167))}
    assert math.log2(167) == pytest.approx(7.38, abs=0.01)


@pytest.mark.slow
def test_a_model_that_returns_training_sprites_is_flagged_as_memorizing(course: SpriteDataset) -> None:
    train, test = course.splits["train"], course.splits["test"]
    settings = EvaluateParams()
    copier = evaluate(_Fixed(len(course.palette), 20, memorized=train), course, settings).metrics["novelty"]
    assert copier["copying"] is True and copier["data_copying_ct"] < -3
    assert copier["samples_exact_copies"] == 1.0 and copier["test_exact_copies"] == 0.0

    # Held-out sprites are what a model that does not copy looks like: C_T near 0, not flagged.
    held_out, _ = novelty_metrics(course.splits["val"], train, test, course.palette, settings)
    assert held_out["copying"] is False and abs(held_out["data_copying_ct"]) < 2
    per_position = _fitted(PositionBaseline, FrequencyConfig(), course)
    assert evaluate(per_position, course, settings).metrics["novelty"]["copying"] is False


@pytest.mark.slow
def test_precision_and_recall_are_high_for_held_out_sprites_and_low_for_noise(course: SpriteDataset) -> None:
    test, palette = course.splits["test"], course.palette
    real = distribution_metrics(course.splits["train"], test, palette, nearest_k=5)
    assert real["precision"] > 0.8 and real["recall"] > 0.8 and real["coverage"] > 0.9
    noise = np.random.default_rng(0).integers(0, len(palette), (256, 20, 20)).astype(np.uint8)
    fake = distribution_metrics(noise, test, palette, nearest_k=5)
    assert fake["precision"] < 0.1 and fake["recall"] < 0.1 and fake["coverage"] < 0.1
    assert fake["palette_js"] > 4 * real["palette_js"]


@pytest.mark.slow
def test_the_two_sample_classifier_cannot_tell_real_from_real_and_spots_noise(course: SpriteDataset) -> None:
    held_out = np.concatenate([course.splits["test"], course.splits["val"]])
    real, per_side = classifier_two_sample_accuracy(course.splits["train"], held_out, course.palette, seed=0)
    assert per_side == 80 and 0.35 <= real <= 0.65, real
    noise = np.random.default_rng(0).integers(0, len(course.palette), (256, 20, 20)).astype(np.uint8)
    assert classifier_two_sample_accuracy(noise, held_out, course.palette, seed=0)[0] >= 0.95
    blobs = np.repeat(np.repeat(course.splits["train"][:, ::4, ::4], 4, axis=1), 4, axis=2)  # real colors, 4x4 blocks
    assert classifier_two_sample_accuracy(blobs, held_out, course.palette, seed=0)[0] >= 0.8, "blocky sprites are told apart"


def test_lone_pixels_count_a_pixel_alone_in_a_flat_region_and_not_a_line() -> None:
    flat = np.zeros((1, 5, 5), dtype=np.uint8)
    assert lone_pixel_share(flat) == 0.0
    speck = flat.copy()
    speck[0, 2, 2] = 7
    assert lone_pixel_share(speck) == pytest.approx(1 / 9), "one of the 3x3 inner pixels"
    line = flat.copy()
    line[0, 2, 1:4] = 7  # an outline piece: each of its pixels has a neighbour of its color
    assert lone_pixel_share(line) == 0.0
    checkerboard = (np.indices((5, 5)).sum(axis=0) % 2).astype(np.uint8)[None]
    assert lone_pixel_share(checkerboard) == 1.0
    border = flat.copy()
    border[0, 0, 0] = 7  # on the edge: not inner, not counted
    assert lone_pixel_share(border) == 0.0


def _salted(course: SpriteDataset) -> np.ndarray:
    """The course's training sprites with 5% of their pixels (20 a sprite) replaced by random palette colors."""
    real, rng = course.splits["train"], np.random.default_rng(0)
    return np.where(rng.random(real.shape) < 0.05, rng.integers(0, len(course.palette), real.shape), real).astype(np.uint8)


@pytest.mark.slow
def test_real_sprites_have_few_lone_pixels_and_salt_shows(course: SpriteDataset) -> None:
    clean = lone_pixel_share(course.splits["train"])
    assert 0 < clean < 0.015, clean
    assert lone_pixel_share(_salted(course)) > 1.5 * clean, "salt speckles the flat regions"


def test_colors_per_sprite_counts_each_sprites_distinct_colors() -> None:
    flat = np.zeros((1, 20, 20), dtype=np.uint8)
    assert colors_per_sprite(flat) == 1.0
    outlined = flat.copy()
    outlined[0, 5:15, 5:15], outlined[0, 8:12, 8:12] = 3, 9  # a body in an outline: 3 colors, however many pixels
    assert colors_per_sprite(np.concatenate([flat, outlined])) == 2.0, "the mean over sprites: 1 and 3"
    noise = np.random.default_rng(0).integers(0, 167, (64, 20, 20)).astype(np.uint8)
    expected = 167 * (1 - (166 / 167) ** 400)  # distinct values among 400 uniform draws from 167
    assert colors_per_sprite(noise) == pytest.approx(expected, abs=1.5)


def test_outlined_edges_count_the_dark_share_of_the_pixels_beside_the_background() -> None:
    palette = np.array([[255, 255, 255], [250, 220, 60], [40, 40, 48]], dtype=np.uint8)  # white, a yellow body, a dark outline
    bare = np.zeros((1, 5, 5), dtype=np.uint8)
    bare[0, 1:4, 1:4] = 1  # a 3x3 body on white: its 8 outer pixels are edges, the centre is not
    assert outlined_edge_share(bare, palette) == 0.0
    ringed = bare.copy()
    ringed[0, 1:4, 1:4], ringed[0, 2, 2] = 2, 1  # the same body inside a dark ring
    assert outlined_edge_share(ringed, palette) == 1.0
    assert outlined_edge_share(np.concatenate([bare, ringed]), palette) == 0.5, "pooled over the sprites' edge pixels"
    half = bare.copy()
    half[0, 1, 1:4] = 2  # outlined on top only: 3 of the 8 edges
    assert outlined_edge_share(half, palette) == 3 / 8
    assert outlined_edge_share(np.zeros((2, 5, 5), dtype=np.uint8), palette) == 0.0, "no sprite, no edges"


@pytest.mark.slow
def test_real_sprites_are_outlined_and_peeling_the_outline_shows(course: SpriteDataset) -> None:
    real = course.splits["train"]
    outlined = outlined_edge_share(real, course.palette)
    assert outlined > 0.7, outlined
    background = np.bincount(real[:, 0, 0]).argmax()
    cross = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)  # four neighbours, one sprite at a time
    sprite = real != background
    inner = ndimage.binary_erosion(sprite, structure=cross, border_value=1)
    peeled = np.where(sprite & ~inner, background, real).astype(np.uint8)  # the outermost ring painted over
    assert outlined_edge_share(peeled, course.palette) < 0.6 * outlined, "what lies under the outline is mostly body"


def test_fragments_are_the_small_pieces_apart_from_each_sprites_body() -> None:
    body = np.zeros((1, 9, 9), dtype=np.uint8)
    body[0, 3:6, 3:6] = 1  # one 3x3 body on the background (0)
    assert fragments_per_sprite(body) == 0.0
    dotted = body.copy()
    dotted[0, 0, 0], dotted[0, 8, 1:4] = 2, 2  # a dot and a 3-pixel dash apart from it
    assert fragments_per_sprite(dotted) == 2.0
    pieces, is_fragment = fragment_pieces(dotted)
    fragment_labels = np.flatnonzero(is_fragment) + 1
    assert np.argwhere(np.isin(pieces, fragment_labels))[:, 1:].tolist() == [[0, 0], [8, 1], [8, 2], [8, 3]], "the dot and the dash"
    touching = body.copy()
    touching[0, 2, 2] = 2  # diagonal to the body: 8-connected, part of it
    assert fragments_per_sprite(touching) == 0.0
    long_dash = body.copy()
    long_dash[0, 8, 1:5] = 2  # 4 pixels: a part, not a fragment
    assert fragments_per_sprite(long_dash) == 0.0
    assert fragments_per_sprite(np.concatenate([body, dotted])) == 1.0, "the mean over sprites: 0 and 2"
    twins = np.zeros((1, 9, 9), dtype=np.uint8)
    twins[0, 1, 1], twins[0, 7, 7] = 1, 1  # two dots and nothing else: neither is smaller than the largest piece
    assert fragments_per_sprite(twins) == 0.0
    below = np.zeros((1, 9, 9), dtype=np.uint8)
    below[0, 0, 7:9], below[0, 4, 4] = 1, 1  # a dot where the sprite before has its body, a 2-pixel dash apart
    assert fragments_per_sprite(np.concatenate([body, below])) == 0.5, "pieces never join across sprites"
    assert fragments_per_sprite(np.zeros((2, 9, 9), dtype=np.uint8)) == 0.0, "no sprite, no fragments"


@pytest.mark.slow
def test_real_sprites_are_one_body_and_strewn_dots_show(course: SpriteDataset) -> None:
    real = course.splits["train"]
    clean = fragments_per_sprite(real)
    assert clean < 0.15, clean
    background = np.bincount(real[:, 0, 0]).argmax()
    dark = np.argmin(course.palette.astype(int).sum(axis=1))
    strewn, dots, rng = real.copy(), 0, np.random.default_rng(0)
    for sprite in strewn:
        for _ in range(3):  # up to three dots, each on the background with nothing but background around it
            rows, columns = np.nonzero(ndimage.binary_erosion(sprite == background, structure=np.ones((3, 3)), border_value=1))
            if len(rows):  # a sprite that fills its square has no room
                pick = rng.integers(len(rows))
                sprite[rows[pick], columns[pick]], dots = dark, dots + 1
    assert dots > 2.5 * len(real), dots
    assert fragments_per_sprite(strewn) == pytest.approx(clean + dots / len(real)), "each dot a fragment, nothing else changed"


@pytest.mark.slow
def test_real_sprites_use_about_a_dozen_colors_and_strewn_strays_show(course: SpriteDataset) -> None:
    clean = colors_per_sprite(course.splits["train"])
    assert 8 < clean < 20, clean
    assert colors_per_sprite(_salted(course)) > 2 * clean, "20 random pixels a sprite: about 18 colors more"


@pytest.mark.slow
def test_the_neighbour_baseline_beats_the_frequency_ones_on_the_course_sprites(course: SpriteDataset) -> None:
    frequencies, per_position = _fitted(FrequencyBaseline, FrequencyConfig(), course), _fitted(PositionBaseline, FrequencyConfig(), course)
    neighbours = _fitted(NeighbourBaseline, NeighbourConfig(), course)
    test = course.splits["test"]
    bits = {b.name: -b.log_prob(test).mean() / (400 * math.log(2)) for b in (frequencies, per_position, neighbours)}
    assert bits["neighbours"] < 3.2 < bits["positions"] < bits["frequencies"], bits
    flat = neighbours.sample(64, seed=0)
    assert (flat[:, :, 1:] == flat[:, :, :-1]).mean() > 0.5, "its samples have flat color runs, as sprites do"


def test_the_neighbour_baseline_is_a_distribution_and_completes_only_the_mask() -> None:
    data = np.random.default_rng(0).integers(0, 3, (40, 2, 2)).astype(np.uint8)
    model = NeighbourBaseline(NeighbourConfig(), colors=3, size=2)
    model.fit(data, data[:0])
    every = np.array(list(itertools.product(range(3), repeat=4)), dtype=np.uint8).reshape(-1, 2, 2)
    assert np.exp(model.log_prob(every)).sum() == pytest.approx(1.0, abs=1e-5), "the 81 possible images share probability 1"
    mask = np.zeros_like(every, dtype=bool)
    mask[:, 1, :] = True
    completed = model.complete(every, mask, seed=0)
    assert np.array_equal(completed[~mask], every[~mask]) and completed.max() < 3
    assert np.array_equal(model.sample(5, seed=2), model.sample(5, seed=2))


def test_nearest_hamming_finds_the_closest_sprite_and_its_share_of_differing_pixels() -> None:
    reference = toy_sprites(count=10, size=8)
    query = reference[[3, 7]].copy()
    query[0, 0, :2] = (query[0, 0, :2] + 1) % 6  # two pixels changed
    distances, index = nearest_hamming(query, reference)
    assert index.tolist() == [3, 7] and distances.tolist() == [2 / 64, 0.0]


def test_completion_is_scored_on_the_covered_rows_and_skipped_without_complete() -> None:
    data = toy_sprites(count=60, size=8)
    train, test = data[:50], data[50:]
    baseline = PositionBaseline(FrequencyConfig(), 6, 8)
    baseline.fit(train, test)
    masks = completion_masks(baseline, len(test), 8, EvaluateParams(covers=[0.5, 0.75]))
    metrics, completed = completion_metrics(baseline, test, masks, seed=0)
    mask = cover_mask(len(test), 8, 0.75)
    assert mask[0].sum() == 6 * 8 and mask[0, 2:].all() and not mask[0, :2].any(), "the lower 75% of rows"
    assert np.array_equal(completed["cover_75"][~mask], test[~mask]), "the visible part is kept"
    assert metrics["cover_75"]["accuracy"] == pytest.approx((completed["cover_75"][mask] == test[mask]).mean())
    expected_bits = -baseline.conditional_log_prob(test, mask).mean() / (48 * math.log(2))
    assert metrics["cover_75"]["bits_per_pixel"] == pytest.approx(expected_bits)
    assert set(metrics) == {"cover_50", "cover_75"}, "a model that fills only the lower rows is not asked for evaluate.masks"
    no_complete = completion_masks(_Fixed(6, 8), len(test), 8, EvaluateParams(covers=[0.5]))
    assert completion_metrics(_Fixed(6, 8), test, no_complete, seed=0) == ({}, {}), "no complete(): skipped, not faked"


def test_latent_grid_codes_sweep_two_dims_and_fix_the_rest() -> None:
    codes = latent_grid_codes(10, LatentGridParams(dims=(2, 5), fixed=0.5, span=1.0, steps=3))
    assert codes.shape == (9, 10)
    assert codes[:, 2].tolist() == [-1, -1, -1, 0, 0, 0, 1, 1, 1] and codes[:, 5].tolist() == [-1, 0, 1] * 3
    assert np.all(np.delete(codes, [2, 5], axis=1) == 0.5)
    with pytest.raises(ParamsError, match=r"evaluate.latent_grid.dims = \[0, 12\]: the model's code has 10 dims"):
        latent_grid_codes(10, LatentGridParams(dims=(0, 12)))
    with pytest.raises(ParamsError, match="evaluate.latent_grid.fixed has 3 values"):
        latent_grid_codes(10, LatentGridParams(fixed=[0.0, 1.0, 2.0]))


# --- the evaluate stage and the CLI on a tiny trained repository ------------------------------

def _palette_only(path: Path, palette: np.ndarray, extra: tuple = ()) -> set[tuple[int, ...]]:
    """Colors of a picture that are neither palette colors nor the allowed extras (gutters, covers)."""
    colors = {tuple(int(c) for c in rgb) for rgb in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)}
    return colors - {tuple(int(c) for c in rgb) for rgb in palette} - {GUTTER_RGB, *extra}


def test_evaluate_writes_metrics_and_pictures_of_the_right_size_in_palette_colors(trained: Path) -> None:
    layout = Layout(trained)
    for name in TOY_MODELS:
        run(["pokegen", "evaluate", name], trained)
    palette = SpriteDataset.load(layout.dataset).palette
    pictures = {name: sorted(p.name for p in layout.evaluation_pictures(name).iterdir()) for name in TOY_MODELS}
    assert pictures == {
        "pixelrnn": ["completion.png", "nearest.png", "samples.png"],
        "vae": ["latent_grid.png", "nearest.png", "samples.png"],
        "gan": ["nearest.png", "samples.png"],
        "transformer": ["completion.png", "nearest.png", "samples.png"],
    }, "pictures follow each model's capabilities"
    cell = 10 * 3 + 1  # sprite pixels x scale + the 1-pixel gutter
    sizes = {
        ("pixelrnn", "samples.png"): (3 * cell + 1, 3 * cell + 1),  # 9 sprites, 3 columns
        # real + (2 covers, then left, centre, scattered) x (covered, completed); 3 rows
        ("pixelrnn", "completion.png"): (11 * cell + 1, 3 * cell + 1),
        ("pixelrnn", "nearest.png"): (8 * cell + 1, 4 * cell + 1),  # 16 pairs, four a row
        ("vae", "latent_grid.png"): (4 * cell + 1, 4 * cell + 1),
    }
    for (name, picture), size in sizes.items():
        assert Image.open(layout.evaluation_pictures(name) / picture).size == size, (name, picture)
    for name in TOY_MODELS:
        for picture in layout.evaluation_pictures(name).iterdir():
            extra = (COVER_RGB,) if picture.name == "completion.png" else ()
            assert _palette_only(picture, palette, extra) == set(), f"{picture} holds colors outside the palette"

    pixelrnn = json.loads(layout.evaluation_metrics("pixelrnn").read_text())
    filled = {"cover_50", "cover_75", "mask_left", "mask_centre", "mask_scattered"}
    assert pixelrnn["likelihood"]["kind"] == "exact" and set(pixelrnn["completion"]) == filled, "it fills any mask"
    assert "bits_per_pixel" in pixelrnn["completion"]["cover_50"], "an exact conditional likelihood is scored"
    assert "bits_per_pixel" not in pixelrnn["completion"]["mask_left"], "none is claimed where it would not be exact"
    assert pixelrnn["completion"]["mask_centre"]["covered_pixels"] == 5 * 5, "the central square of half the side"
    vae = json.loads(layout.evaluation_metrics("vae").read_text())
    assert vae["likelihood"]["kind"] == "bound" and vae["likelihood"]["elbo_bits_per_pixel"] > 0, "the bound and the ELBO, labelled"
    kl = vae["likelihood"]["kl_nats_per_code_dim"]  # posterior collapse, visible: one KL per code dimension
    assert len(kl) == vae["likelihood"]["code_dims"] == 10 and vae["likelihood"]["code_dims_in_use"] == sum(v > 0.01 for v in kl)
    gan = json.loads(layout.evaluation_metrics("gan").read_text())
    assert "likelihood" not in gan and "completion" not in gan, "no likelihood, no completion: skipped, not faked"
    assert {"accuracy", "spread", "precision", "recall", "density", "coverage"} <= set(gan["judge"])
    assert len(gan["judge"]["per_seed"]) == 2 and gan["judge"]["sprites_per_side"] == {"train": 44, "test": 20}
    assert gan["judge"]["accuracy"] == pytest.approx(np.mean(gan["judge"]["per_seed"]))
    assert {"precision", "recall", "density", "coverage", "c2st_accuracy"} <= set(gan["blocks"]), "the old space, as details"
    assert {"palette_js", "lone_pixels", "fragments", "fragments_real"} <= set(gan["distribution"])
    speed = json.loads(layout.sampling_speed("gan").read_text())["sampling"]
    assert speed["sprites"] == 44 + 2 * 20 and speed["sprites_per_second"] > 0, "the samples, and the judge's fresh ones"

    again = layout.evaluation_metrics("pixelrnn").read_bytes()
    run(["pokegen", "evaluate", "pixelrnn"], trained)
    assert layout.evaluation_metrics("pixelrnn").read_bytes() == again, "same seed, same metrics"


def test_the_user_commands_draw_pictures(trained: Path, tmp_path: Path) -> None:
    run(["pokegen", "sample", "gan", "-n", "4", "--seed", "1", "-o", str(tmp_path / "grid.png")], trained)
    assert Image.open(tmp_path / "grid.png").size == (2 * 41 + 1, 2 * 41 + 1), "4 sprites, 2 columns, scale 4"

    run(["pokegen", "complete", "pixelrnn", "--cover", "0.75", "-n", "2", "-o", str(tmp_path / "done.png")], trained)
    assert Image.open(tmp_path / "done.png").size == (3 * 41 + 1, 2 * 41 + 1)
    run(["pokegen", "complete", "transformer", "--mask", "left", "-n", "2", "-o", str(tmp_path / "left.png")], trained)
    left = np.asarray(Image.open(tmp_path / "left.png").convert("RGB"))
    assert left.shape == (2 * 41 + 1, 3 * 41 + 1, 3) and (left[1:41, 42:62] == COVER_RGB).all(), "the left half shown covered"

    sprite = tmp_path / "mine.png"
    make_sprite(3, size=10).save(sprite)
    run(["pokegen", "complete", "pixelrnn", "--image", str(sprite), "-o", str(tmp_path / "mine-done.png")], trained)
    assert Image.open(tmp_path / "mine-done.png").size == (3 * 41 + 1, 41 + 1)

    run(["pokegen", "latent-grid", "vae", "--dims", "1", "3", "--steps", "3", "-o", str(tmp_path / "latent.png")], trained)
    assert Image.open(tmp_path / "latent.png").size == (3 * 41 + 1, 3 * 41 + 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["complete", "pixelrnn", "--cover", "1.5"], "--cover 1.5: give the covered share of rows, between 0 and 1"),
        (["complete", "gan"], "model 'gan' cannot complete"),
        (["complete", "pixelrnn", "--mask", "top"], "--mask top: give one of left, centre, scattered"),
        (["latent-grid", "pixelrnn"], "model 'pixelrnn' cannot decode"),
        (["latent-grid", "vae", "--dims", "0", "10"], "evaluate.latent_grid.dims = [0, 10]: the model's code has 10 dims"),
        (["complete", "pixelrnn", "--image", "tiny.png"], "is 4x4, smaller than quantize.side = 10"),
        (["complete", "pixelrnn", "--image", "nowhere.png"], "--image nowhere.png: no such file"),
    ],
    ids=["cover", "no-complete", "mask", "no-decode", "dims", "image-size", "no-image"],
)
def test_bad_input_gets_a_clear_message_and_writes_nothing(trained: Path, args: list[str], message: str) -> None:
    make_sprite(0, size=4).save(trained / "tiny.png")
    result = run(["pokegen", *args, "-o", "out.png"], trained, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert not (trained / "out.png").exists()


def test_a_model_not_trained_yet_is_named(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    result = run(["pokegen", "sample", "vae", "-o", "grid.png"], tmp_path, check=False)
    assert result.returncode == 2 and "no trained model here" in result.stderr and "dvc repro" in result.stderr


# --- the report ------------------------------------------------------------------------------


def _browser_image_widths(page: Path, tmp_path: Path) -> tuple[list[int], str]:
    """Open a copy of ``page`` in headless Chromium, beside a copy of the timings script it loads; the naturalWidth
    of each image once the page has loaded, and the page as the browser left it."""
    import os
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); CI installs it")
    probe = '<script>addEventListener("load", () => document.body.dataset.widths = [...document.images].map(i => i.naturalWidth).join(","))</script>'
    copy = tmp_path / "reports" / "page.html"
    copy.parent.mkdir()
    copy.write_text(page.read_text().replace("</body>", probe + "</body>"))
    timings = Layout(page.parent.parent).timings_script
    (tmp_path / "timings").mkdir()
    shutil.copy(timings, tmp_path / "timings" / timings.name)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]  # fmt: skip
    dom = run([chromium, *flags, "--dump-dom", copy.as_uri()], tmp_path).stdout
    found = dom.split('data-widths="', 1)
    assert len(found) == 2, f"the page never finished loading:\n{dom[:500]}"
    return [int(width) for width in found[1].split('"', 1)[0].split(",") if width], dom


def _markdown_tables(markdown: str) -> list[tuple[list[str], dict[str, list[str]]]]:
    """Each table of a markdown page: (header, {first cell: row})."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([cell.strip() for cell in line.split("|")[1:-1]])
        elif current:
            tables.append((current[0], {row[0]: row for row in current[1:]}))
            current = []
    return tables


@pytest.mark.slow
def test_the_report_leads_with_the_judge_lists_every_model_and_baseline_and_its_images_load_in_a_browser(trained: Path, tmp_path: Path) -> None:
    layout = Layout(trained)
    for name in [*TOY_MODELS, *BASELINES]:
        if not layout.evaluation_metrics(name).is_file():
            run(["pokegen", "evaluate", name], trained)
    run(["pokegen", "report"], trained)
    markdown = (layout.reports_dir / "report.md").read_text()
    (header, lead), (details_header, details) = _markdown_tables(markdown)
    metrics = {name: json.loads(layout.evaluation_metrics(name).read_text()) for name in [*TOY_MODELS, *BASELINES]}

    assert header == ["model", "judge", "test bits/pixel", "precision", "recall", "copies", "training seconds"], "at most 7 columns"
    assert list(lead) == sorted(lead, key=lambda name: metrics[name]["judge"]["accuracy"]), "sorted by the judge, hardest to tell first"
    assert set(lead) == set(details) == {*TOY_MODELS, *BASELINES}, "baselines are rows like any model"
    vae = metrics["vae"]
    assert lead["vae"][1] == f"{vae['judge']['accuracy']:.3f} ± {vae['judge']['spread']:.3f}"
    assert lead["vae"][2] == f"{vae['likelihood']['bits_per_pixel']:.3f} bound" and lead["pixelrnn"][2].endswith(" exact")
    assert lead["gan"][2] == "—", "no likelihood"
    assert lead["vae"][3:6] == [
        f"{vae['judge']['precision']:.3f}",
        f"{vae['judge']['recall']:.3f}",
        f"{vae['novelty']['samples_near_copies']:.3f}",
    ]
    assert {row[6] for row in lead.values()} == {"—"}, "a wall time is not versioned: the page fills it in (below)"
    # A baseline's row is computed on this data set, not copied from anywhere: the global frequencies by hand here.
    dataset = SpriteDataset.load(layout.dataset)
    counts = np.bincount(dataset.splits["train"].reshape(-1), minlength=6) + 1.0
    expected = -np.log2(counts / counts.sum())[dataset.splits["test"]].mean()
    assert lead["frequencies"][2] == f"{expected:.3f} exact"

    # The details: every other figure, the real test sprites' own beside the sample statistics, the old space too.
    column = {title.split(" (real")[0]: i for i, title in enumerate(details_header)}
    real_share = lone_pixel_share(dataset.splits["test"])
    assert f"lone pixels (real {real_share:.3f})" in details_header and vae["distribution"]["lone_pixels_real"] == real_share
    real_outlined = outlined_edge_share(dataset.splits["test"], dataset.palette)
    assert f"outlined edges (real {real_outlined:.3f})" in details_header
    real_fragments = fragments_per_sprite(dataset.splits["test"])
    assert f"fragments per sprite (real {real_fragments:.3f})" in details_header
    assert f"colors per sprite (real {colors_per_sprite(dataset.splits['test']):.3f})" in details_header
    for title, key in (("lone pixels", ("distribution", "lone_pixels")), ("fragments per sprite", ("distribution", "fragments")),
                       ("block precision", ("blocks", "precision")), ("block C2ST", ("blocks", "c2st_accuracy")),
                       ("coverage", ("judge", "coverage")), ("C_T", ("novelty", "data_copying_ct"))):  # fmt: skip
        assert details["vae"][column[title]] == f"{vae[key[0]][key[1]]:.3f}", title
    assert details["vae"][column["code dims in use"]] == str(vae["likelihood"]["code_dims_in_use"]), "a count, not a figure"
    assert details["gan"][column["code dims in use"]] == "—", "no code to collapse"
    assert "judge" not in column and "precision" not in column, "what leads is not repeated"
    transformer = metrics["transformer"]
    for shape in ("left", "centre", "scattered"):  # any mask: the raster models fill it, the others show none
        assert details["transformer"][column[f"fill {shape} accuracy"]] == f"{transformer['completion'][f'mask_{shape}']['accuracy']:.3f}"
        assert details["vae"][column[f"fill {shape} accuracy"]] == "—"
    assert all(len(row) == len(details_header) for row in details.values())

    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert all((layout.reports_dir / path).is_file() for path in linked), "the markdown's images lie beside it"
    glance = [path for path in linked if path.startswith("images/glance-")]
    assert glance[0] == "images/glance-real-test-sprites.png" and len(glance) == 1 + len(TOY_MODELS) + len(BASELINES), "real first, then every row"
    real = np.asarray(Image.open(layout.reports_dir / glance[0]).convert("RGB"))
    samples = np.asarray(Image.open(layout.reports_dir / "images/vae-samples.png").convert("RGB"))
    assert real.shape == samples.shape, "the real sprites and every sample grid at one scale"
    assert len(linked) == 11 + 2 * 3 + len(glance), "pixelrnn 3, vae 3, gan 2, transformer 3, each baseline 3 pictures"
    page = layout.reports_dir / "index.html"
    text = html.unescape(page.read_text())
    assert text.index('id="metrics"') < text.index('id="glance"') < text.index('id="details"'), "the short table leads"
    assert "<h2>Params used</h2>" in text and '"latent_dim": 10' in text, "the params used, plugin defaults resolved"
    assert "<h2>Data card</h2>" in text and '"palette_size": 6' in text
    assert "trained from scratch" in text, "the notes say how the judge was trained"
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources.pop(0) == "../timings/report.js", "the one file it loads: this machine's timings, where they are"
    assert len(sources) == len(linked) and all(source.startswith("data:image/png;base64,") for source in sources), (
        "self-contained"
    )
    widths, dom = _browser_image_widths(page, tmp_path)
    seconds = json.loads(layout.training_time("gan").read_text())["training"]["seconds"]
    gan_row = re.search(r"<tr><td>gan</td>(.*?)</tr>", dom).group(1)
    assert re.findall(r"<td>([^<]*)</td>", gan_row)[-1] == f"{round(seconds)}", (
        "the training's wall time, from timings/"
    )
    expected_widths = sorted(Image.open(layout.reports_dir / path).width for path in linked)
    assert sorted(widths) == expected_widths, "every embedded image decoded at its own size"


def test_evaluate_names_a_nearest_k_the_test_split_cannot_support(trained: Path) -> None:
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["evaluate"]["nearest_k"] = 12
    (trained / "params-k12.yaml").write_text(yaml.safe_dump(params))
    before = Layout(trained).evaluation_metrics("gan").read_bytes() if Layout(trained).evaluation_metrics("gan").is_file() else None
    result = run(["pokegen", "evaluate", "gan", "--params", "params-k12.yaml"], trained, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "evaluate.nearest_k = 12 needs more test sprites than that (12 in" in " ".join(result.stderr.split())
    after = Layout(trained).evaluation_metrics("gan").read_bytes() if Layout(trained).evaluation_metrics("gan").is_file() else None
    assert after == before, "nothing written"
