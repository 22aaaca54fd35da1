"""The thin stage wrappers dvc.yaml and the Prefect flow call: read params and inputs, call the
pure functions, write outputs atomically. One function per stage, nothing else."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import torch

from pokegen import quantize as q
from pokegen import report
from pokegen.artifacts import QuantizedSprites, RawData, SpriteDataset
from pokegen.baselines import fitted_baselines
from pokegen.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from pokegen.devices import choose_device
from pokegen.download import MIRROR_ENV, Fetched, Progress, fetch, join_address
from pokegen.errors import DataError, DownloadError, ParamsError
from pokegen.evaluation import cover_mask, evaluate, latent_grid_codes
from pokegen.fileio import remove_partials, sha256_file, sha256_tree, write_bytes_atomic, write_json_atomic
from pokegen.images import completion_picture, pairs_picture, palette_grid, png_bytes
from pokegen.layout import Layout
from pokegen.params import COURSE_CROP, ModelSpec, Params, QuantizeParams, model_specs
from pokegen.plugin import FitContext
from pokegen.registry import plugin_info
from pokegen.sprites import read_sprites
from pokegen.tensorize import check_disjoint, data_card, split_sprites

log = logging.getLogger(__name__)

USER_SPRITES_DIR = "sprites"


def mirror_bases(params: Params) -> list[str]:
    """Mirrors in the order tried: $POKEGEN_DATA_MIRROR, download.mirrors, then the course addresses."""
    from_env = [os.environ[MIRROR_ENV]] if os.environ.get(MIRROR_ENV) else []
    return from_env + list(params.download.mirrors) + list(params.download.course_urls)


def _fetch_user_sprites(params: Params, raw_dir: Path, previous: RawData | None, on_progress: Progress | None) -> tuple[Path, str]:
    """Bring-your-own sprites: an archive (URL or path) is fetched, a folder copied; both hashed."""
    source = params.download.sprites
    pinned = params.download.sprites_sha256
    parsed = urlparse(source)
    local = Path(unquote(parsed.path)) if parsed.scheme == "file" else (Path(source).expanduser() if "://" not in source else None)
    target_dir = raw_dir / USER_SPRITES_DIR
    if local is not None and local.is_dir():
        if target_dir.exists():
            shutil.rmtree(target_dir)
        staging = raw_dir / f".{USER_SPRITES_DIR}.part"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(local, staging)
        digest = sha256_tree(staging)
        if pinned is not None and digest != pinned:
            shutil.rmtree(staging)
            raise DownloadError(
                f"sprite folder {local}: tree sha256 {digest} does not match download.sprites_sha256 {pinned}; "
                "fix the folder or the pin"
            )
        staging.rename(target_dir)
        sprites, sha = target_dir, digest
    else:
        if local is not None and not local.exists():
            raise DownloadError(f"download.sprites = {source!r}: no such file or folder; fix the path in params.yaml")
        name = Path(parsed.path).name or "sprites"
        if target_dir.is_dir():
            shutil.rmtree(target_dir)
        dl = params.download
        fetched: Fetched = fetch(
            name, [source], target_dir / name, sha256=pinned, timeout_s=dl.timeout_s,
            retries=dl.retries, backoff_s=dl.backoff_s, on_progress=on_progress,
        )  # fmt: skip
        sprites, sha = fetched.path, fetched.sha256
    if pinned is None:
        if previous is not None and previous.source == source and previous.sprites_sha256 != sha:
            log.warning("download.sprites %s changed since the last run: sha256 %s -> %s", source, previous.sprites_sha256, sha)
        log.warning("download.sprites is not pinned; recorded sha256 %s. Pin it with download.sprites_sha256: %s", sha, sha)
    return sprites, sha


def run_download(params: Params, layout: Layout, on_progress: Progress | None = None) -> RawData:
    """Stage download: fetch the sprite source (and the course's own files) into data/raw."""
    raw_dir = layout.raw_dir
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(raw_dir)
    previous = RawData.load(layout.raw_manifest) if layout.raw_manifest.is_file() else None
    dl = params.download
    files: dict[str, str] = {}
    keep: set[Path] = {layout.raw_manifest}
    course_pixels = course_colormap = None
    if dl.uses_course_sprites:
        bases = mirror_bases(params)
        fetched = {}
        for name, pin in dl.course_files.pins().items():
            fetched[name] = fetch(
                name, [join_address(base, name) for base in bases], raw_dir / name, sha256=pin,
                timeout_s=dl.timeout_s, retries=dl.retries, backoff_s=dl.backoff_s, on_progress=on_progress,
            )  # fmt: skip
            files[name] = fetched[name].sha256
            keep.add(fetched[name].path)
        sprites, sprites_sha = fetched["image.rar"].path, files["image.rar"]
        course_pixels, course_colormap = fetched["pixel_color.txt"].path, fetched["colormap.txt"].path
    else:
        sprites, sprites_sha = _fetch_user_sprites(params, raw_dir, previous, on_progress)
        files[sprites.relative_to(raw_dir).as_posix()] = sprites_sha
        keep.add(sprites)
    # data/raw persists between runs (so verified files are not fetched again); drop what this run did not fetch.
    keep_top = {raw_dir / path.relative_to(raw_dir).parts[0] for path in keep}
    for path in raw_dir.iterdir():
        if path not in keep_top:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    raw = RawData(dl.sprites, sprites, sprites_sha, course_pixels, course_colormap, files)
    raw.save(layout.raw_manifest)
    return raw


def run_quantize(params: Params, layout: Layout) -> dict:
    """Stage quantize: sprites -> palette + index images, a preview grid and error metrics."""
    raw = RawData.load(layout.raw_manifest)
    qp = params.quantize
    metrics: dict = {}
    crops: np.ndarray | None = None
    if qp.method == "course":
        if raw.course_pixels is None or raw.course_colormap is None:
            raise DataError("quantize.method 'course' needs the course files; set download.sprites: course")
        palette, indices = q.read_course_images(raw.course_pixels, raw.course_colormap, qp.size)
        names = [f"course-{i:03d}" for i in range(len(indices))]
        metrics["method"] = "course"
    else:
        names, crops = read_sprites(raw.sprites, qp.size, qp.fit)
        palette, indices = q.kmeans_quantize(crops, qp.colors, qp.seed)
        metrics.update(method="kmeans", distinct_colors_before=int(len(q.distinct_colors(crops)[0])))
        metrics.update(q.reconstruction_error(crops, palette[indices]))
    metrics.update(sprites=int(len(indices)), colors=int(len(palette)), size=qp.size, fit=qp.fit)
    metrics["course_reference"] = _course_reference(raw, qp, crops)
    if qp.method == "course" and metrics["course_reference"]:
        metrics.update({k: v for k, v in metrics["course_reference"].items() if k != "matched_sprites"})

    QuantizedSprites(palette, indices, tuple(names)).save(layout.quantized_sprites)
    preview = indices[: qp.preview_count]
    columns = int(np.ceil(np.sqrt(len(preview))))
    write_bytes_atomic(layout.quantize_preview, png_bytes(palette_grid(preview, palette, columns=columns, scale=qp.preview_scale)))
    write_json_atomic(layout.quantize_metrics, metrics)
    log.info("quantize: %d sprites, %d colors, RMSE %s, mean ΔE %s", len(indices), len(palette), metrics.get("rmse"), metrics.get("delta_e"))
    return metrics


def _course_reference(raw: RawData, qp: QuantizeParams, crops: np.ndarray | None) -> dict | None:
    """The course's own pixel_color/colormap against the same crops: the row to beat.

    The course's line order is not the archive's, so each course image is matched to its closest crop.
    Only comparable when the crops are the course's own cut (20x20 central crop of the course sprites).
    """
    if not raw.is_course or raw.course_pixels is None or raw.course_colormap is None:
        return None
    if qp.size != COURSE_CROP or qp.fit != "crop":
        return None
    if crops is None:
        _, crops = read_sprites(raw.sprites, COURSE_CROP, "crop")
    palette, indices = q.read_course_images(raw.course_pixels, raw.course_colormap, COURSE_CROP)
    course_rgb = palette[indices]
    nearest = q.match_to_crops(course_rgb, crops)
    reference = q.reconstruction_error(crops[nearest], course_rgb)
    reference["matched_sprites"] = int(len(np.unique(nearest)))
    return reference


def run_tensorize(params: Params, layout: Layout) -> dict:
    """Stage tensorize: the seeded train/val/test split and its data card."""
    sprites = QuantizedSprites.load(layout.quantized_sprites)
    tp = params.tensorize
    dataset = split_sprites(sprites, val=tp.val, test=tp.test, seed=tp.seed)
    check_disjoint(dataset)
    card = data_card(dataset, seed=tp.seed, quantized_sha256=sha256_file(layout.quantized_sprites))
    dataset.save(layout.dataset)
    write_json_atomic(layout.data_card, card)
    log.info("tensorize: train %(train)d, val %(val)d, test %(test)d", card["counts"])
    return card


def _fingerprint(spec: ModelSpec, data_sha256: str) -> str:
    info = plugin_info(spec.name)
    record = {
        "plugin": info.target, "version": info.version, "config": spec.config.model_dump(mode="json"),
        "train": spec.train.model_dump(mode="json"), "data": data_sha256,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def run_train(params: Params, layout: Layout, name: str, context: FitContext | None = None) -> dict:
    """Stage train@NAME: fit one model plugin on the train split; write its checkpoint, metrics and curves.

    Resumable: the state after each epoch is kept in .pokegen/resume/NAME (outside DVC's outputs)
    and used by the next run with the same plugin, config, settings and data.
    """
    spec = model_specs(params)[name]
    dataset = SpriteDataset.load(layout.dataset)
    data_sha256 = sha256_file(layout.dataset)
    context = context or FitContext()
    context.device = choose_device(name, spec.resources, spec.train.cpu_fallback)
    context.resume_dir = layout.resume_dir(name)
    fingerprint = _fingerprint(spec, data_sha256)
    stamp = context.resume_dir / "fingerprint"
    if context.resume_dir.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(context.resume_dir)  # state of another config or data set: start afresh
    context.resume_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)

    torch.manual_seed(spec.train.seed)  # the same initial weights for the same seed
    train, val = dataset.splits["train"], dataset.splits["val"]
    model = spec.plugin(spec.config, colors=len(dataset.palette), size=train.shape[1])
    started = time.perf_counter()
    history = model.fit(train, val, spec.train, context)
    seconds = time.perf_counter() - started

    monitor = getattr(model, "monitor", None)
    best = min(history, key=lambda row: row[monitor]) if monitor and history and monitor in history[0] else history[-1]
    summary = {
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "device": context.device,
        "final": {key: value for key, value in history[-1].items() if key != "epoch"},
        "best": {key: value for key, value in best.items() if key != "epoch"},
    }
    save_checkpoint(model, layout.model_dir(name), data_sha256=data_sha256, summary=summary)
    write_json_atomic(layout.train_metrics(name), summary)
    columns = list(dict.fromkeys(key for row in history for key in row))
    lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" if c in row else "" for c in columns) for row in history]
    write_bytes_atomic(layout.train_curves(name), ("\n".join(lines) + "\n").encode())
    shutil.rmtree(context.resume_dir)  # finished: nothing left to resume
    log.info("train@%s: %d epochs in %.1fs on %s; best epoch %d", name, len(history), seconds, context.device, summary["best_epoch"])
    return summary


NEAREST_PAIRS = 16  # sample / nearest-training-sprite pairs in nearest.png, four a row


def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Replace ``folder`` with exactly ``files``, built beside it and renamed: never half-written."""
    staging = folder.with_name(folder.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def run_evaluate(params: Params, layout: Layout, name: str) -> dict:
    """Stage evaluate@NAME: metrics by the model's capabilities, and its pictures, on the test split."""
    settings = params.evaluate
    spec = model_specs(params)[name]
    dataset = SpriteDataset.load(layout.dataset)
    if settings.nearest_k >= len(dataset.splits["test"]):
        raise ParamsError(
            f"evaluate.nearest_k = {settings.nearest_k} needs more test sprites than that "
            f"({len(dataset.splits['test'])} in {layout.dataset}); lower evaluate.nearest_k or raise tensorize.test"
        )
    trained_on = read_checkpoint_info(layout.model_dir(name)).get("data_sha256")
    if trained_on != sha256_file(layout.dataset):
        raise DataError(f"{layout.model_dir(name)} was trained on other data than {layout.dataset}; re-train it: dvc repro train@{name}")
    device = choose_device(name, spec.resources, spec.train.cpu_fallback)
    model = load_checkpoint(layout.model_dir(name)).to(device)
    result = evaluate(model, dataset, settings)

    palette, test, scale = dataset.palette, dataset.splits["test"], settings.scale
    grid = result.samples[: settings.grid]
    pictures = {"samples.png": palette_grid(grid, palette, columns=int(np.ceil(np.sqrt(len(grid)))), scale=scale)}
    if result.completions:
        shown = min(settings.completion_rows, len(test))
        masks = {cover: cover_mask(shown, test.shape[1], cover) for cover in result.completions}
        completed = {cover: images[:shown] for cover, images in result.completions.items()}
        pictures["completion.png"] = completion_picture(test[:shown], completed, masks, palette, scale=scale)
    pairs = min(NEAREST_PAIRS, len(result.samples))
    pictures["nearest.png"] = pairs_picture(result.samples[:pairs], dataset.splits["train"][result.nearest_train[:pairs]], palette, pairs_per_row=4, scale=scale)
    if "decode" in model.capabilities():
        latent_dim = np.asarray(model.encode(test[:1])).shape[1]
        pictures["latent_grid.png"] = palette_grid(model.decode(latent_grid_codes(latent_dim, settings.latent_grid)), palette, columns=settings.latent_grid.steps, scale=scale)

    metrics = {"model": name, "samples": len(result.samples), **result.metrics}
    _write_folder(layout.evaluation_pictures(name), {file: png_bytes(picture) for file, picture in pictures.items()})
    write_json_atomic(layout.evaluation_metrics(name), metrics)
    write_json_atomic(layout.sampling_speed(name), {"sampling": {"sprites_per_second": round(result.sprites_per_second, 1), "device": device, "sprites": len(result.samples)}})
    log.info("evaluate@%s: %s; sampling %.1f sprites/s on %s", name, report.summary_line(metrics), result.sprites_per_second, device)
    return metrics


def run_report(params: Params, layout: Layout) -> report.Table:
    """Stage report: every model side by side with baselines computed here, pictures, params and the data card."""
    dataset = SpriteDataset.load(layout.dataset)
    entries = []
    for name in params.pipeline.models:
        metrics_path = layout.evaluation_metrics(name)
        if not metrics_path.is_file():
            raise DataError(f"{metrics_path}: missing; evaluate the model first: dvc repro evaluate@{name}")
        pictures_dir = layout.evaluation_pictures(name)
        pictures = {path.stem: path.read_bytes() for path in sorted(pictures_dir.glob("*.png"), key=report.picture_order)} if pictures_dir.is_dir() else {}
        curves = layout.train_curves(name)
        entries.append(report.Entry(name, json.loads(metrics_path.read_text()), pictures, curves.read_text() if curves.is_file() else ""))
    baselines = [
        report.Entry(baseline.label, evaluate(baseline, dataset, params.evaluate).metrics, {}, "")
        for baseline in fitted_baselines(dataset.splits["train"], len(dataset.palette))
    ]
    table = report.metrics_table(entries + baselines, params.evaluate.covers)
    card = json.loads(layout.data_card.read_text()) if layout.data_card.is_file() else {}
    # Only what the report depends on in dvc.yaml: the runner and the deployment change no figure.
    used = params.model_dump(mode="json", by_alias=True, include={"download", "quantize", "tensorize", "evaluate"})
    used["pipeline"] = {"models": params.pipeline.models}
    used["models"] = {  # each model's settings resolved: its plugin's defaults filled in
        name: {**spec.config.model_dump(mode="json"), "train": spec.train.model_dump(mode="json"), "resources": spec.resources.model_dump(mode="json")}
        for name, spec in model_specs(params).items()
    }
    files = {
        "index.html": report.render_html(entries, table, used, card).encode(),
        "report.md": report.render_markdown(entries, table, used, card).encode(),
        **{report.image_path(entry.name, picture): data for entry in entries for picture, data in entry.pictures.items()},
    }
    _write_folder(layout.reports_dir, files)
    log.info("report: %d models, %d baselines -> %s", len(entries), len(baselines), layout.reports_dir / "index.html")
    return table


STAGES = {"download": run_download, "quantize": run_quantize, "tensorize": run_tensorize}
