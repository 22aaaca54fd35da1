"""The `pokegen` command. Errors users can fix print as one message and exit 2, never as a traceback."""

from __future__ import annotations

import logging
import sys
import warnings
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from pokegen.errors import ParamsError, PokegenError
from pokegen.layout import Layout
from pokegen.params import load_models, load_params
from pokegen.stages import DATA_STAGES, run_stage

app = typer.Typer(help="pokegen: teach machines to create Pokémon.", no_args_is_help=True, add_completion=False)
params_app = typer.Typer(help="Inspect params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
stderr = Console(stderr=True)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="params file; its folder is the repository root")


StageName = Enum("StageName", {name: name for name in DATA_STAGES}, type=str)  # `pokegen stage NAME`


def _setup_logging() -> None:
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs captured by DVC, CI or a file: one plain line each, no wrapping
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # A plugin on a deprecated part of the contract: said once, in the log, while it still works.
    from pokegen.plugin import PluginAPIDeprecationWarning

    warnings.simplefilter("default", PluginAPIDeprecationWarning)
    logging.captureWarnings(True)


def _fail(error: PokegenError) -> None:
    stderr.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def stage(name: StageName, params_path: Path = ParamsOption) -> None:
    """Run one data stage (what dvc.yaml calls); `check` validates params.yaml and fingerprints the plugins."""
    _setup_logging()
    try:
        layout = Layout(params_path.resolve().parent)
        # Validated before any work (check validates the models' settings too, so it reads the file itself).
        params = None if name.value == "check" else load_params(params_path, check_models=False)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as progress:
            bars: dict[str, int] = {}

            def on_progress(file: str, done: int, total: int | None) -> None:  # the files a download fetches
                if file not in bars:
                    bars[file] = progress.add_task(file, total=total)
                progress.update(bars[file], completed=done, total=total)

            run_stage(name.value, params=params, layout=layout, on_progress=on_progress)
    except PokegenError as error:
        _fail(error)


@app.command()
def train(name: str = typer.Argument(..., help="a model listed in pipeline.models"), params_path: Path = ParamsOption) -> None:
    """Train one model plugin (what dvc.yaml's train@NAME calls); resumes an interrupted run."""
    from pokegen.plugin import FitContext

    _setup_logging()
    try:
        params, specs = load_models(params_path)
        _check_listed(params, name)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as progress:
            bars: dict[int, int] = {}

            def on_batch(epoch: int, batch: int, batches: int) -> None:
                if epoch not in bars:
                    bars[epoch] = progress.add_task(f"{name} epoch {epoch}", total=batches)
                progress.update(bars[epoch], completed=batch)

            context = FitContext(on_batch=on_batch)
            run_stage("train", spec=specs[name], layout=Layout(params_path.resolve().parent), context=context)
    except PokegenError as error:
        _fail(error)


@app.command("evaluate")
def evaluate_model(name: str = typer.Argument(..., help="a trained model listed in pipeline.models"), params_path: Path = ParamsOption) -> None:
    """Evaluate one trained model on the test split and draw its pictures (what dvc.yaml's evaluate@NAME calls)."""
    _setup_logging()
    try:
        params, specs = load_models(params_path)
        _check_listed(params, name)
        run_stage("evaluate", params=params, layout=Layout(params_path.resolve().parent), spec=specs[name])
    except PokegenError as error:
        _fail(error)


@app.command("report")
def report_command(params_path: Path = ParamsOption) -> None:
    """Write reports/index.html and reports/report.md comparing every evaluated model (what dvc.yaml's report calls)."""
    _setup_logging()
    try:
        params, specs = load_models(params_path)
        run_stage("report", params=params, layout=Layout(params_path.resolve().parent), specs=specs)
    except PokegenError as error:
        _fail(error)


def _check_listed(params, name: str) -> None:
    if name not in params.pipeline.models:
        raise ParamsError(f"pipeline.models: {name!r} is not listed (listed: {', '.join(params.pipeline.models)})")


def _trained(name: str, params_path: Path, sampling: list[str] | None = None):
    """The trained model NAME from the DVC outputs, drawing as sample.NAME says with the ``sampling`` KEY=VALUE
    overrides, and the data set it was trained on (for the palette)."""
    from pokegen.artifacts import SpriteDataset
    from pokegen.trained import load_trained, parse_overrides

    params = load_params(params_path, check_models=False)  # only the trained checkpoint's own config matters here
    layout = Layout(params_path.resolve().parent)
    model = load_trained(layout, params, name, parse_overrides(sampling or []))
    return params, model, SpriteDataset.load(layout.dataset)


def _save_picture(image, output: Path) -> None:
    from pokegen.fileio import write_bytes_atomic
    from pokegen.images import png_bytes

    write_bytes_atomic(output, png_bytes(image))
    typer.echo(f"wrote {output} ({image.width}x{image.height})")


def _needs(model, capability: str, name: str) -> None:
    if capability not in model.capabilities():
        raise PokegenError(f"model {name!r} cannot {capability} (its capabilities: {', '.join(model.capabilities()) or 'sampling only'})")


OutputOption = typer.Option(..., "--output", "-o", help="PNG file to write")
ScaleOption = typer.Option(4, min=1, max=32, help="picture pixels per sprite pixel")
SamplingOption = typer.Option(
    None, "--sampling", "-s", help="a sampling setting, KEY=VALUE (temperature=0.9); default: params.yaml's sample.NAME"
)
SeedOption = typer.Option(0, min=0, help="the same seed draws the same sprites")


@app.command()
def sample(
    name: str = typer.Argument(..., help="a trained model"),
    n: int = typer.Option(64, "-n", min=1, max=4096, help="how many sprites"),
    seed: int = SeedOption,
    output: Path = OutputOption,
    scale: int = ScaleOption,
    sampling: list[str] | None = SamplingOption,
    params_path: Path = ParamsOption,
) -> None:
    """Draw N new sprites as one grid picture."""
    from pokegen.images import palette_grid

    try:
        _, model, dataset = _trained(name, params_path, sampling)
        sprites = model.sample(n, seed=seed)
        _save_picture(palette_grid(sprites, dataset.palette, columns=int(n**0.5 + 0.999), scale=scale), output)
    except PokegenError as error:
        _fail(error)


@app.command()
def complete(
    name: str = typer.Argument(..., help="a trained model that can complete"),
    cover: float = typer.Option(0.5, help="share of rows covered at the bottom, between 0 and 1"),
    mask_shape: str | None = typer.Option(
        None, "--mask", help="cover instead: left (half), centre or scattered, for models that fill any mask (pixelrnn, transformer)"
    ),
    image: Path | None = typer.Option(None, help="your own sprite (PNG/GIF), cut and quantized like the training data; default: test sprites"),
    n: int = typer.Option(8, "-n", min=1, help="test sprites to complete (without --image)"),
    seed: int = SeedOption,
    output: Path = OutputOption,
    scale: int = ScaleOption,
    sampling: list[str] | None = SamplingOption,
    params_path: Path = ParamsOption,
) -> None:
    """Cover the lower part of sprites (or another --mask) and let the model draw it: rows of real / covered / completed."""
    from pokegen.evaluation import MASK_SHAPES, cover_mask, shape_mask
    from pokegen.images import completion_picture

    try:
        if not 0 < cover < 1:
            raise PokegenError(f"--cover {cover}: give the covered share of rows, between 0 and 1 (for example 0.5 or 0.75)")
        if mask_shape is not None and mask_shape not in MASK_SHAPES:
            raise PokegenError(f"--mask {mask_shape}: give one of {', '.join(MASK_SHAPES)}")
        params, model, dataset = _trained(name, params_path, sampling)
        _needs(model, "complete", name)
        if mask_shape is not None and not model.completes_any_mask:
            raise PokegenError(f"model {name!r} completes only the lower rows (--cover), not --mask {mask_shape}")
        sprites = _user_sprite(image, params, dataset.palette) if image else dataset.splits["test"][:n]
        if mask_shape is None:
            mask = cover_mask(len(sprites), sprites.shape[1], cover)
        else:
            mask = shape_mask(mask_shape, len(sprites), sprites.shape[1], seed)
        completed = model.complete(sprites, mask, seed=seed)
        _save_picture(completion_picture(sprites, {"cover": completed}, {"cover": mask}, dataset.palette, scale=scale), output)
    except PokegenError as error:
        _fail(error)


def _user_sprite(path: Path, params, palette):
    """A user's sprite, composited on white, cut like the training sprites and mapped to the palette: (1, S, S)."""
    from pokegen.quantize import nearest_palette_index
    from pokegen.sprites import decode_sprite, fit_sprite

    if not path.is_file():
        raise PokegenError(f"--image {path}: no such file")
    rgb = fit_sprite(decode_sprite(path.name, path.read_bytes(), path), params.quantize.side, params.quantize.fit, str(path))
    return nearest_palette_index(rgb.reshape(-1, 3), palette).reshape(1, *rgb.shape[:2]).astype("uint8")


@app.command("latent-grid")
def latent_grid(
    name: str = typer.Argument(..., help="a trained model with a latent space (encode/decode), such as vae"),
    dims: tuple[int, int] | None = typer.Option(None, help="the two code dims to sweep (default: evaluate.latent_grid.dims)"),
    fixed: float | None = typer.Option(None, help="value of every other dim (default: evaluate.latent_grid.fixed)"),
    span: float | None = typer.Option(None, min=0.01, help="sweep from -span to +span"),
    steps: int | None = typer.Option(None, min=2, max=32),
    output: Path = OutputOption,
    scale: int = ScaleOption,
    sampling: list[str] | None = SamplingOption,
    params_path: Path = ParamsOption,
) -> None:
    """The lecture's picture: pick two code dims, sweep them over a grid, fix the rest."""
    from pydantic import ValidationError

    from pokegen.evaluation import latent_grid_codes
    from pokegen.images import palette_grid
    from pokegen.params import LatentGridParams

    try:
        params, model, dataset = _trained(name, params_path, sampling)
        _needs(model, "decode", name)
        overrides = {key: value for key, value in {"dims": dims, "fixed": fixed, "span": span, "steps": steps}.items() if value is not None}
        try:
            grid = LatentGridParams.model_validate({**params.evaluate.latent_grid.model_dump(), **overrides})
        except ValidationError as exc:
            raise PokegenError(f"latent grid options: {exc.errors()[0]['msg']}") from None
        latent_dim = model.encode(dataset.splits["test"][:1]).shape[1]
        _save_picture(palette_grid(model.decode(latent_grid_codes(latent_dim, grid)), dataset.palette, columns=grid.steps, scale=scale), output)
    except PokegenError as error:
        _fail(error)


@app.command()
def models() -> None:
    """List every registered model plugin: distribution, version, capabilities, resources (and errors)."""
    from rich.table import Table

    from pokegen.plugin import API_VERSION
    from pokegen.registry import discover

    table = Table(title=f"pokegen.models (plugin API {API_VERSION})")
    for column in ("name", "distribution", "version", "likelihood", "capabilities", "resources", "status"):
        table.add_column(column)
    for info in discover():
        if info.plugin is None:
            table.add_row(info.name, info.distribution, info.version, "", "", "", f"[red]broken: {info.error}[/]")
            continue
        r = info.plugin.resources
        table.add_row(
            info.name, info.distribution, info.version, info.plugin.likelihood or "-", ", ".join(info.capabilities) or "-",
            f"gpus={r.gpus} cpus={r.cpus} memory={r.memory_gb:g}GB", "ok",
        )  # fmt: skip
    Console(width=200).print(table)


@app.command()
def explore(
    host: str = typer.Option("127.0.0.1", help="the address to serve on: this machine only unless you say otherwise"),
    port: int = typer.Option(8000, min=0, max=65535, help="0: any free port"),
    params_path: Path = ParamsOption,
) -> None:
    """Serve a page to play with the trained models: sample, move a latent code, draw and let a model complete it."""
    _setup_logging()
    try:
        from pokegen.explore import serve

        serve(params_path.resolve().parent, host, port)
    except PokegenError as error:
        _fail(error)
    except OSError as error:  # the port is taken, or the address is not this machine's
        _fail(PokegenError(f"cannot serve on {host}:{port}: {error.strerror or error}; choose another with --port or --host"))


@app.command()
def plan(params_path: Path = ParamsOption) -> None:
    """Print dvc.yaml's stages in the order they run, what each waits for, and the resources model stages ask for."""
    try:
        _, specs = load_models(params_path)
        from pokegen.flows.dvc_stages import read_plan

        stages = read_plan(params_path.resolve().parent)
    except PokegenError as error:
        _fail(error)
    width = max(len(stage.name) for stage in stages)
    for stage in stages:
        model = specs.get(stage.model) if stage.model else None
        if model is None:
            where = "cpu, every run" if stage.always_changed else "cpu"
        else:
            r = model.resources
            where = f"gpus={r.gpus} cpus={r.cpus} memory={r.memory_gb:g}GB" + (", cpu fallback" if model.train.cpu_fallback else "")
        after = f"after {', '.join(stage.upstream)}" if stage.upstream else "first"
        typer.echo(f"{stage.name:<{width}}  {where:<32}  {after}")


@app.command()
def pipeline(
    params_path: Path = ParamsOption,
    force: bool = typer.Option(False, help="run every stage, changed or not"),
    push: bool = typer.Option(False, help="then dvc push the outputs to the default DVC remote"),
) -> None:
    """Run the pokemon-pipeline Prefect flow once (the same DAG and dvc.lock as `dvc repro`)."""
    try:
        load_params(params_path)
        from pokegen.flows.pipeline import run_pipeline

        run_pipeline(params_path.resolve().parent, force=force, push=push)
    except PokegenError as error:
        _fail(error)


@app.command()
def deploy(params_path: Path = ParamsOption) -> None:
    """Register the scheduled pokemon-pipeline deployment (params.yaml's `deployment` section) with the Prefect server."""
    try:
        load_params(params_path)
        from pokegen.flows.deployment import deploy as register

        deployed = register(params_path.resolve().parent)
    except PokegenError as error:
        _fail(error)
    typer.echo(f"Deployment '{deployed.full_name}' registered: {deployed.schedule}, work pool '{deployed.work_pool}'.")
    typer.echo(f"Start a worker:  prefect worker start --pool {deployed.work_pool}")
    typer.echo(f"Run it now:      prefect deployment run {deployed.full_name}")


@params_app.command("check")
def params_check(params_path: Path = ParamsOption) -> None:
    """Validate params.yaml and print the resolved values."""
    try:
        params = load_params(params_path)
    except PokegenError as error:
        _fail(error)
    typer.echo(params.model_dump_json(indent=2, by_alias=True))


def main() -> None:
    app(prog_name="pokegen")


if __name__ == "__main__":
    sys.exit(main())
