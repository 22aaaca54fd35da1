"""`pokegen explore`: the real server on 127.0.0.1 over a tiny trained repository, its API and its page in
Debian's Chromium (driven by playwright through executable_path: playwright's own browser download is not used)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import background, child_env, free_port, run

from pokegen.layout import Layout

MISSING = "frequencies"  # in pipeline.models, but its trained outputs are not here
BUILT_INS = ["pixelrnn", "vae", "gan", "transformer"]


class Server:
    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=60)


# The tiny VAE trained in seconds on toy sprites decodes every code to the same sprite, so a slider could not show
# anything. A plugin whose decode is known stands in for it in the slider test: code dimension d paints the columns
# d, d + 4, ... with a color that grows with its value. What that test checks is the page, not a model.
DIAL = """
import numpy as np
from pydantic import BaseModel, ConfigDict
from pokegen.plugin import FitResult, GenerativeModel


class DialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dial(GenerativeModel):
    name = "dial"
    Config = DialConfig
    dims = 4

    def fit(self, train, val, settings, context):
        return FitResult([{"loss": 0.0}], best_epoch=1)

    def encode(self, images):
        return np.zeros((len(images), self.dims), dtype=np.float32)

    def decode(self, codes):  # as docs/plugins.md writes it: no seed
        levels = np.clip(((np.asarray(codes) + 3) / 6 * self.colors).astype(int), 0, self.colors - 1)
        columns = levels[:, np.arange(self.size) % self.dims]
        return np.repeat(columns[:, None, :], self.size, axis=1).astype(np.uint8)

    def sample(self, n, seed=0):
        return self.decode(np.random.default_rng(seed).standard_normal((n, self.dims)))

    def state(self):
        return {"nothing": np.zeros(1, dtype=np.float32)}

    def load_state(self, tensors):
        pass
"""


@pytest.fixture(scope="module")
def server(trained: Path, tmp_path_factory: pytest.TempPathFactory):
    """`pokegen explore` on a copy of the trained repository with the dial beside the built-ins, and one model of
    pipeline.models never trained there."""
    base = tmp_path_factory.mktemp("explore")
    repo, site = base / "repo", base / "site"
    shutil.copytree(trained, repo)
    shutil.rmtree(Layout(repo).model_dir(MISSING))
    info = site / "pokegen_dial-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pokegen-dial\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pokegen.models]\ndial = pokegen_dial:Dial\n")
    (site / "pokegen_dial.py").write_text(DIAL)
    env = child_env(PYTHONPATH=str(site))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pipeline"]["models"].append("dial")
    params["models"]["dial"], params["sample"]["dial"] = {}, {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(["pokegen", "train", "dial"], repo, env={"PYTHONPATH": str(site)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = base / "explore.log"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with background(["pokegen", "explore", "--port", str(port)], repo, env, up, log):
        yield Server(url, log)


def test_it_binds_this_machine_only_and_names_the_model_that_is_not_trained(server: Server) -> None:
    assert f"serving on {server.url}/" in server.log.read_text()
    info = server.get("/api/info").json()
    ready = {model["name"]: model for model in info["models"] if model["ready"]}
    assert sorted(ready) == sorted([*BUILT_INS, "neighbours", "dial"])
    (missing,) = [model for model in info["models"] if not model["ready"]]
    assert missing["name"] == MISSING and f"dvc repro train@{MISSING}" in missing["problem"] and "dvc pull" in missing["problem"]
    assert ready["vae"]["latent_dims"] == 10 and ready["gan"]["latent_dims"] == 0
    assert ready["pixelrnn"]["completes"] and not ready["vae"]["completes"]
    assert set(ready["transformer"]["sampling"]) == {"temperature", "new_color_penalty", "completion_candidates"}
    assert info["side"] == 10 and len(info["palette"]) == 6
    page = server.get("/").text
    assert "<canvas id=\"canvas\"" in page and "http" not in page.split("<script>", 1)[1], "nothing fetched from elsewhere"


def test_the_same_seed_draws_the_same_sprites_and_sampling_settings_change_them(server: Server) -> None:
    first = server.post("/api/sample", {"model": "pixelrnn", "seed": 7, "count": 6}).json()["sprites"]
    assert server.post("/api/sample", {"model": "pixelrnn", "seed": 7, "count": 6}).json()["sprites"] == first
    assert server.post("/api/sample", {"model": "pixelrnn", "seed": 8, "count": 6}).json()["sprites"] != first
    hot = server.post("/api/sample", {"model": "pixelrnn", "seed": 7, "count": 6, "sampling": {"temperature": 3.0}}).json()
    assert hot["sprites"] != first, "the request's temperature is used"
    assert server.post("/api/sample", {"model": "pixelrnn", "seed": 7, "count": 6}).json()["sprites"] == first, "and not kept"
    assert np.asarray(first).shape == (6, 10, 10) and np.asarray(first).max() < 6


def test_completion_fills_the_erased_pixels_and_keeps_the_others(server: Server) -> None:
    sprite = server.get("/api/test-sprite/0").json()["sprite"]
    erased = np.zeros((10, 10), dtype=bool)
    erased[2:7, 0:5] = True  # a block on the left: not a raster suffix
    blank = np.asarray(sprite)
    blank[erased] = 0
    for name in ("pixelrnn", "transformer"):
        filled = np.asarray(server.post("/api/complete", {"model": name, "sprite": blank.tolist(), "erased": erased.tolist(), "seed": 3}).json()["sprite"])
        assert np.array_equal(filled[~erased], blank[~erased]), f"{name}: the known pixels stay"
        assert filled.shape == (10, 10) and filled.max() < 6


def test_the_latent_grid_sweeps_two_dims_and_the_nearest_sprite_of_a_training_sprite_is_itself(server: Server, trained: Path) -> None:
    code = next(m for m in server.get("/api/info").json()["models"] if m["name"] == "vae")["start_code"]
    grid = server.post("/api/latent-grid", {"model": "vae", "code": code, "dims": [0, 3], "steps": 3}).json()
    assert len(grid["sprites"]) == 9 and grid["values"] == [-2.0, 0.0, 2.0]
    from pokegen.artifacts import SpriteDataset

    train = SpriteDataset.load(Layout(trained).dataset).splits["train"]
    found = server.post("/api/nearest", {"sprite": train[5].tolist()}).json()
    assert found["distance"] == 0.0 and np.array_equal(train[found["index"]], train[5])


BAD = [
    ("/api/sample", {"model": "nope"}, 404, "model 'nope' is not in pipeline.models (known: "),
    ("/api/sample", {"model": "../../params.yaml"}, 422, "model: String should match pattern"),
    ("/api/sample", {"model": MISSING}, 409, f"dvc repro train@{MISSING}"),
    ("/api/sample", {"model": "gan", "seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ("/api/sample", {"model": "gan", "count": 100000}, 422, "count: Input should be less than or equal to 64"),
    ("/api/sample", {"model": "pixelrnn", "sampling": {"temperature": 0}}, 422, "temperature: Input should be greater than 0"),
    ("/api/sample", {"model": "gan", "file": "/etc/passwd"}, 422, "file: Extra inputs are not permitted"),
    ("/api/complete", {"model": "pixelrnn", "sprite": [[0] * 10] * 9, "erased": [[False] * 10] * 10}, 422, "sprite: expected 10 rows of 10, got 9 rows"),
    ("/api/complete", {"model": "pixelrnn", "sprite": [[0] * 10] * 10, "erased": [[False] * 10] * 11}, 422, "erased: expected 10 rows of 10"),
    ("/api/complete", {"model": "pixelrnn", "sprite": [[0] * 9 + [6]] + [[0] * 10] * 9, "erased": [[False] * 10] * 10}, 422, "sprite[0][9] = 6: a palette index is 0 to 5"),
    ("/api/complete", {"model": "vae", "sprite": [[0] * 10] * 10, "erased": [[False] * 10] * 10}, 422, "cannot fill any erased region (these can: pixelrnn"),
    ("/api/decode", {"model": "vae", "code": [0.0] * 3}, 422, "model 'vae' has 10 code dimensions, got 3"),
    ("/api/decode", {"model": "gan", "code": [0.0] * 8}, 422, "model 'gan' has no latent code to decode"),
    ("/api/latent-grid", {"model": "vae", "code": [0.0] * 10, "dims": [2, 2]}, 422, "dims: two different code dimensions, 0 to 9"),
    ("/api/nearest", {"sprite": [[-1] * 10] * 10}, 422, "sprite[0][0] = -1"),
    ("/api/nearest", {"sprite": [[10**30] * 10] * 10}, 422, "sprite.0.0: Input should be less than or equal to 65535"),
    ("/api/complete", {"model": "transformer", "sprite": [[0] * 10] * 10, "erased": [[True] * 10] * 10, "sampling": {"completion_candidates": 100000}},
     422, "sampling.completion_candidates: Input should be less than or equal to 64"),
    ("/api/sample", {"model": "pixelrnn", "sampling": {"temperature": 1e-40}}, 422, "sampling.temperature: Value error, 0, or at least"),
    ("/api/sample", {"model": "pixelrnn", "sampling": {"temperature": 1e39}}, 422, "sampling.temperature: Input should be less than or equal to 64"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD, ids=[m.split(":")[0][:40] for *_, m in BAD])
def test_bad_input_gets_a_4xx_naming_what_was_wrong_and_the_server_keeps_serving(server: Server, path, body, status, message) -> None:
    answer = server.post(path, body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert server.get("/api/info").status_code == 200


def test_malformed_json_an_oversized_body_and_a_test_sprite_out_of_range_are_refused(server: Server) -> None:
    answer = httpx.post(f"{server.url}/api/sample", content=b'{"model": ', headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "the body is not valid JSON" in answer.json()["error"]
    answer = httpx.post(f"{server.url}/api/nearest", content=b"[" + b"0," * 100_000 + b"0]", headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "over 65536 bytes" in answer.json()["error"]
    streamed = httpx.post(f"{server.url}/api/nearest", content=iter([b"[" + b"0," * 40_000] * 2), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, "a body without a declared length is counted as it comes"
    assert server.get("/api/test-sprite/99").status_code == 422 and "sprites 0 to 11" in server.get("/api/test-sprite/99").json()["error"]
    assert server.get("/api/info").status_code == 200


def test_sixteen_requests_at_once_give_what_each_gives_alone(server: Server) -> None:
    requests = [
        ("/api/sample", {"model": BUILT_INS[i % 4], "seed": i, "count": 3, "sampling": {"temperature": 0.8} if i % 4 in (0, 3) else {}})
        for i in range(12)
    ]
    sprite = server.get("/api/test-sprite/1").json()["sprite"]
    erased = [[column < 5 for column in range(10)] for _ in range(10)]
    requests += [("/api/complete", {"model": "transformer", "sprite": sprite, "erased": erased, "seed": i}) for i in range(4)]
    alone = [server.post(path, body).json() for path, body in requests]
    start = threading.Barrier(len(requests))

    def together(request):
        start.wait()
        return server.post(*request).json()

    with ThreadPoolExecutor(len(requests)) as pool:
        at_once = list(pool.map(together, requests))
    assert at_once == alone


# --- the page in a real browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: Server):
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()


def _sprite_of(page, selector: str) -> list:
    return page.eval_on_selector(selector, "canvas => JSON.parse(canvas.dataset.sprite)")


def test_the_page_loads_with_every_model_and_names_the_missing_one(page) -> None:
    options = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert sorted(options) == sorted([*BUILT_INS, "neighbours", "dial"])
    assert f"dvc repro train@{MISSING}" in page.inner_text(f'#status li[data-model="{MISSING}"]')
    assert page.eval_on_selector("#canvas", "c => getComputedStyle(c).imageRendering") == "pixelated"
    assert page.eval_on_selector("#canvas", "c => c.clientWidth") == 10 * 16, "an integer scale"
    assert page.inner_text("#error") == ""


def test_moving_a_slider_changes_the_picture(page) -> None:
    page.select_option("#model", "vae")
    page.wait_for_selector("#latent:not([hidden]) #decoded[data-sprite]")
    assert page.eval_on_selector_all("#sliders input.code", "inputs => inputs.length") == 10, "the VAE's 10 dims"
    page.select_option("#model", "dial")
    page.wait_for_function("() => window.explorer.busy === 0 && document.querySelectorAll('#sliders input.code').length === 4")
    before = page.eval_on_selector("#decoded", "c => c.dataset.sprite")
    assert np.asarray(json.loads(before)).max() == 3, "every code value 0 at the start: the middle color"
    page.eval_on_selector('#sliders input[data-dim="1"]', "s => { s.value = 3; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("before => document.querySelector('#decoded').dataset.sprite !== before", arg=before)
    after = np.asarray(_sprite_of(page, "#decoded"))
    assert (after[:, 1::4] == 5).all() and (after[:, 0::4] == 3).all(), "dim 1 moved, and only its columns changed"
    page.click("#grid-button")
    page.wait_for_function("() => window.explorer.busy === 0 && document.querySelector('#latent-grid').width === 5 * 11 - 1")
    page.select_option("#model", "gan")
    assert page.is_hidden("#latent"), "no code to move"


def test_drawing_erasing_and_completing_fills_the_erased_region_and_keeps_the_rest(page) -> None:
    page.fill("#test-index", "2")
    page.click("#load-test")
    page.wait_for_function("() => window.explorer.busy === 0")
    box = page.locator("#canvas").bounding_box()
    border, cell = page.eval_on_selector("#canvas", "c => [c.clientLeft, c.clientWidth / 10]")

    def at(x: int, y: int) -> tuple[float, float]:
        return box["x"] + border + (x + 0.5) * cell, box["y"] + border + (y + 0.5) * cell

    page.click('.swatch[data-index="3"]')
    page.mouse.click(*at(9, 0))  # paint: the 2-pixel brush covers (9, 0) and (9, 1); the rest is off the edge
    state = page.evaluate("() => ({pixels: explorer.pixels, erased: explorer.erased})")
    assert state["pixels"][0][9] == 3 and not state["erased"][0][9]

    page.check("#tool-erase")
    page.mouse.move(*at(1, 5))
    page.mouse.down()
    page.mouse.move(*at(6, 5), steps=8)
    page.mouse.up()
    state = page.evaluate("() => ({pixels: explorer.pixels, erased: explorer.erased})")
    erased = np.asarray(state["erased"])
    assert erased[5, 1:7].all() and erased.sum() >= 12 and not erased[0].any(), "a stroke across row 5"

    page.select_option("#model", "pixelrnn")
    page.click("#complete")
    page.wait_for_selector('#completed figure[data-model="pixelrnn"] canvas')
    filled = np.asarray(_sprite_of(page, '#completed figure[data-model="pixelrnn"] canvas'))
    known = np.asarray(state["pixels"])
    assert np.array_equal(filled[~erased], known[~erased]), "the known pixels are unchanged"
    assert filled.shape == (10, 10) and filled.max() < 6

    page.click("#complete-all")
    page.wait_for_selector('#completed figure[data-model="transformer"] canvas')
    assert page.eval_on_selector_all("#completed figure", "fs => fs.map(f => f.dataset.model)") == ["pixelrnn", "transformer"]
    page.click("#nearest")
    page.wait_for_selector("#nearest-distance")
    assert "of pixels differ" in page.inner_text("#nearest-distance")


def test_switching_models_draws_with_the_chosen_one_and_side_by_side_shows_all(page, server: Server) -> None:
    page.fill("#count", "4")
    page.fill("#seed", "5")
    drawn = {}
    for name in ("gan", "transformer"):
        page.select_option("#model", name)
        page.click("#sample")
        page.wait_for_function("() => window.explorer.busy === 0 && document.querySelectorAll('#samples canvas').length === 4")
        drawn[name] = page.evaluate("() => explorer.samples")
        assert drawn[name] == server.post("/api/sample", {"model": name, "seed": 5, "count": 4}).json()["sprites"]
    assert drawn["gan"] != drawn["transformer"]
    page.click("#side-by-side")
    page.wait_for_function("() => document.querySelectorAll('#compare .compare-row').length === 6")
    rows = page.eval_on_selector_all("#compare .compare-row", "rows => rows.map(r => [r.dataset.model, r.querySelectorAll('canvas').length])")
    assert sorted(rows) == sorted([[name, 4] for name in [*BUILT_INS, "neighbours", "dial"]])
