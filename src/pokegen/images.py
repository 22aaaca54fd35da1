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
