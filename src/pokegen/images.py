"""Pictures from palette images: exact palette colors, upscaled by nearest neighbour so pixels stay crisp."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

GUTTER_RGB = (255, 255, 255)


def palette_grid(indices: np.ndarray, palette: np.ndarray, *, columns: int, scale: int, gutter: int = 1) -> Image.Image:
    """Tile palette images (n, S, S) into one RGB picture; each pixel becomes ``scale`` x ``scale``."""
    count, height, width = indices.shape
    rows = -(-count // columns)
    cell_h, cell_w = height * scale + gutter, width * scale + gutter
    canvas = np.full((rows * cell_h + gutter, columns * cell_w + gutter, 3), GUTTER_RGB, dtype=np.uint8)
    rgb = palette[indices]
    upscaled = rgb.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(count):
        top, left = gutter + (i // columns) * cell_h, gutter + (i % columns) * cell_w
        canvas[top : top + height * scale, left : left + width * scale] = upscaled[i]
    return Image.fromarray(canvas)


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding with no timestamps or other varying chunks: same picture, same bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


COVER_RGB = (128, 128, 128)  # the covered part of a sprite in completion pictures


def completion_picture(originals: np.ndarray, completions: dict[str, np.ndarray], masks: dict[str, np.ndarray], palette: np.ndarray, *, scale: int) -> Image.Image:
    """The lecture's rows: each sprite, then for every mask the covered sprite (gray) and its completion."""
    covered_index = len(palette)
    with_cover = np.vstack([palette, np.array([COVER_RGB], dtype=palette.dtype)])
    cells = []
    for i, original in enumerate(originals):
        cells.append(original)
        for key, completed in completions.items():
            cells.append(np.where(masks[key][i], covered_index, original))
            cells.append(completed[i])
    return palette_grid(np.stack(cells).astype(np.int64), with_cover, columns=1 + 2 * len(completions), scale=scale)


def pairs_picture(left: np.ndarray, right: np.ndarray, palette: np.ndarray, *, pairs_per_row: int, scale: int) -> Image.Image:
    """Sprites side by side in pairs (left[i] next to right[i]), ``pairs_per_row`` pairs a row."""
    interleaved = np.stack([left, right], axis=1).reshape(-1, *left.shape[1:])
    return palette_grid(interleaved, palette, columns=2 * pairs_per_row, scale=scale)
