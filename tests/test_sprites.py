"""Point 5 (input side): archives are read safely, sprites composited on white and cut the course's way."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_sprite, png_bytes_of, sprite_zip
from PIL import Image

from pokegen.errors import DataError
from pokegen.sprites import decode_sprite, fit_sprite, read_sprites


def _zip_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("evil", ["../escape.png", "sprites/../../escape.png", "/tmp/pokegen-abs-escape.png"])
def test_a_zip_member_climbing_out_is_refused_and_nothing_is_written(tmp_path: Path, evil: str) -> None:
    target = tmp_path / "work"
    target.mkdir()
    archive = _zip_with(target, {"ok.png": png_bytes_of(make_sprite(0)), evil: png_bytes_of(make_sprite(1))})
    with pytest.raises(DataError) as info:
        read_sprites(archive, 20, "crop")
    assert repr(evil) in str(info.value) and "outside" in str(info.value)
    assert not (tmp_path / "escape.png").exists() and not Path("/tmp/pokegen-abs-escape.png").exists()
    assert sorted(p.name for p in target.iterdir()) == ["archive.zip"]


def test_a_tar_member_climbing_out_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.tar.gz"
    data = png_bytes_of(make_sprite(0))
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("../../escape.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"'\.\./\.\./escape\.png'"):
        read_sprites(path, 20, "crop")


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("sprite.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(DataError, match="link or special file"):
        read_sprites(path, 20, "crop")


def test_a_corrupt_member_is_named(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path, {"good.png": png_bytes_of(make_sprite(0)), "figure/broken.png": b"\x89PNG\r\n\x1a\nnope"})
    with pytest.raises(DataError, match=r"'figure/broken\.png' is not a readable image"):
        read_sprites(archive, 20, "crop")


def test_a_non_image_member_is_named_and_os_litter_is_skipped(tmp_path: Path) -> None:
    litter = {"__MACOSX/._a.png": b"junk", ".DS_Store": b"junk"}
    archive = _zip_with(tmp_path, {"a.png": png_bytes_of(make_sprite(0)), **litter})
    names, crops = read_sprites(archive, 20, "crop")
    assert names == ["a.png"] and crops.shape == (1, 20, 20, 3)
    archive = _zip_with(tmp_path, {"a.png": png_bytes_of(make_sprite(0)), "notes.txt": b"hello"})
    with pytest.raises(DataError, match=r"'notes\.txt' is not a PNG or GIF sprite"):
        read_sprites(archive, 20, "crop")


def test_not_an_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sprites.zip"
    path.write_bytes(b"this is not an archive at all" * 10)
    with pytest.raises(DataError, match="sprites.zip: not a readable archive"):
        read_sprites(path, 20, "crop")


def test_transparent_pixels_become_white_in_rgba_and_palette_sprites() -> None:
    for mode in ("RGBA", "P"):
        rgb = decode_sprite("s.png", png_bytes_of(make_sprite(3, mode=mode)), Path("x"))
        assert rgb.shape == (40, 40, 3)
        assert (rgb[0, 0] == 255).all(), f"{mode}: the transparent corner must be white"
        assert (rgb != 255).any(), f"{mode}: the sprite itself must survive"


def test_crop_is_the_central_20x20_and_resize_shrinks_the_central_square() -> None:
    rgb = np.arange(40 * 40 * 3, dtype=np.uint32).reshape(40, 40, 3).astype(np.uint8)
    assert np.array_equal(fit_sprite(rgb, 20, "crop", "s"), rgb[10:30, 10:30])
    wide = np.zeros((40, 60, 3), dtype=np.uint8)
    wide[:, 10:50] = 200  # the central 40x40 square is uniform
    assert np.array_equal(fit_sprite(wide, 20, "resize", "s"), np.full((20, 20, 3), 200, np.uint8))


def test_a_sprite_smaller_than_the_crop_is_named() -> None:
    with pytest.raises(DataError, match="'tiny.png' is 16x16, smaller than quantize.side = 20"):
        fit_sprite(np.zeros((16, 16, 3), np.uint8), 20, "crop", "tiny.png")


def test_zip_tar_and_folder_give_the_same_sprites(tmp_path: Path) -> None:
    zipped = tmp_path / "s.zip"
    zipped.write_bytes(sprite_zip(6))
    folder = tmp_path / "folder"
    tarred = tmp_path / "s.tar"
    with zipfile.ZipFile(zipped) as archive:
        archive.extractall(folder)
    with tarfile.open(tarred, "w") as archive:
        archive.add(folder, arcname=".")
    results = [read_sprites(path, 20, "crop") for path in (zipped, tarred, folder)]
    for names, crops in results[1:]:
        assert names == results[0][0]
        assert np.array_equal(crops, results[0][1])


def test_the_course_rar_gives_792_sprites(course_data: Path) -> None:
    names, crops = read_sprites(course_data / "image.rar", 20, "crop")
    assert len(names) == 792 and crops.shape == (792, 20, 20, 3)
    assert names[0].startswith("figure/") and names[0].endswith(".png")
    assert Image.open(io.BytesIO(png_bytes_of(Image.fromarray(crops[0])))).size == (20, 20)
