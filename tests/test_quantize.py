"""Point 5 (clustering side): k-means palettes, error figures, the course's own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_sprite

from pokegen.errors import DataError
from pokegen.quantize import kmeans_quantize, match_to_crops, read_course_images, reconstruction_error, srgb_to_lab


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    from PIL import Image

    images = []
    for i in range(16):
        rgba = make_sprite(i)
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        images.append(np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))[10:30, 10:30])
    rng = np.random.default_rng(0)
    noisy = np.stack(images).astype(np.int16) + rng.integers(-6, 7, (16, 20, 20, 3))  # many distinct colors
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_palette_and_indices_have_the_contracted_shape(crops: np.ndarray) -> None:
    palette, indices = kmeans_quantize(crops, 12, seed=0)
    assert palette.shape == (12, 3) and palette.dtype == np.uint8
    assert indices.shape == (16, 20, 20) and indices.dtype == np.uint8
    assert indices.max() < 12
    counts = np.bincount(indices.reshape(-1), minlength=12)
    assert (np.diff(counts) <= 0).all(), "palette ordered by pixel share, most common first"


def test_the_same_seed_gives_the_same_palette_and_indices(crops: np.ndarray) -> None:
    first, again = kmeans_quantize(crops, 12, seed=3), kmeans_quantize(crops, 12, seed=3)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_more_colors_reduce_the_error(crops: np.ndarray) -> None:
    errors = []
    for colors in (4, 16, 64):
        palette, indices = kmeans_quantize(crops, colors, seed=0)
        errors.append(reconstruction_error(crops, palette[indices])["rmse"])
    assert errors[0] > errors[1] > errors[2]


def test_asking_for_more_colors_than_exist_is_a_clear_error() -> None:
    flat = np.zeros((2, 4, 4, 3), np.uint8)
    flat[0] = 255
    with pytest.raises(DataError, match="only 2 distinct colors"):
        kmeans_quantize(flat, 5, seed=0)


def test_lab_and_delta_e_match_known_values() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], np.uint8))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.01)
    assert np.allclose(lab[1], [0, 0, 0], atol=0.01)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65
    black, white = np.zeros((1, 1, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)
    assert reconstruction_error(white, black)["delta_e"] == pytest.approx(100, abs=0.01)
    assert reconstruction_error(white, black)["rmse"] == pytest.approx(255)
    assert reconstruction_error(white, white) == {"rmse": 0, "rmse_r": 0, "rmse_g": 0, "rmse_b": 0, "delta_e": 0}


def test_match_to_crops_finds_each_images_source(crops: np.ndarray) -> None:
    shuffled = np.random.default_rng(1).permutation(len(crops))
    assert np.array_equal(match_to_crops(crops[shuffled], crops), shuffled)


def test_the_course_files_parse(course_data: Path) -> None:
    palette, indices = read_course_images(course_data / "pixel_color.txt", course_data / "colormap.txt")
    assert palette.shape == (167, 3) and tuple(palette[0]) == (255, 255, 255)
    assert indices.shape == (792, 20, 20) and indices.max() == 166


def test_a_bad_course_line_is_named(tmp_path: Path) -> None:
    colormap = tmp_path / "colormap.txt"
    colormap.write_text("255 255 255\n0 0 0\n")
    pixels = tmp_path / "pixel_color.txt"
    pixels.write_text(" ".join(["0"] * 400) + "\n" + " ".join(["1"] * 399) + "\n")
    with pytest.raises(DataError, match=r"pixel_color.txt, line 2: 399 values, expected 400"):
        read_course_images(pixels, colormap)
    pixels.write_text(" ".join(["7"] * 400))
    with pytest.raises(DataError, match="line 1: color index outside 0..1"):
        read_course_images(pixels, colormap)
    colormap.write_text("255 255\n")
    with pytest.raises(DataError, match="colormap.txt, line 1"):
        read_course_images(pixels, colormap)
