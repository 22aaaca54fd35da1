"""`pokegen deploy`: register the scheduled `pokemon-pipeline` deployment on a Prefect work pool.

Why a work pool and `flow.deploy`, not `flow.serve`: the deployment is registered once, and any
number of workers run it: `prefect worker start --pool pokegen` on this laptop today, on a GPU
machine of a cluster tomorrow, with nothing re-registered. A served flow runs only inside the
process that serves it.

The deployment points at the flow by module (`pokegen.flows.pipeline.pokemon_pipeline`): a worker
needs pokegen installed and this repository at the same path, nothing uploaded. Its parameters
come from params.yaml's `deployment` section; at most one of its runs goes at a time and a
second one waits in the queue (and runs outside it, `dvc repro` included, meet the DVC lock).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx

from pokegen.errors import ParamsError, PokegenError
from pokegen.layout import Layout
from pokegen.params import DeploymentParams, load_params

class PrefectServerError(PokegenError):
    """No Prefect API to register a deployment with."""


@dataclass(frozen=True)
class Deployed:
    id: UUID
    full_name: str  # FLOW/DEPLOYMENT, as `prefect deployment run` takes it
    work_pool: str
    schedule: str


def check_schedule(deployment: DeploymentParams) -> None:
    """The cron expression and time zone, checked as Prefect will read them (ParamsError naming the key)."""
    from prefect.schedules import validate_cron_string

    if deployment.cron is not None:
        try:
            validate_cron_string(deployment.cron)
        except ValueError:
            raise ParamsError(
                f"deployment.cron = {deployment.cron!r} is not a cron expression; give five fields, "
                "minute hour day month weekday (for example '0 3 * * *': every day at 03:00), or null for no schedule"
            ) from None
    try:
        zoneinfo.ZoneInfo(deployment.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ParamsError(
            f"deployment.timezone = {deployment.timezone!r} is not an IANA time zone (for example UTC or Europe/Paris)"
        ) from None


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectServerError(
            "no Prefect server to register the deployment with: start one (prefect server start) and point at it "
            "(prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api), or log in to Prefect Cloud (prefect cloud login)"
        )
    return url


async def _ensure_work_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass  # an existing pool keeps its type: a cluster's pool may run its workers elsewhere


def deploy(root: Path) -> Deployed:
    """Register (or update) the deployment for the repository at ``root``, as params.yaml's `deployment` says."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron
    from prefect.utilities.asyncutils import run_coro_as_sync

    layout = Layout(root.resolve())
    config = load_params(layout.params).deployment
    check_schedule(config)
    url = _api_url()
    try:
        run_coro_as_sync(_ensure_work_pool(config.work_pool))
    except httpx.HTTPError as error:  # down, unreachable, or refusing (Prefect's status errors are httpx's)
        raise PrefectServerError(
            f"the Prefect server at {url} did not answer ({type(error).__name__}: {error}); is it running?"
        ) from None

    from pokegen.flows.pipeline import pokemon_pipeline

    deployment_id = pokemon_pipeline.deploy(
        name=config.name,
        work_pool_name=config.work_pool,
        schedules=[Cron(config.cron, timezone=config.timezone)] if config.cron else [],
        parameters={"root": str(layout.root), "push": config.push},
        # The flow module sets this too, but a worker's flow-run process sets up logging before importing it.
        job_variables={"working_dir": str(layout.root), "env": {"PREFECT_LOGGING_EXTRA_LOGGERS": "pokegen"}},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        entrypoint_type=EntrypointType.MODULE_PATH,
        description=f"pokegen's DAG (dvc.yaml) for {layout.root}, as `dvc repro` runs it",
        print_next_steps=False,
        ignore_warnings=True,
    )
    schedule = f"cron '{config.cron}' ({config.timezone})" if config.cron else "no schedule (runs when triggered)"
    return Deployed(deployment_id, f"{pokemon_pipeline.name}/{config.name}", config.work_pool, schedule)
