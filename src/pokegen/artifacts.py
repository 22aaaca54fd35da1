"""Typed contracts between stages, stored as safetensors (no pickle) with JSON metadata.

    download -> RawData          data/raw/manifest.json
    quantize -> QuantizedSprites data/quantized/sprites.safetensors
    tensorize -> SpriteDataset   data/tensors/dataset.safetensors
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from pokegen.errors import DataError
from pokegen.fileio import write_bytes_atomic, write_json_atomic

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawData:
    """What download fetched: the sprite source and, for the course data, the course's own images."""

    source: str  # "course" or the user's address
    sprites: Path  # an archive or a folder of sprites
    sprites_sha256: str
    course_pixels: Path | None
    course_colormap: Path | None
    files: dict[str, str]  # relative path -> sha256

    @property
    def is_course(self) -> bool:
        return self.source == "course"

    def save(self, manifest: Path) -> None:
        root = manifest.parent
        write_json_atomic(
            manifest,
            {
                "source": self.source,
                "sprites": self.sprites.relative_to(root).as_posix(),
                "sprites_sha256": self.sprites_sha256,
                "course_pixels": self.course_pixels.relative_to(root).as_posix() if self.course_pixels else None,
                "course_colormap": self.course_colormap.relative_to(root).as_posix() if self.course_colormap else None,
                "files": self.files,
            },
        )

    @classmethod
    def load(cls, manifest: Path) -> RawData:
        if not manifest.is_file():
            raise DataError(f"{manifest}: missing; run the download stage first (dvc repro download)")
        try:
            record = json.loads(manifest.read_text())
            root = manifest.parent
            return cls(
                source=record["source"],
                sprites=root / record["sprites"],
                sprites_sha256=record["sprites_sha256"],
                course_pixels=root / record["course_pixels"] if record["course_pixels"] else None,
                course_colormap=root / record["course_colormap"] if record["course_colormap"] else None,
                files=dict(record["files"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{manifest}: not a download manifest ({exc}); re-run the download stage") from None


def _check_images(path: Path, name: str, array: np.ndarray, colors: int) -> None:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise DataError(f"{path}: '{name}' should be uint8 (N, S, S), got {array.dtype} {array.shape}")
    if array.size and int(array.max()) >= colors:
        raise DataError(f"{path}: '{name}' holds color index {int(array.max())}, but the palette has {colors}")


def _write(path: Path, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    # One metadata key holding sorted JSON: safetensors writes several keys in a random
    # order per process, which would give the same data different bytes (and DVC hashes).
    write_bytes_atomic(path, save_tensors(tensors, metadata={"pokegen": json.dumps(metadata, sort_keys=True)}))


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.is_file():
        raise DataError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    data = path.read_bytes()
    try:
        tensors = load_tensors(data)
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(json.loads(data[8 : 8 + header_size])["__metadata__"]["pokegen"])
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a safetensors file ({exc}); re-run the stage that writes it") from None
    return tensors, metadata


@dataclass(frozen=True)
class QuantizedSprites:
    """Every sprite as palette indices."""

    palette: np.ndarray  # (K, 3) uint8, RGB
    indices: np.ndarray  # (N, S, S) uint8, values < K
    names: tuple[str, ...]  # each sprite's source name

    def save(self, path: Path) -> None:
        _write(path, {"palette": self.palette, "indices": self.indices}, {"format": "pokegen.quantized.v1", "names": list(self.names)})

    @classmethod
    def load(cls, path: Path) -> QuantizedSprites:
        tensors, metadata = _read(path)
        try:
            palette, indices = tensors["palette"], tensors["indices"]
            names = tuple(metadata["names"])
        except (KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a quantized-sprites file (missing {exc})") from None
        _check_images(path, "indices", indices, len(palette))
        if len(names) != len(indices):
            raise DataError(f"{path}: {len(names)} names for {len(indices)} sprites")
        return cls(palette, indices, names)


@dataclass(frozen=True)
class SpriteDataset:
    """The train/val/test split the models read: palette indices per split, and each sprite's name."""

    palette: np.ndarray  # (K, 3) uint8
    splits: dict[str, np.ndarray]  # split -> (n, S, S) uint8
    names: dict[str, tuple[str, ...]]

    def save(self, path: Path) -> None:
        _write(
            path,
            {"palette": self.palette, **self.splits},
            {"format": "pokegen.dataset.v1", "names": {split: list(names) for split, names in self.names.items()}},
        )

    @classmethod
    def load(cls, path: Path) -> SpriteDataset:
        tensors, metadata = _read(path)
        try:
            palette = tensors["palette"]
            splits = {split: tensors[split] for split in SPLITS}
            names = {split: tuple(metadata["names"][split]) for split in SPLITS}
        except (KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a sprite dataset (missing {exc})") from None
        for split, images in splits.items():
            _check_images(path, split, images, len(palette))
        return cls(palette, splits, names)
