"""Stage quantize: sprites -> palette + index images, a preview grid and error metrics."""

from __future__ import annotations

import logging

import numpy as np

from pokegen import quantize as q
from pokegen.artifacts import QuantizedSprites, RawData
from pokegen.errors import DataError
from pokegen.fileio import write_bytes_atomic, write_json_atomic
from pokegen.images import palette_grid, png_bytes
from pokegen.layout import Layout
from pokegen.params import Params
from pokegen.sprites import read_sprites

log = logging.getLogger(__name__)


def run_quantize(params: Params, layout: Layout) -> dict:
    """Cut and cluster the raw sprites; write sprites.safetensors, preview.png and metrics.json. Returns the metrics."""
    raw = RawData.load(layout.raw_manifest)
    qp = params.quantize
    metrics: dict = {}
    crops: np.ndarray | None = None
    if qp.method == "course":
        if raw.course_pixels is None or raw.course_colormap is None:
            raise DataError("quantize.method 'course' needs the course files; set download.sprites: course")
        palette, indices = q.read_course_images(raw.course_pixels, raw.course_colormap, qp.side)
        names = [f"course-{i:03d}" for i in range(len(indices))]
        metrics["method"] = "course"
    else:
        names, crops = read_sprites(raw.sprites, qp.side, qp.fit)
        palette, indices = q.kmeans_quantize(crops, qp.colors, qp.seed)
        metrics.update(method="kmeans", distinct_colors_before=len(q.distinct_colors(crops)[0]))
        metrics.update(q.reconstruction_error(crops, palette[indices]))
    metrics.update(sprites=len(indices), colors=len(palette), side=qp.side, fit=qp.fit)
    metrics["course_reference"] = q.course_reference(raw, qp, crops)
    if qp.method == "course" and metrics["course_reference"]:
        metrics.update({k: v for k, v in metrics["course_reference"].items() if k != "matched_sprites"})

    QuantizedSprites(palette, indices, tuple(names)).save(layout.quantized_sprites)
    preview = indices[: qp.preview_count]
    columns = int(np.ceil(np.sqrt(len(preview))))
    write_bytes_atomic(layout.quantize_preview, png_bytes(palette_grid(preview, palette, columns=columns, scale=qp.preview_scale)))
    write_json_atomic(layout.quantize_metrics, metrics)
    log.info("quantize: %d sprites, %d colors, RMSE %s, mean ΔE %s", len(indices), len(palette), metrics.get("rmse"), metrics.get("delta_e"))
    return metrics
