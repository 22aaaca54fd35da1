"""`pokegen explore`: one page in the browser over the trained models in the DVC outputs.

Sample with any seed and sampling settings, move a latent code dimension by dimension, draw on a 20x20 canvas and
let a model complete what was erased, find the nearest training sprite, and see every model side by side.

FastAPI with uvicorn serves a JSON API and one static page (explore.html: plain JavaScript, no build step, nothing
fetched from elsewhere, so it works offline). Gradio or Streamlit would bring their own widget set and a larger
dependency, and neither has a palette canvas; FastAPI and uvicorn are already installed with Prefect.

It only reads: the models, the data set and params.yaml's sample section, loaded once at start. No request names a
file: a model is looked up by name among those loaded. Bad input gets a 4xx answer whose "error" names what was wrong.
Model calls take turns on one thread (a model's sampling settings are set per request), so the same request always
gives the same sprites, however many arrive at once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from pokegen.artifacts import SpriteDataset
from pokegen.checkpoint import read_checkpoint_info
from pokegen.errors import PokegenError
from pokegen.evaluation import nearest_hamming
from pokegen.fileio import sha256_file
from pokegen.layout import Layout
from pokegen.params import load_params
from pokegen.plugin import GenerativeModel
from pokegen.trained import load_trained, sampling_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_COUNT = 64  # sprites per sample request
MAX_BODY_BYTES = 64 * 1024  # a 20x20 sprite and its mask in JSON are ~3 KB
MAX_SEED = 2**31 - 1
CODE_LIMIT = 10.0  # a code value further out than this from a standard normal is not a code
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
# A request's sampling settings are checked by the plugin's own Sampling model, and held to what a person playing
# would ask for, so that no request can keep the one model thread busy for minutes (100,000 completion candidates)
# or overflow the arithmetic (a temperature of 1e-40): within SAMPLING_LIMIT of 0 and, unless 0, at least
# 1 / SAMPLING_LIMIT away from it.
SAMPLING_LIMIT = 64.0


def _not_vanishing(value: float) -> float:
    if value and abs(value) < 1 / SAMPLING_LIMIT:
        raise ValueError(f"0, or at least {1 / SAMPLING_LIMIT:g} away from 0 (closer overflows the arithmetic)")
    return value


SamplingValue = Annotated[float, Field(ge=-SAMPLING_LIMIT, le=SAMPLING_LIMIT, allow_inf_nan=False), AfterValidator(_not_vanishing)]
SamplingValues = Annotated[dict[Annotated[str, StringConstraints(max_length=64)], SamplingValue], Field(max_length=16)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRequest(_Request):
    model: ModelName
    seed: Seed = 0
    count: int = Field(16, ge=1, le=MAX_COUNT)
    sampling: SamplingValues = {}


class DecodeRequest(_Request):
    model: ModelName
    code: list[Annotated[float, Field(ge=-CODE_LIMIT, le=CODE_LIMIT)]] = Field(max_length=1024)
    seed: Seed = 0
    sampling: SamplingValues = {}


class LatentGridRequest(_Request):
    model: ModelName
    code: list[Annotated[float, Field(ge=-CODE_LIMIT, le=CODE_LIMIT)]] = Field(max_length=1024)
    dims: tuple[int, int]
    steps: int = Field(5, ge=2, le=9)
    span: float = Field(2.0, gt=0, le=CODE_LIMIT)
    seed: Seed = 0
    sampling: SamplingValues = {}


Grid = list[list[Annotated[int, Field(ge=-65535, le=65535)]]]  # palette indices; the range is checked against the palette


class CompleteRequest(_Request):
    model: ModelName
    sprite: Grid = Field(max_length=256)
    erased: list[list[bool]] = Field(max_length=256)  # True: fill this pixel
    seed: Seed = 0
    sampling: SamplingValues = {}


class NearestRequest(_Request):
    sprite: Grid = Field(max_length=256)


@dataclass
class Loaded:
    """One model of pipeline.models: loaded, or why not and what brings it."""

    name: str
    model: GenerativeModel | None = None
    problem: str | None = None
    latent_dims: int = 0
    start_code: list[float] = field(default_factory=list)
    settings: BaseModel | None = None  # sample.NAME, as loaded (model.sampling changes per request on the model thread)

    def describe(self) -> dict[str, Any]:
        if self.model is None:
            return {"name": self.name, "ready": False, "problem": self.problem}
        sampling = self.model.Sampling()  # the plugin's defaults, beside sample.NAME's (self.settings)
        return {
            "name": self.name,
            "ready": True,
            "sampling": {
                key: {"value": getattr(self.settings, key), "default": getattr(sampling, key), "description": info.description or ""}
                for key, info in self.model.Sampling.model_fields.items()
            },
            "latent_dims": self.latent_dims,
            "start_code": self.start_code,
            "completes": self.completes,
        }

    @property
    def completes(self) -> bool:
        """It fills any erased region, not only the lower rows."""
        return self.model is not None and "complete" in self.model.capabilities() and self.model.completes_any_mask


class Explorer:
    """The models of pipeline.models and the data set, as the DVC outputs in ``root`` hold them."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(root)
        self.params = load_params(self.layout.params, check_models=False)
        self.dataset = SpriteDataset.load(self.layout.dataset)
        self.side = int(self.dataset.splits["train"].shape[1])
        self.colors = len(self.dataset.palette)
        # Every model call runs on this one thread, with one torch thread: torch's CPU thread pools, one per calling
        # thread, slowed each other 3x (a Transformer sprite: 1.45 s against 0.45 s; benchmarks/RESULTS.md).
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="pokegen-models", initializer=torch.set_num_threads, initargs=(1,))
        self.models = self.worker.submit(lambda: {name: self._load(name) for name in self.params.pipeline.models}).result()

    def _load(self, name: str) -> Loaded:
        try:
            model = load_trained(self.layout, self.params, name)
        except PokegenError as error:
            return Loaded(name, problem=str(error))
        trained_on = read_checkpoint_info(self.layout.model_dir(name)).get("data_sha256")
        if trained_on != sha256_file(self.layout.dataset):  # its palette indices would not be this palette's
            return Loaded(name, problem=f"it was trained on other data than {self.layout.dataset}; re-train it: dvc repro train@{name}")
        loaded = Loaded(name, model, settings=model.sampling)
        if "decode" in model.capabilities():
            test = self.dataset.splits["test"][:1]
            if "encode" in model.capabilities():  # the sliders start at a real sprite's code
                loaded.start_code = [round(float(value), 3) for value in model.encode(test)[0]]
            else:
                loaded.start_code = [0.0] * int(model.config.latent_dim)
            loaded.latent_dims = len(loaded.start_code)
        return loaded

    def info(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "palette": self.dataset.palette.tolist(),
            "test_sprites": len(self.dataset.splits["test"]),
            "max_count": MAX_COUNT,
            "models": [loaded.describe() for loaded in self.models.values()],
        }

    def ready(self, name: str) -> Loaded:
        """The loaded model ``name``; 404 naming the known ones, or 409 saying what brings a missing one."""
        loaded = self.models.get(name)
        if loaded is None:
            raise HTTPException(404, f"model {name!r} is not in pipeline.models (known: {', '.join(self.models)})")
        if loaded.model is None:
            raise HTTPException(409, f"model {name!r} is not available: {loaded.problem}")
        return loaded

    def draw(self, name: str, sampling: dict, work: Callable[[GenerativeModel], T]) -> T:
        """``work(model)`` with the model drawing as sample.NAME and ``sampling`` say, on the one thread that runs
        every model call: requests take turns, so the same request always gives the same sprites."""
        loaded = self.ready(name)
        model = loaded.model
        try:
            settings = sampling_settings(model, self.params.sample.get(name) or {}, sampling, "the request's sampling")
        except PokegenError as error:
            raise HTTPException(422, str(error)) from None

        def with_settings() -> T:
            before, model.sampling = model.sampling, settings
            try:
                return work(model)
            finally:
                model.sampling = before

        try:
            return self.worker.submit(with_settings).result()
        except (RuntimeError, ValueError, ArithmeticError) as error:  # the model could not draw with these settings
            log.warning("model %s could not draw: %s: %s", name, type(error).__name__, error)
            raise HTTPException(422, f"model {name!r} could not draw with these settings ({type(error).__name__}: {error})") from None

    def sprite(self, grid: Grid, what: str) -> np.ndarray:
        """A side x side grid of palette indices; 422 naming the shape or the index that is wrong."""
        self._shape(grid, what)
        array = np.asarray(grid, dtype=np.int64)
        bad = np.argwhere((array < 0) | (array >= self.colors))
        if len(bad):
            row, column = bad[0]
            raise HTTPException(422, f"{what}[{row}][{column}] = {array[row, column]}: a palette index is 0 to {self.colors - 1}")
        return array.astype(np.uint8)

    def _shape(self, grid: list, what: str) -> None:
        rows = [len(row) for row in grid]
        if len(rows) != self.side or any(length != self.side for length in rows):
            raise HTTPException(422, f"{what}: expected {self.side} rows of {self.side}, got {len(rows)} rows of {sorted(set(rows)) or [0]}")

    def code(self, loaded: Loaded, code: list[float]) -> np.ndarray:
        if len(code) != loaded.latent_dims:
            raise HTTPException(422, f"code: model {loaded.name!r} has {loaded.latent_dims} code dimensions, got {len(code)}")
        return np.asarray([code], dtype=np.float32)

    def decoder(self, name: str) -> Loaded:
        loaded = self.ready(name)
        if not loaded.latent_dims:
            raise HTTPException(422, f"model {name!r} has no latent code to decode (its capabilities: {', '.join(loaded.model.capabilities())})")
        return loaded


def _decode(model: GenerativeModel, codes: np.ndarray, seed: int) -> np.ndarray:
    """decode(codes), with the seed where the plugin takes one (a decoder that draws pixel by pixel)."""
    if "seed" in inspect.signature(model.decode).parameters:
        return model.decode(codes, seed=seed)
    return model.decode(codes)


def _sprites(images: np.ndarray) -> list[Grid]:
    return np.asarray(images, dtype=np.int64).tolist()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        if error["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})")
        else:
            problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


class _BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed: the body is read here first (it is small)
    and handed on whole, so no endpoint ever reads more than ``limit``."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, f"the request body is over {self.limit} bytes")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await too_large(scope, receive, send)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await too_large(scope, receive, send)
            more = message.get("more_body", False)
        handed = False

        async def replay():
            nonlocal handed
            if handed:
                return await receive()
            handed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def create_app(root: Path) -> FastAPI:
    """The explorer's app over the DVC outputs in ``root`` (the models are loaded now, not per request)."""
    explorer = Explorer(root)
    page = resources.files("pokegen").joinpath("explore.html").read_text(encoding="utf-8")
    app = FastAPI(title="pokegen explore", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = explorer

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict:
        return explorer.info()

    @app.get("/api/test-sprite/{index}")
    def test_sprite(index: int) -> dict:
        test = explorer.dataset.splits["test"]
        if not 0 <= index < len(test):
            raise HTTPException(422, f"index: the test split has sprites 0 to {len(test) - 1}, got {index}")
        return {"sprite": _sprites(test[index])}

    @app.post("/api/sample")
    def sample(request: SampleRequest) -> dict:
        sprites = explorer.draw(request.model, request.sampling, lambda model: model.sample(request.count, request.seed))
        return {"sprites": _sprites(sprites)}

    @app.post("/api/decode")
    def decode(request: DecodeRequest) -> dict:
        loaded = explorer.decoder(request.model)
        code = explorer.code(loaded, request.code)
        sprites = explorer.draw(request.model, request.sampling, lambda model: _decode(model, code, request.seed))
        return {"sprite": _sprites(sprites[0])}

    @app.post("/api/latent-grid")
    def latent_grid(request: LatentGridRequest) -> dict:
        """The lecture's picture: two code dimensions swept over -span..span, the others held at ``code``."""
        loaded = explorer.decoder(request.model)
        code = explorer.code(loaded, request.code)[0]
        first, second = request.dims
        if not (0 <= first < loaded.latent_dims and 0 <= second < loaded.latent_dims) or first == second:
            raise HTTPException(422, f"dims: two different code dimensions, 0 to {loaded.latent_dims - 1}; got {list(request.dims)}")
        values = np.linspace(-request.span, request.span, request.steps)
        codes = np.repeat(code[None], request.steps**2, axis=0)
        codes[:, first] = np.repeat(values, request.steps)  # down the rows
        codes[:, second] = np.tile(values, request.steps)  # along the columns
        sprites = explorer.draw(request.model, request.sampling, lambda model: _decode(model, codes, request.seed))
        return {"sprites": _sprites(sprites), "columns": request.steps, "values": values.round(3).tolist()}

    @app.post("/api/complete")
    def complete(request: CompleteRequest) -> dict:
        loaded = explorer.ready(request.model)
        if not loaded.completes:
            able = [name for name, other in explorer.models.items() if other.completes]
            raise HTTPException(422, f"model {request.model!r} cannot fill any erased region (these can: {', '.join(able) or 'none'})")
        sprite = explorer.sprite(request.sprite, "sprite")
        explorer._shape(request.erased, "erased")
        erased = np.asarray(request.erased, dtype=bool)
        filled = explorer.draw(request.model, request.sampling, lambda model: model.complete(sprite[None], erased[None], seed=request.seed))[0]
        filled = np.where(erased, filled, sprite)  # what was not erased stays as drawn, whatever the model did
        return {"sprite": _sprites(filled)}

    @app.post("/api/nearest")
    def nearest(request: NearestRequest) -> dict:
        sprite = explorer.sprite(request.sprite, "sprite")
        train = explorer.dataset.splits["train"]
        distance, index = nearest_hamming(sprite[None], train)
        return {
            "index": int(index[0]),
            "name": explorer.dataset.names["train"][int(index[0])],
            "distance": float(distance[0]),  # the share of pixels that differ
            "sprite": _sprites(train[int(index[0])]),
        }

    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    return app


def serve(root: Path, host: str, port: int) -> None:
    """Load the models, bind ``host``:``port`` (0: any free port), say the address, then serve until interrupted."""
    import socket

    import uvicorn

    app = create_app(root)
    for loaded in app.state.explorer.models.values():
        if loaded.model is None:
            log.warning("%s: %s", loaded.name, loaded.problem)
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (0 would cost every
    # answer ~40 ms of delayed ACK).
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    listening.listen(128)  # before saying where: a client that reacts to the line finds it listening
    bound_host, bound_port = listening.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"pokegen explore: serving on http://{shown}:{bound_port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listening])
