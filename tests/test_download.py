"""Point 4: the download stage against a real HTTP server on 127.0.0.1 (good, wrong, 404, HTML, stalled, flaky, down)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import COURSE_FILES, CourseServer, sprite_zip

from pokegen.artifacts import RawData
from pokegen.download import MIRROR_ENV
from pokegen.errors import DownloadError
from pokegen.fileio import sha256_file, sha256_tree
from pokegen.layout import Layout
from pokegen.params import Params, parse_params
from pokegen.stages.download import run_download


def params_for(*course_urls: str, **download: object) -> Params:
    return parse_params({"download": {"course_urls": list(course_urls), "timeout_s": 1, "retries": 1, "backoff_s": 0.01, **download}})


def test_fetches_and_verifies_the_course_files(tmp_path: Path, course_server: CourseServer) -> None:
    layout = Layout(tmp_path)
    raw = run_download(params_for(course_server.url("good")), layout)
    pins = Params().download.course_files.pins()
    for name in COURSE_FILES:
        assert sha256_file(layout.raw_dir / name) == pins[name]
    assert raw.files == pins
    assert RawData.load(layout.raw_manifest) == raw
    assert sorted(p.name for p in layout.raw_dir.iterdir()) == sorted([*COURSE_FILES, "manifest.json"])


def test_a_verified_file_is_not_downloaded_again(tmp_path: Path, course_server: CourseServer) -> None:
    params = params_for(course_server.url("good"))
    run_download(params, Layout(tmp_path))
    assert len(course_server.requests) == 3
    run_download(params, Layout(tmp_path))
    assert len(course_server.requests) == 3


def test_env_mirror_then_params_mirrors_then_course_urls(tmp_path: Path, course_server: CourseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, course_server.url("missing"))
    params = params_for(course_server.url("wrong"), mirrors=[course_server.url("html"), course_server.url("good")])
    run_download(params, Layout(tmp_path))
    routes = [path.split("/")[1] for path in course_server.requests if path.endswith("/colormap.txt")]
    assert routes == ["missing", "html", "good"]  # the course url is never needed


def test_a_folder_and_a_file_url_work_as_mirrors(tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(course_data))
    run_download(params_for(), Layout(tmp_path / "a"))
    monkeypatch.setenv(MIRROR_ENV, course_data.as_uri())
    raw = run_download(params_for(), Layout(tmp_path / "b"))
    assert raw.files == Params().download.course_files.pins()


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("wrong", "does not match the pinned"),
        ("missing", "HTTP 404"),
        ("html", "HTML page"),
        ("stall", "timed out"),
        ("flaky-forever", "HTTP 404"),
    ],
)
def test_each_failure_names_the_file_every_address_and_the_fix(tmp_path: Path, course_server: CourseServer, closed_port_url: str, route: str, reason: str) -> None:
    layout = Layout(tmp_path)
    params = params_for(course_server.url(route), closed_port_url)
    with pytest.raises(DownloadError) as info:
        run_download(params, layout)
    message = str(info.value)
    assert "could not fetch image.rar" in message
    assert f"{course_server.url(route)}/image.rar: " in message and reason in message
    assert f"{closed_port_url}/image.rar: unreachable" in message
    assert MIRROR_ENV in message and "download.mirrors" in message
    assert not (layout.raw_dir / "image.rar").exists()
    assert not list(layout.raw_dir.glob(".*.part")), "no partial file may be left behind"


def test_transient_errors_are_retried_with_backoff(tmp_path: Path, course_server: CourseServer) -> None:
    params = params_for(course_server.url("flaky"), retries=2)
    raw = run_download(params, Layout(tmp_path))
    assert raw.files == Params().download.course_files.pins()
    assert len(course_server.hits("/flaky/image.rar")) == 3  # 503, 503, then the file


def test_a_killed_download_leaves_nothing_a_later_run_trusts(tmp_path: Path, course_server: CourseServer, course_data: Path) -> None:
    layout = Layout(tmp_path)
    layout.raw_dir.mkdir(parents=True)
    # What a killed run can leave: a partial temp file, and (from some other tool) a truncated target.
    (layout.raw_dir / ".image.rar.abc123.part").write_bytes(b"half")
    (layout.raw_dir / "image.rar").write_bytes((course_data / "image.rar").read_bytes()[:1000])
    run_download(params_for(course_server.url("good")), layout)
    assert sha256_file(layout.raw_dir / "image.rar") == Params().download.course_files.pins()["image.rar"]
    assert not list(layout.raw_dir.glob(".*.part"))
    assert course_server.hits("/good/image.rar"), "the truncated file must be fetched again, not trusted"


def test_own_sprites_unpinned_are_hashed_recorded_and_rechecked(tmp_path: Path, course_server: CourseServer, caplog: pytest.LogCaptureFixture) -> None:
    course_server.user_files["mine.zip"] = sprite_zip(8)
    params = params_for(sprites=course_server.url("user") + "/mine.zip")
    layout = Layout(tmp_path)
    caplog.set_level(logging.WARNING)
    first = run_download(params, layout)
    assert first.sprites_sha256 == sha256_file(layout.raw_dir / "sprites" / "mine.zip")
    assert "not pinned" in caplog.text and first.sprites_sha256 in caplog.text
    assert not (layout.raw_dir / "image.rar").exists()

    course_server.user_files["mine.zip"] = sprite_zip(9)  # the source changes upstream
    caplog.clear()
    second = run_download(params, layout)
    assert second.sprites_sha256 != first.sprites_sha256, "an unpinned source is fetched again, never trusted"
    assert "changed since the last run" in caplog.text


def test_own_sprites_with_a_wrong_pin_fail(tmp_path: Path, course_server: CourseServer) -> None:
    course_server.user_files["mine.zip"] = sprite_zip(8)
    params = params_for(sprites=course_server.url("user") + "/mine.zip", sprites_sha256="0" * 64)
    with pytest.raises(DownloadError, match="mine.zip"):
        run_download(params, Layout(tmp_path))


def test_own_sprite_folder_is_copied_and_hashed(tmp_path: Path) -> None:
    folder = tmp_path / "my sprites"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png-a")
    raw = run_download(params_for(sprites=str(folder)), Layout(tmp_path / "repo"))
    assert raw.sprites.is_dir() and (raw.sprites / "a.png").read_bytes() == b"png-a"
    assert raw.sprites_sha256 == sha256_tree(folder)
    with pytest.raises(DownloadError, match="does not match download.sprites_sha256"):
        run_download(params_for(sprites=str(folder), sprites_sha256="1" * 64), Layout(tmp_path / "repo"))


def test_a_missing_own_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="nowhere.zip"):
        run_download(params_for(sprites=str(tmp_path / "nowhere.zip")), Layout(tmp_path))
