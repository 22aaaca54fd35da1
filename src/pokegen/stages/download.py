"""Stage download: the sprite source (and the course's own files) into data/raw."""

from __future__ import annotations

import shutil
from pathlib import Path

from pokegen.artifacts import RawData
from pokegen.download import Progress, fetch, fetch_user_sprites, join_address, mirror_bases
from pokegen.fileio import remove_partials
from pokegen.layout import Layout
from pokegen.params import Params


def run_download(params: Params, layout: Layout, on_progress: Progress | None = None) -> RawData:
    """Fetch and verify every file into data/raw; write its manifest. Raises DownloadError listing each address tried."""
    raw_dir = layout.raw_dir
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(raw_dir)
    previous = RawData.load(layout.raw_manifest) if layout.raw_manifest.is_file() else None
    dl = params.download
    files: dict[str, str] = {}
    keep: set[Path] = {layout.raw_manifest}
    course_pixels = course_colormap = None
    if dl.uses_course_sprites:
        bases = mirror_bases(dl)
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
        sprites, sprites_sha = fetch_user_sprites(dl, raw_dir, previous, on_progress)
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
