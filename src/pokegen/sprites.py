"""Read sprites from an archive (zip, tar, rar, ...) or a folder, composite them on white, cut them to size.

Archives are read member by member into memory with libarchive and never
unpacked to disk; a member whose path is absolute or climbs out with '..' is
refused all the same, since it marks an archive nobody should trust.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import libarchive
import libarchive.exception
import numpy as np
from PIL import Image, UnidentifiedImageError

from pokegen.errors import DataError

IMAGE_SUFFIXES = (".png", ".gif")
MAX_MEMBER_BYTES = 16 << 20  # a sprite is kilobytes; anything this big is a mistake or a bomb
_METADATA_PARTS = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


def _is_metadata(name: str) -> bool:
    """OS litter that archivers add; skipped rather than treated as a broken sprite."""
    parts = PurePosixPath(name).parts
    return any(part in _METADATA_PARTS or part.startswith("._") for part in parts)


def check_member_name(name: str, archive: Path) -> str:
    """Return the member name as a safe relative path, or raise DataError naming it."""
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if path.is_absolute() or ".." in path.parts or (len(normalized) > 1 and normalized[1] == ":"):
        raise DataError(
            f"{archive}: member {name!r} points outside the extraction folder (absolute path or '..'); "
            "refusing this archive. Re-create it with relative member names."
        )
    return path.as_posix().removeprefix("./")


def iter_archive(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) for every regular file in ``archive``, names checked first."""
    try:
        with libarchive.file_reader(str(archive)) as entries:
            for entry in entries:
                name = check_member_name(entry.pathname, archive)
                if entry.isdir or _is_metadata(name):
                    continue
                if not entry.isreg:
                    raise DataError(f"{archive}: member {name!r} is a link or special file, not a sprite; remove it")
                if entry.size is not None and entry.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: member {name!r} is {entry.size} bytes, too large for a sprite")
                yield name, b"".join(entry.get_blocks())
    except libarchive.exception.ArchiveError as exc:
        raise DataError(f"{archive}: not a readable archive (zip, tar, rar, 7z): {exc}") from None


def iter_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if not _is_metadata(name):
            yield name, path.read_bytes()


def decode_sprite(name: str, data: bytes, origin: Path) -> np.ndarray:
    """Decode a PNG/GIF sprite and composite it on white: (H, W, 3) uint8. Raises DataError naming it."""
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise DataError(f"{origin}: member {name!r} is not a PNG or GIF sprite; remove it from the sprite source")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about palette transparency it then handles
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                rgba = image.convert("RGBA")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{origin}: member {name!r} is not a readable image ({exc}); replace or remove it") from None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)


def fit_sprite(rgb: np.ndarray, size: int, fit: str, name: str) -> np.ndarray:
    """Cut a sprite to ``size`` x ``size``: the central crop (the course's way) or a resize of its central square."""
    height, width = rgb.shape[:2]
    if fit == "crop":
        if height < size or width < size:
            raise DataError(
                f"sprite {name!r} is {width}x{height}, smaller than quantize.side = {size}; "
                "lower quantize.side or use quantize.fit: resize"
            )
        top, left = (height - size) // 2, (width - size) // 2
        return rgb[top : top + size, left : left + size]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(rgb[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def read_sprites(source: Path, size: int, fit: str) -> tuple[list[str], np.ndarray]:
    """All sprites of an archive or folder, sorted by name: (names, (N, size, size, 3) uint8)."""
    members = iter_folder(source) if source.is_dir() else iter_archive(source)
    names: list[str] = []
    crops: list[np.ndarray] = []
    for name, data in sorted(members, key=lambda member: member[0]):
        crops.append(fit_sprite(decode_sprite(name, data, source), size, fit, name))
        names.append(name)
    if not crops:
        raise DataError(f"{source}: holds no PNG or GIF sprites")
    return names, np.stack(crops)
