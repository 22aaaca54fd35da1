"""Shared fixtures: real HTTP server on 127.0.0.1, synthetic sprites, temporary DVC repositories.

Prefect and DVC are isolated from the user's: PREFECT_HOME points at a temporary folder
before Prefect is imported anywhere, and every DVC test works in its own temporary git repo.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="pokegen-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_DATA = Path(os.environ.get("POKEGEN_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "pokemon-creation"))
COURSE_FILES = ("image.rar", "pixel_color.txt", "colormap.txt")
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "models/README.md",
    "evaluation/README.md",
)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def course_data() -> Path:
    """The local mirror of the course files (../shared/data/pokemon-creation)."""
    missing = [name for name in COURSE_FILES if not (COURSE_DATA / name).is_file()]
    if missing:
        message = f"course data not found in {COURSE_DATA} (missing {', '.join(missing)}): set POKEGEN_TEST_DATA to a folder holding them"
        if os.environ.get("CI"):  # CI must run every test
            pytest.fail(message)
        pytest.skip(message)
    return COURSE_DATA


@pytest.fixture(scope="session")
def course_run(tmp_path_factory: pytest.TempPathFactory, course_data: Path):
    """download -> quantize -> tensorize on the real course sprites, default params: (layout, metrics, data card)."""
    from pokegen.layout import Layout
    from pokegen.params import parse_params
    from pokegen.stages.download import run_download
    from pokegen.stages.quantize import run_quantize
    from pokegen.stages.tensorize import run_tensorize

    layout = Layout(tmp_path_factory.mktemp("course"))
    params = parse_params({"download": {"mirrors": [str(course_data)]}})
    run_download(params, layout)
    metrics = run_quantize(params, layout)
    card = run_tensorize(params, layout)
    return layout, metrics, card


@pytest.fixture(autouse=True)
def _no_user_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POKEGEN_DATA_MIRROR", raising=False)


# --- HTTP server -------------------------------------------------------------------------


@dataclass
class CourseServer:
    """A real HTTP server on 127.0.0.1 with one route per kind of trouble:

    /good/F     the file            /wrong/F  other bytes (checksum mismatch)
    /missing/F  404                 /html/F   an HTML error page with status 200
    /stall/F    headers, then silence          /flaky/F  503 twice, then the file
    /user/F     bytes from ``user_files``      /gate/F   the file, once ``gate`` is set
    """

    base: str
    files: Path
    requests: list[str] = field(default_factory=list)
    user_files: dict[str, bytes] = field(default_factory=dict)
    gate: threading.Event = field(default_factory=threading.Event)

    def url(self, route: str) -> str:
        return f"{self.base}/{route}"

    def hits(self, prefix: str) -> list[str]:
        return [path for path in self.requests if path.startswith(prefix)]


def _handler(state: CourseServer, stop: threading.Event, flaky_counts: dict[str, int]):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            state.requests.append(self.path)
            _, route, name = self.path.split("/", 2)
            real = state.files / name
            if route == "user":
                if name in state.user_files:
                    return self._send(200, state.user_files[name])
                return self._send(404, b"not found", "text/plain")
            if route == "missing" or not real.is_file():
                return self._send(404, b"not found", "text/plain")
            if route == "good":
                return self._send(200, real.read_bytes())
            if route == "wrong":
                return self._send(200, real.read_bytes()[::-1])
            if route == "html":
                return self._send(200, b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "text/html")
            if route == "gate":
                state.gate.wait(120)  # holds a download where the test wants it
                return self._send(200, real.read_bytes())
            if route == "flaky":
                flaky_counts[name] = flaky_counts.get(name, 0) + 1
                if flaky_counts[name] <= 2:
                    return self._send(503, b"busy", "text/plain")
                return self._send(200, real.read_bytes())
            if route == "stall":
                self.send_response(200)
                self.send_header("Content-Length", str(real.stat().st_size))
                self.end_headers()
                self.wfile.write(real.read_bytes()[:100])
                self.wfile.flush()
                stop.wait(10)  # never finishes while the test runs
                return None
            return self._send(404, b"unknown route", "text/plain")

    return Handler


@pytest.fixture
def course_server(course_data: Path) -> Iterator[CourseServer]:
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    state = CourseServer(base=f"http://127.0.0.1:{server.server_address[1]}", files=course_data)
    server.RequestHandlerClass = _handler(state, stop, {})
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    stop.set()
    state.gate.set()
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port_url() -> str:
    """An address on 127.0.0.1 where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


# --- servers and workers the tests start ------------------------------------------------


def child_env(**extra: str | None) -> dict[str, str]:
    """os.environ with this virtual environment first on PATH, plus ``extra`` (None: unset): for the processes tests start."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}
    return {key: value for key, value in env.items() if value is not None}


@contextlib.contextmanager
def background(
    cmd: list[str], cwd: Path, env: dict[str, str], ready: Callable[[], bool], log: Path, timeout: float = 90
) -> Iterator[subprocess.Popen]:
    """A server or worker process, ready once ``ready()`` holds; stopped with all its children on exit.

    Its output goes to ``log``, whose tail is shown if it exits early or never gets ready."""
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(
                    f"{' '.join(cmd)} {'exited ' + str(process.returncode) if process.poll() is not None else 'never got ready'}:\n{tail}"
                )
            time.sleep(0.3)
        yield process
    finally:
        # SIGINT, as Ctrl-C would: a Prefect worker shuts down on it but not on SIGTERM.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class S3Server:
    """moto's S3-compatible server on 127.0.0.1 and the credentials it accepts (any, in server mode)."""

    endpoint: str
    env: dict[str, str]

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "pokegen-test",
        "AWS_SECRET_ACCESS_KEY": "pokegen-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with background(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        log.parent,
        child_env(),
        lambda: answers(f"{endpoint}/moto-api/"),
        log,
    ):
        yield S3Server(endpoint, credentials)


# --- synthetic sprites -----------------------------------------------------------------


def make_sprite(seed: int, size: int = 40, mode: str = "RGBA") -> Image.Image:
    """A small blob sprite on a transparent background, a few colors, like a Pokémon sprite."""
    rng = np.random.default_rng(seed)
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(3):
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [int(rng.integers(size // 8, size // 3))]
        color = rng.integers(0, 256, 3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        rgba[mask, :3] = color
        rgba[mask, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE)
    return image


def png_bytes_of(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def sprite_zip(count: int = 24, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            fmt = "GIF" if i % 5 == 4 else "PNG"
            archive.writestr(f"sprites/{i:03d}.{fmt.lower()}", png_bytes_of(make_sprite(i), fmt))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def sprite_archive(tmp_path: Path) -> Path:
    path = tmp_path / "my-sprites.zip"
    path.write_bytes(sprite_zip())
    return path


# --- DVC repositories --------------------------------------------------------------------


def run(
    cmd: list[str], cwd: Path, env: dict[str, str | None] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with the test's virtual environment first on PATH; output captured as text."""
    result = subprocess.run(cmd, cwd=cwd, env=child_env(**(env or {})), capture_output=True, text=True, timeout=600, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


# The built-in models at a size that trains in seconds (the real sizes are the point of the benchmarks).
TINY_MODELS = {
    "pixelrnn": {"hidden": 16, "train": {"epochs": 2, "batch_size": 64, "lr": 0.01}},
    "vae": {"latent_dim": 10, "channels": 8, "embed": 4, "head_channels": 8, "iw_samples": 4, "train": {"epochs": 2, "batch_size": 64}},
    "gan": {"channels": 8, "latent_dim": 8, "train": {"epochs": 2, "batch_size": 64}},
}  # the DAG's tests need three: the fourth built-in (transformer) is tested in test_plugins and test_evaluation


# Evaluation at a size that runs in seconds: fewer samples, smaller pictures.
TINY_EVALUATE = {
    "samples": 32,
    "grid": 16,
    "completion_rows": 4,
    "scale": 2,
    "latent_grid": {"dims": [0, 1], "fixed": 0.0, "span": 2.0, "steps": 4},
    "judge": {"seeds": 1},  # its known answers are tests/test_judge.py's, on three seeds
}


# --- a tiny trained repository (test_evaluation, test_explore) ------------------------------------------

BASELINES = {"neighbours": {}, "frequencies": {}}  # plugins, trained and evaluated like any model
TOY_MODELS = {
    "pixelrnn": {"hidden": 16, "train": {"epochs": 2, "batch_size": 16}},
    "vae": {"channels": 8, "embed": 4, "head_channels": 8, "iw_samples": 4, "train": {"epochs": 2, "batch_size": 16}},
    "gan": {"channels": 8, "latent_dim": 8, "train": {"epochs": 1, "batch_size": 16}},
    "transformer": {"width": 16, "layers": 1, "heads": 2, "train": {"epochs": 2, "batch_size": 16}},
}
EVALUATE = {"samples": 24, "grid": 9, "completion_rows": 3, "scale": 3, "nearest_k": 3, "latent_grid": {"steps": 4}, "judge": {"seeds": 2}}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a small data set (10x10 sprites, 6 colors) and the four built-ins and two baselines trained on
    it. Shared by the tests of evaluate, the CLI and the explorer: they add evaluations, never change a model."""
    import json

    import yaml

    from pokegen.artifacts import SpriteDataset
    from pokegen.layout import Layout
    from pokegen.tensorize import data_card
    from pokegen.testing import toy_sprites

    repo = tmp_path_factory.mktemp("trained")
    data = toy_sprites(count=64, colors=6, size=10)
    palette = np.array([[255, 255, 255], [200, 40, 40], [40, 160, 40], [40, 40, 200], [240, 200, 0], [20, 20, 20]], dtype=np.uint8)
    splits = {"train": data[:44], "val": data[44:52], "test": data[52:]}
    dataset = SpriteDataset(palette, splits, {k: tuple(f"{k}{i}" for i in range(len(v))) for k, v in splits.items()})
    dataset.save(Layout(repo).dataset)
    Layout(repo).data_card.write_text(json.dumps(data_card(dataset, seed=0, quantized_sha256="0" * 64)))
    models = {**TOY_MODELS, **BASELINES}
    sample = {name: {"completion_candidates": 2} if name == "transformer" else {} for name in models}
    params = {
        "quantize": {"side": 10},
        "tensorize": {"val": 8, "test": 12},
        "pipeline": {"models": list(models)},
        "models": models,
        "sample": sample,
        "evaluate": EVALUATE,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    for name in models:
        run(["pokegen", "train", name], repo)
    return repo



CODE_FOLDERS = ("src/pokegen", "plugins", "flows")  # the code a clone holds (the worker checks it is what runs)


def make_repo(path: Path, models: dict | None = None, **sections: dict) -> Path:
    """A temporary git repository holding the project's pipeline files and code (not its data or lock).

    Its params.yaml is the project's, with tiny models (or ``models``), a tiny evaluation and any ``sections`` merged in.
    The pokegen that runs is the installed one; see ``runs_its_own_code`` to run the copy.
    """
    import yaml

    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, path / name)
    for folder in CODE_FOLDERS:
        shutil.copytree(REPO_ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["models"] = models if models is not None else TINY_MODELS
    params["pipeline"] = {"models": list(params["models"])}
    params["sample"] = {name: params["sample"].get(name, {}) for name in params["models"]}  # how each draws
    params["evaluate"].update(TINY_EVALUATE)
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "pipeline"], path)
    return path


def runs_its_own_code(repo: Path) -> dict[str, str]:
    """Environment under which pokegen (core and built-in plugins) is imported from ``repo``'s copy, as from
    an editable install of that clone: the installed distribution's entry points name modules, found first here."""
    link = repo / "src" / "pokegen" / "plugins"
    if not link.is_symlink():
        link.symlink_to(Path("..", "..", "plugins"), target_is_directory=True)  # relative: copies keep it
    return {"PYTHONPATH": str(repo / "src")}


def set_param(repo: Path, dotted: str, value: object) -> None:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# Who commits in tests that run git commands as a user would (a CI machine may have no git identity).
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Ash",
    "GIT_AUTHOR_EMAIL": "ash@example.com",
    "GIT_COMMITTER_NAME": "Ash",
    "GIT_COMMITTER_EMAIL": "ash@example.com",
}


def stages_run(dvc_output: str) -> list[str]:
    """The stages a `dvc repro` (or `dvc exp run`) ran, in order, read from what it printed."""
    return [line.split("'")[1] for line in dvc_output.splitlines() if line.startswith("Running stage '")]


def stale_stages(repo: Path) -> dict:
    """`dvc status` as {stage: changes}, less the check stage that DVC lists on every call ("always changed"):
    {} when every stage is up to date."""
    import json

    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    return {stage: changes for stage, changes in status.items() if changes != ["always changed"]}


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory, course_data: Path) -> tuple[Path, str]:
    """One `dvc repro` of the whole DAG (tiny models) in a temporary git repo, and what it printed.

    Tests work on copies of it (or compare against it), so the session pays for one full run, not one per test."""
    repo = make_repo(tmp_path_factory.mktemp("reproduced") / "clone")
    first = run(["dvc", "repro"], repo, env={"POKEGEN_DATA_MIRROR": str(course_data)})
    return repo, first.stdout
