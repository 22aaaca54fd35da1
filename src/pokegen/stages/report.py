"""Stage report: render every evaluated model side by side (the judge first), with pictures, params and the data card.

It only renders: every figure comes from evaluation/NAME/metrics.json (baselines are plugins, evaluated like models).
"""

from __future__ import annotations

import json
import logging

import numpy as np

from pokegen import report
from pokegen.artifacts import SpriteDataset
from pokegen.errors import DataError
from pokegen.fileio import write_bytes_atomic, write_folder_atomic
from pokegen.images import palette_grid, png_bytes
from pokegen.layout import Layout
from pokegen.params import EvaluateParams, ModelSpec, Params

log = logging.getLogger(__name__)


def _entry(layout: Layout, name: str) -> report.Entry:
    metrics_path = layout.evaluation_metrics(name)
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path}: missing; evaluate the model first: dvc repro evaluate@{name}")
    pictures_dir = layout.evaluation_pictures(name)
    found = sorted(pictures_dir.glob("*.png"), key=report.picture_order) if pictures_dir.is_dir() else []
    curves, summary = layout.train_curves(name), layout.train_metrics(name)
    return report.Entry(
        name, json.loads(metrics_path.read_text()), {path.stem: path.read_bytes() for path in found},
        curves.read_text() if curves.is_file() else "", json.loads(summary.read_text()).get("monitor") if summary.is_file() else None,
    )  # fmt: skip


def _training_seconds(layout: Layout, names: list[str]) -> dict[str, float]:
    """Each model's training wall time on this machine, where this machine trained it (timings/, not versioned)."""
    found = {name: layout.training_time(name) for name in names}
    return {name: json.loads(path.read_text())["training"]["seconds"] for name, path in found.items() if path.is_file()}


def _grid(images: np.ndarray, palette: np.ndarray, settings: EvaluateParams) -> bytes:
    shown = images[: settings.grid]  # the layout of every samples.png: the same scale, the same columns
    return png_bytes(palette_grid(shown, palette, columns=int(np.ceil(np.sqrt(settings.grid))), scale=settings.scale))


def run_report(params: Params, layout: Layout, specs: dict[str, ModelSpec]) -> report.Table:
    """Write reports/index.html, report.md and images/; return the headline table, the model the judge finds hardest
    to tell from real sprites first."""
    dataset, settings = SpriteDataset.load(layout.dataset), params.evaluate
    entries = report.judged_first([_entry(layout, name) for name in specs])
    glance = {report.REAL: _grid(dataset.splits["test"], dataset.palette, settings)}
    glance |= {entry.name: entry.pictures["samples"] for entry in entries if "samples" in entry.pictures}
    card = json.loads(layout.data_card.read_text()) if layout.data_card.is_file() else {}
    shown = report.Report(
        entries, report.headline_table(entries), report.details_table(entries, settings), report.notes(settings),
        report.params_used(params, specs), card, glance,
    )  # fmt: skip
    files = {
        "index.html": report.render_html(shown).encode(),
        "report.md": report.render_markdown(shown).encode(),
        **{report.image_path(entry.name, picture): data for entry in entries for picture, data in entry.pictures.items()},
        **{report.glance_path(title): data for title, data in glance.items()},
    }
    write_folder_atomic(layout.reports_dir, files)
    write_bytes_atomic(
        layout.timings_script, report.training_seconds_script(_training_seconds(layout, list(specs))).encode()
    )
    log.info("report: %d models -> %s", len(entries), layout.reports_dir / "index.html")
    return shown.headline
