"""Fetch files from an ordered list of addresses, verify SHA-256, write atomically.

An address is an http(s):// URL, a file:// URL or a plain path. Transient
failures (timeouts, refused connections, HTTP 5xx/429) are retried with
exponential backoff; permanent ones (404, an HTML page instead of the file, a
wrong checksum) move on to the next address at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from pokegen.artifacts import RawData
from pokegen.errors import DownloadError
from pokegen.fileio import atomic_path, sha256_file, sha256_tree
from pokegen.params import DownloadParams

log = logging.getLogger(__name__)

MIRROR_ENV = "POKEGEN_DATA_MIRROR"
MIRROR_HINT = (
    f"Point the pipeline at a mirror holding the same file names: set {MIRROR_ENV} to an http(s):// or "
    "file:// base URL or a folder, or list it under download.mirrors in params.yaml."
)
_HTML_PREFIXES = (b"<!doctype html", b"<html", b"<head", b"<body")

Progress = Callable[[str, int, int | None], None]
"""on_progress(file_name, bytes_done, bytes_total_or_None)"""


class _Transient(Exception):
    """Worth retrying at the same address."""


class _Permanent(Exception):
    """Retrying the same address cannot help."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    address: str | None  # None when an already verified local copy was kept


def join_address(base: str, name: str) -> str:
    """The address of file ``name`` under a mirror base (URL or folder)."""
    if "://" in base:
        return base.rstrip("/") + "/" + name
    return str(Path(base).expanduser() / name)


def fetch(
    name: str,
    addresses: Sequence[str],
    dest: Path,
    *,
    sha256: str | None,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    on_progress: Progress | None = None,
) -> Fetched:
    """Fetch ``name`` from the first address that yields the right bytes; write it to ``dest``.

    With a pinned ``sha256``, an existing ``dest`` with that hash is kept and
    nothing is fetched. Raises DownloadError naming the file, every address
    tried with its failure, and how to point the pipeline at a mirror.
    """
    if sha256 is not None and dest.is_file() and sha256_file(dest) == sha256:
        log.info("%s: verified local copy (sha256 %s…), not downloading", name, sha256[:12])
        return Fetched(dest, sha256, None)
    failures: list[str] = []  # one line per address: its last failure
    for address in addresses:
        for attempt in range(1, retries + 2):
            try:
                with atomic_path(dest) as tmp:
                    digest = _copy_to(address, tmp, name, timeout_s, on_progress)
                    if sha256 is not None and digest != sha256:
                        raise _Permanent(f"sha256 {digest} does not match the pinned {sha256}")
                    # atomic_path renames tmp onto dest only when this block ends cleanly
                log.info("%s: fetched from %s", name, address)
                return Fetched(dest, digest, address)
            except _Transient as exc:
                if attempt <= retries:
                    delay = backoff_s * 2 ** (attempt - 1)
                    log.warning("%s: %s: %s; retrying in %.1fs", name, address, exc, delay)
                    time.sleep(delay)
                else:
                    failures.append(f"{address}: {exc} ({attempt} attempt{'s' if attempt > 1 else ''})")
            except _Permanent as exc:
                failures.append(f"{address}: {exc}")
                log.warning("%s: %s: %s", name, address, exc)
                break
    tried = "\n".join(f"  - {failure}" for failure in failures) or "  (no address was configured)"
    raise DownloadError(f"could not fetch {name}; every address failed:\n{tried}\n{MIRROR_HINT}")


def _copy_to(address: str, tmp: Path, name: str, timeout_s: float, on_progress: Progress | None) -> str:
    scheme = urlparse(address).scheme
    if scheme in ("http", "https"):
        return _http_get(address, tmp, name, timeout_s, on_progress)
    source = Path(unquote(urlparse(address).path)) if scheme == "file" else Path(address)
    if not source.is_file():
        raise _Permanent("no such file")
    shutil.copyfile(source, tmp)
    if on_progress:
        size = tmp.stat().st_size
        on_progress(name, size, size)
    return sha256_file(tmp)


def _http_get(url: str, tmp: Path, name: str, timeout_s: float, on_progress: Progress | None) -> str:
    digest = hashlib.sha256()
    try:
        # The read timeout applies to every chunk, so a server that stalls mid-file fails too.
        with httpx.stream("GET", url, timeout=httpx.Timeout(timeout_s), follow_redirects=True) as response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status} {response.reason_phrase}")
            if status >= 400:
                raise _Permanent(f"HTTP {status} {response.reason_phrase}")
            if "text/html" in response.headers.get("content-type", ""):
                raise _Permanent("the server sent an HTML page (content-type text/html), not the file")
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            done = 0
            with tmp.open("wb") as out:
                for chunk in response.iter_bytes():
                    if done == 0 and chunk.lstrip()[:15].lower().startswith(_HTML_PREFIXES):
                        raise _Permanent("the server sent an HTML page, not the file")
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(name, done, total)
            if total is not None and done != total:
                raise _Transient(f"connection closed after {done} of {total} bytes")
    except httpx.TimeoutException:
        raise _Transient(f"timed out (no data for {timeout_s:g}s: host stalled or unreachable)") from None
    except httpx.TransportError as exc:
        raise _Transient(f"unreachable ({type(exc).__name__}: {exc})") from None
    return digest.hexdigest()


USER_SPRITES_DIR = "sprites"


def mirror_bases(params: DownloadParams) -> list[str]:
    """Mirrors in the order tried: $POKEGEN_DATA_MIRROR, download.mirrors, then the course addresses."""
    from_env = [os.environ[MIRROR_ENV]] if os.environ.get(MIRROR_ENV) else []
    return from_env + list(params.mirrors) + list(params.course_urls)


def fetch_user_sprites(params: DownloadParams, raw_dir: Path, previous: RawData | None, on_progress: Progress | None) -> tuple[Path, str]:
    """Bring-your-own sprites into raw_dir/sprites: an archive (URL or path) is fetched, a folder copied; both hashed.

    Returns (path, sha256). Raises DownloadError naming the source."""
    source = params.sprites
    pinned = params.sprites_sha256
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
        fetched: Fetched = fetch(
            name, [source], target_dir / name, sha256=pinned, timeout_s=params.timeout_s,
            retries=params.retries, backoff_s=params.backoff_s, on_progress=on_progress,
        )  # fmt: skip
        sprites, sha = fetched.path, fetched.sha256
    if pinned is None:
        if previous is not None and previous.source == source and previous.sprites_sha256 != sha:
            log.warning("download.sprites %s changed since the last run: sha256 %s -> %s", source, previous.sprites_sha256, sha)
        log.warning("download.sprites is not pinned; recorded sha256 %s. Pin it with download.sprites_sha256: %s", sha, sha)
    return sprites, sha
