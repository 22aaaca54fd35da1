"""Issue 36: the judge on known answers, so that it fails loudly if it goes blind.

Each case is what evaluate@MODEL does for a model: the judge learns the real training sprites against as many
"samples", and each seed is scored on the held-out real sprites against as many fresh ones. Here the "samples" come
from something whose answer is known: real sprites, noise, the neighbour baseline, real sprites broken on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pokegen.artifacts import SpriteDataset
from pokegen.judge import JudgeNetwork, augmented, judge, rgb_maps
from pokegen.plugins.baselines import NeighbourBaseline, NeighbourConfig

SEEDS = 3


@pytest.fixture(scope="module")
def course(course_run) -> SpriteDataset:
    layout, _, _ = course_run
    return SpriteDataset.load(layout.dataset)


def _held_out(course: SpriteDataset) -> np.ndarray:
    return np.concatenate([course.splits["test"], course.splits["val"]])


def _verdict(course: SpriteDataset, draw) -> dict:
    """The judge's verdict on a "model" that draws ``draw(count, rng)`` sprites, as evaluate@MODEL asks it."""
    train, held_out = course.splits["train"], _held_out(course)
    rng = np.random.default_rng(0)
    fresh = [draw(len(held_out), rng) for _ in range(SEEDS)]
    return judge(draw(len(train), rng), fresh, train, held_out, course.palette)


def _quadrants_shuffled(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each sprite with its four quadrants in another order: every local detail kept, the body plan broken."""
    half = images.shape[1] // 2
    quadrants = [images[:, :half, :half], images[:, :half, half:], images[:, half:, :half], images[:, half:, half:]]
    shuffled = images.copy()
    places = [(slice(None, half), slice(None, half)), (slice(None, half), slice(half, None)), (slice(half, None), slice(None, half)), (slice(half, None), slice(half, None))]
    for i in range(len(images)):
        order = rng.permutation(4)
        while (order == np.arange(4)).all():
            order = rng.permutation(4)
        for place, source in zip(places, order, strict=True):
            shuffled[(i, *place)] = quadrants[source][i]
    return shuffled


def _speckled(images: np.ndarray, rng: np.random.Generator, colors: int, share: float = 0.1) -> np.ndarray:
    """Each sprite with ``share`` of its pixels recolored with a random palette color: local speckle, the shape kept."""
    speckled = images.copy()
    hit = rng.random(images.shape) < share
    speckled[hit] = rng.integers(0, colors, int(hit.sum()))
    return speckled


@pytest.mark.slow
def test_real_sprites_against_real_sprites_cannot_be_told_apart(course: SpriteDataset) -> None:
    # Half the training sprites against the other half; then the validation sprites against the test sprites.
    train = course.splits["train"]
    found = judge(train[1::2], [course.splits["test"]] * SEEDS, train[::2], course.splits["val"], course.palette)
    assert 0.4 <= found["accuracy"] <= 0.6, found
    assert found["precision"] >= 0.8 and found["recall"] >= 0.8, f"real sprites lie among real sprites in its space: {found}"


@pytest.mark.slow
def test_uniform_noise_is_caught(course: SpriteDataset) -> None:
    colors = len(course.palette)
    found = _verdict(course, lambda count, rng: rng.integers(0, colors, (count, 20, 20)).astype(np.uint8))
    assert found["accuracy"] >= 0.98, found


@pytest.mark.slow
def test_the_neighbour_baselines_fragments_are_caught_and_far_from_real_sprites(course: SpriteDataset) -> None:
    baseline = NeighbourBaseline(NeighbourConfig(), len(course.palette), 20)
    baseline.fit(course.splits["train"], course.splits["val"])
    found = _verdict(course, lambda count, rng: baseline.sample(count, seed=int(rng.integers(1 << 30))))
    assert found["accuracy"] >= 0.95, found
    assert found["precision"] <= 0.3, f"the block-color space gave it 0.93; the judge's space must not: {found}"


@pytest.mark.slow
def test_real_sprites_with_their_quadrants_shuffled_are_caught(course: SpriteDataset) -> None:
    train = course.splits["train"]
    found = _verdict(course, lambda count, rng: _quadrants_shuffled(train[rng.integers(0, len(train), count)], rng))
    assert found["accuracy"] >= 0.9, f"it must see global structure, not only local detail: {found}"


@pytest.mark.slow
def test_real_sprites_with_a_tenth_of_their_pixels_recolored_are_caught(course: SpriteDataset) -> None:
    train, colors = course.splits["train"], len(course.palette)
    found = _verdict(course, lambda count, rng: _speckled(train[rng.integers(0, len(train), count)], rng, colors))
    assert found["accuracy"] >= 0.9, f"it must see local speckle: {found}"


def test_the_shuffles_and_speckle_change_what_they_claim_to() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 50, (20, 20, 20)).astype(np.uint8)
    shuffled = _quadrants_shuffled(images, rng)
    for image, moved in zip(images, shuffled, strict=True):
        quadrants = sorted(image[r : r + 10, c : c + 10].tobytes() for r in (0, 10) for c in (0, 10))
        assert sorted(moved[r : r + 10, c : c + 10].tobytes() for r in (0, 10) for c in (0, 10)) == quadrants
        assert not np.array_equal(image, moved)
    changed = (_speckled(images, rng, 167) != images).mean()
    assert 0.08 < changed < 0.11, changed  # a tenth recolored, a few to the color they had


def test_the_judge_sees_rgb_mirrors_and_shifts_with_white_coming_in() -> None:
    palette = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], dtype=np.uint8)
    image = np.zeros((1, 9, 9), dtype=np.uint8)
    image[0, 4, 3] = 2
    maps = rgb_maps(image, palette)
    assert maps.shape == (1, 3, 9, 9) and maps[0, :, 4, 3].tolist() == [1.0, -1.0, -1.0] and maps[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    seen = augmented(maps.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    red = (seen[:, 0] == 1) & (seen[:, 1] == -1)
    assert (red.sum(dim=(1, 2)) == 1).all(), "the one red pixel stays, wherever it went"
    places = {tuple(torch.nonzero(r)[0].tolist()) for r in red}
    rows, columns = {row for row, _ in places}, {column for _, column in places}
    assert rows == {2, 3, 4, 5, 6}, "shifted up to two pixels up or down"
    assert columns == {1, 2, 3, 4, 5, 6, 7}, "up to two pixels left or right, of it and of its mirror image (column 5)"
    assert ((seen == 1) | (seen == -1)).all(), "nothing but the sprite's own colors and white"
    assert JudgeNetwork(20)(rgb_maps(np.zeros((3, 20, 20), dtype=np.uint8), palette)).shape == (3,)
