"""The `pokegen` command. Errors users can fix print as one message and exit 2, never as a traceback."""

from __future__ import annotations

import logging
import sys
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
from pokegen.params import load_params, model_specs

app = typer.Typer(help="pokegen: teach machines to create Pokémon.", no_args_is_help=True, add_completion=False)
params_app = typer.Typer(help="Inspect params.yaml.", no_args_is_help=True)
app.add_typer(params_app, name="params")
stderr = Console(stderr=True)

ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="params file; its folder is the repository root")


class StageName(str, Enum):
    download = "download"
    quantize = "quantize"
    tensorize = "tensorize"


def _setup_logging() -> None:
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # logs captured by DVC, CI or a file: one plain line each, no wrapping
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _fail(error: PokegenError) -> None:
    stderr.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def stage(name: StageName, params_path: Path = ParamsOption) -> None:
    """Run one stage (what dvc.yaml calls)."""
    from pokegen import stages

    _setup_logging()
    try:
        params = load_params(params_path)  # validated before any work
        layout = Layout(params_path.resolve().parent)
        if name is StageName.download:
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, console=stderr, disable=not stderr.is_terminal) as progress:
                bars: dict[str, int] = {}

                def on_progress(file: str, done: int, total: int | None) -> None:
                    if file not in bars:
                        bars[file] = progress.add_task(file, total=total)
                    progress.update(bars[file], completed=done, total=total)

                stages.run_download(params, layout, on_progress)
        else:
            stages.STAGES[name.value](params, layout)
    except PokegenError as error:
        _fail(error)


@app.command()
def train(name: str = typer.Argument(..., help="a model listed in pipeline.models"), params_path: Path = ParamsOption) -> None:
    """Train one model plugin (what dvc.yaml's train@NAME calls); resumes an interrupted run."""
    from pokegen import stages
    from pokegen.plugin import FitContext

    _setup_logging()
    try:
        params = load_params(params_path)
        if name not in params.pipeline.models:
            raise ParamsError(f"pipeline.models: {name!r} is not listed (listed: {', '.join(params.pipeline.models)})")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=stderr, disable=not stderr.is_terminal, transient=True) as progress:
            bars: dict[int, int] = {}

            def on_batch(epoch: int, batch: int, batches: int) -> None:
                if epoch not in bars:
                    bars[epoch] = progress.add_task(f"{name} epoch {epoch}", total=batches)
                progress.update(bars[epoch], completed=batch)

            stages.run_train(params, Layout(params_path.resolve().parent), name, FitContext(on_batch=on_batch))
    except PokegenError as error:
        _fail(error)


@app.command()
def models() -> None:
    """List every registered model plugin: distribution, version, capabilities, resources (and errors)."""
    from rich.table import Table

    from pokegen.registry import discover

    table = Table(title="pokegen.models")
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
def plan(params_path: Path = ParamsOption) -> None:
    """Print the DAG with the resources each task asks for."""
    try:
        params = load_params(params_path)
        specs = model_specs(params)
    except PokegenError as error:
        _fail(error)
    typer.echo("download -> quantize -> tensorize   (cpu)")
    for name, spec in specs.items():
        r = spec.resources
        fallback = ", cpu fallback" if spec.train.cpu_fallback else ""
        typer.echo(f"tensorize -> train@{name}   gpus={r.gpus} cpus={r.cpus} memory={r.memory_gb:g}GB{fallback}")


@app.command()
def pipeline(params_path: Path = ParamsOption, force: bool = typer.Option(False, help="run every stage, changed or not")) -> None:
    """Run the pokemon-pipeline Prefect flow once (the same DAG and dvc.lock as `dvc repro`)."""
    try:
        load_params(params_path)
        from pokegen.flows.pipeline import pokemon_pipeline

        pokemon_pipeline(root=str(params_path.resolve().parent), force=force)
    except PokegenError as error:
        _fail(error)


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
