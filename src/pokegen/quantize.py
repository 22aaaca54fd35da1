"""Color quantization and its error figures: pure functions, arrays in, arrays out.

k-means runs on the distinct colors weighted by their pixel counts: the same
objective as k-means on every pixel (the course sprites hold 19,537 distinct
colors in 316,800 pixels), at a fraction of the cost. One OpenMP thread keeps
the float sums in a fixed order, so the same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from pokegen.artifacts import RawData
from pokegen.errors import DataError
from pokegen.params import COURSE_CROP, QuantizeParams
from pokegen.sprites import read_sprites


def distinct_colors(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(colors (U, 3), counts (U,), inverse (M,)) for pixels (M, 3) uint8."""
    colors, inverse, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_inverse=True, return_counts=True)
    return colors, counts, inverse.reshape(-1)


def nearest_palette_index(colors: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette color (squared RGB distance) for each color (U, 3)."""
    colors_f = colors.astype(np.float64)
    palette_f = palette.astype(np.float64)
    distances = (colors_f**2).sum(1)[:, None] - 2 * colors_f @ palette_f.T + (palette_f**2).sum(1)[None, :]
    return distances.argmin(axis=1)


def kmeans_quantize(crops: np.ndarray, colors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the sprites' colors to ``colors`` centres.

    crops: (N, S, S, 3) uint8. Returns (palette (K, 3) uint8, indices (N, S, S) uint8),
    the palette ordered by pixel share, most common first (white, on Pokémon sprites,
    which is index 0 in the course's colormap too). Raises DataError when the
    sprites hold fewer distinct colors than asked for.
    """
    distinct, counts, inverse = distinct_colors(crops)
    if len(distinct) < colors:
        raise DataError(
            f"quantize.colors = {colors}, but the sprites hold only {len(distinct)} distinct colors; "
            f"set quantize.colors to at most {len(distinct)}"
        )
    with threadpool_limits(limits=1, user_api="openmp"):
        model = KMeans(n_clusters=colors, n_init=1, random_state=seed).fit(
            distinct.astype(np.float64), sample_weight=counts.astype(np.float64)
        )
    palette = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)
    # Re-assign against the rounded palette, so indices point at the colors actually stored.
    labels = nearest_palette_index(distinct, palette)
    share = np.bincount(labels, weights=counts, minlength=colors)
    order = np.lexsort((np.arange(colors), -share))  # stable: ties keep k-means order
    rank = np.empty(colors, dtype=np.int64)
    rank[order] = np.arange(colors)
    indices = rank[labels][inverse].reshape(crops.shape[:3]).astype(np.uint8)
    return palette[order], indices


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colors in 0..255, shape (..., 3) -> (..., 3) float64."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def reconstruction_error(original: np.ndarray, quantized: np.ndarray) -> dict[str, float]:
    """RMSE per channel (0..255, overall and R, G, B) and mean CIE76 ΔE between two RGB arrays."""
    diff = original.reshape(-1, 3).astype(np.float64) - quantized.reshape(-1, 3).astype(np.float64)
    per_channel = np.sqrt((diff**2).mean(axis=0))
    delta_e = np.linalg.norm(srgb_to_lab(original.reshape(-1, 3)) - srgb_to_lab(quantized.reshape(-1, 3)), axis=1)
    return {
        "rmse": round(float(np.sqrt((diff**2).mean())), 4),
        "rmse_r": round(float(per_channel[0]), 4),
        "rmse_g": round(float(per_channel[1]), 4),
        "rmse_b": round(float(per_channel[2]), 4),
        "delta_e": round(float(delta_e.mean()), 4),
    }


def read_course_images(pixels_path: Path, colormap_path: Path, size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The course's own images: (palette (K, 3) uint8, indices (N, size, size) uint8). Raises DataError."""
    palette_rows = []
    for number, line in enumerate(colormap_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split()
        if len(values) != 3 or not all(v.isdigit() and int(v) <= 255 for v in values):
            raise DataError(f"{colormap_path}, line {number}: expected 'R G B' with values 0..255, got {line!r}")
        palette_rows.append([int(v) for v in values])
    palette = np.array(palette_rows, dtype=np.uint8)
    images = []
    for number, line in enumerate(pixels_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = np.array([int(v) for v in line.split()], dtype=np.int64)
        except ValueError:
            raise DataError(f"{pixels_path}, line {number}: expected {size * size} integers") from None
        if values.size != size * size:
            raise DataError(f"{pixels_path}, line {number}: {values.size} values, expected {size * size}")
        if values.min() < 0 or values.max() >= len(palette):
            raise DataError(f"{pixels_path}, line {number}: color index outside 0..{len(palette) - 1} of {colormap_path.name}")
        images.append(values.reshape(size, size))
    if not images:
        raise DataError(f"{pixels_path}: holds no images")
    return palette, np.stack(images).astype(np.uint8)


def match_to_crops(images_rgb: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """For each image (N, S, S, 3), the index of the crop (M, S, S, 3) it is closest to (squared error)."""
    a = images_rgb.reshape(len(images_rgb), -1).astype(np.float64)
    b = crops.reshape(len(crops), -1).astype(np.float64)
    distances = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return distances.argmin(axis=1)


def course_reference(raw: RawData, qp: QuantizeParams, crops: np.ndarray | None) -> dict | None:
    """The course's own pixel_color/colormap against the same crops: the row to beat.

    The course's line order is not the archive's, so each course image is matched to its closest crop.
    Only comparable when the crops are the course's own cut (20x20 central crop of the course sprites).
    """
    if not raw.is_course or raw.course_pixels is None or raw.course_colormap is None:
        return None
    if qp.side != COURSE_CROP or qp.fit != "crop":
        return None
    if crops is None:
        _, crops = read_sprites(raw.sprites, COURSE_CROP, "crop")
    palette, indices = read_course_images(raw.course_pixels, raw.course_colormap, COURSE_CROP)
    course_rgb = palette[indices]
    nearest = match_to_crops(course_rgb, crops)
    reference = reconstruction_error(crops[nearest], course_rgb)
    reference["matched_sprites"] = len(np.unique(nearest))
    return reference
