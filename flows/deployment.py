"""`pokegen deploy`: register the scheduled `pokemon-pipeline` deployment on a Prefect work pool.

Why a work pool and a deployment, not `flow.serve`: the deployment is registered once, and any
number of workers run it: `prefect worker start --pool pokegen` on this laptop today, on a GPU
machine of a cluster tomorrow, with nothing re-registered. A served flow runs only inside the
process that serves it.

The deployment's code comes from the project's git repository, as Prefect deployments usually do:
its pull step (`git_clone`) gives each run a fresh clone of `deployment.branch` from `origin` (or
`deployment.repository`), in a temporary folder of the worker's. The run then starts from the
last recorded run (flows/results.py), runs the DAG, pushes the outputs to the DVC remote and
records what changed on `deployment.results_branch`. A worker needs pokegen installed, at the
version of the branch it runs (checked at the start of each run), and nothing else: no clone, no
shared file system. At most one run goes at a time; a second one waits in the queue.
"""

from __future__ import annotations

import importlib.util
import subprocess
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import httpx

from pokegen.errors import ParamsError, PokegenError
from pokegen.layout import Layout
from pokegen.params import DeploymentParams, load_params


class PrefectServerError(PokegenError):
    """No Prefect API to register a deployment with."""


class RepositoryError(PokegenError):
    """No git repository (or branch) for the deployment's workers to clone."""


class WorkerCodeError(PokegenError):
    """The worker's installed pokegen is not the code of the clone it runs."""


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


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def repository_to_clone(root: Path, deployment: DeploymentParams) -> str:
    """The git URL workers clone (`deployment.repository`, else this clone's origin), checked to hold the branch."""
    url = deployment.repository
    if url is None:
        found = _git(root, "remote", "get-url", "origin")
        if found.returncode != 0:
            raise RepositoryError(
                f"{root}: no git remote 'origin' for the workers to clone: push the project to a git server "
                "(git remote add origin URL && git push -u origin main), or set deployment.repository in params.yaml"
            )
        url = found.stdout.strip()
    listed = _git(root, "ls-remote", "--heads", url, deployment.branch)
    if listed.returncode != 0:
        raise RepositoryError(f"the git repository {url} did not answer: {listed.stderr.strip()}")
    if not listed.stdout.strip():
        raise RepositoryError(
            f"deployment.branch = {deployment.branch!r} is not a branch of {url}: push it (git push origin "
            f"{deployment.branch}) or name another branch in params.yaml"
        )
    return url


def _clone_source(url: str, deployment: DeploymentParams):
    """Prefect's git storage for the pull step, with the token for https URLs taken on the worker at run time:
    a Prefect Secret block (deployment.secrets.POKEGEN_GIT_TOKEN) or the worker's own POKEGEN_GIT_TOKEN."""
    from prefect.runner.storage import GitRepository

    from pokegen.flows.results import GIT_TOKEN

    if urlsplit(url).scheme not in ("http", "https"):
        return GitRepository(url=url, branch=deployment.branch)  # ssh or a path: the worker's git credentials
    block = deployment.secrets.get(GIT_TOKEN)
    token = f"{{{{ prefect.blocks.secret.{block} }}}}" if block else f"{{{{ ${GIT_TOKEN} }}}}"

    class TokenGitRepository(GitRepository):  # the template is resolved by the worker, never stored as a value
        def to_pull_step(self) -> dict:
            step = super().to_pull_step()
            step["prefect.deployments.steps.git_clone"]["access_token"] = token
            return step

    return TokenGitRepository(url=url, branch=deployment.branch)


def deploy(root: Path) -> Deployed:
    """Register (or update) the deployment for the project at ``root``, as params.yaml's `deployment` says."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron
    from prefect.utilities.asyncutils import run_coro_as_sync

    layout = Layout(root.resolve())
    config = load_params(layout.params).deployment
    check_schedule(config)
    url = _api_url()
    repository = repository_to_clone(layout.root, config)
    try:
        run_coro_as_sync(_ensure_work_pool(config.work_pool))
    except httpx.HTTPError as error:  # down, unreachable, or refusing (Prefect's status errors are httpx's)
        raise PrefectServerError(
            f"the Prefect server at {url} did not answer ({type(error).__name__}: {error}); is it running?"
        ) from None

    deployment = RunnerDeployment.from_storage(
        storage=_clone_source(repository, config),
        # A module path: the worker's installed pokegen runs, in the clone (checked to be the same code).
        entrypoint="pokegen.flows.pipeline.pokemon_pipeline",
        name=config.name,
        work_pool_name=config.work_pool,
        schedules=[Cron(config.cron, timezone=config.timezone)] if config.cron else [],
        parameters={"root": ".", "push": config.push, "record": config.results_branch is not None},
        # The flow module sets this too, but a worker's flow-run process sets up logging before importing it.
        job_variables={"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": "pokegen"}},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description=f"pokegen's DAG (dvc.yaml) from {repository} at branch {config.branch}, as `dvc repro` runs it",
    )
    deployment_id = deployment.apply()
    schedule = f"cron '{config.cron}' ({config.timezone})" if config.cron else "no schedule (runs when triggered)"
    return Deployed(deployment_id, f"pokemon-pipeline/{config.name}", config.work_pool, schedule)


# The installed packages, and where a clone holds each (pyproject.toml's package-dir).
CODE_FOLDERS = {"pokegen": "src/pokegen", "pokegen.flows": "flows", "pokegen.plugins": "plugins"}


def code_differences(root: Path) -> list[str]:
    """The clone's code files (under ``root``) that differ from the installed pokegen's, as paths in the clone."""
    differing: list[str] = []
    for package, folder in CODE_FOLDERS.items():
        spec = importlib.util.find_spec(package)
        installed, cloned = Path(next(iter(spec.submodule_search_locations))), root / folder
        if installed.resolve() == cloned.resolve():
            continue
        nested = {"flows", "plugins"} if package == "pokegen" else set()  # a wheel nests them in pokegen/

        def files(base: Path, nested: set[str] = nested) -> dict[str, bytes]:
            return {
                path.relative_to(base).as_posix(): path.read_bytes()
                for path in base.rglob("*.py")
                if "__pycache__" not in path.parts and path.relative_to(base).parts[0] not in nested
            }

        here, there = files(installed), files(cloned)
        differing += [f"{folder}/{name}" for name in sorted(here.keys() | there.keys()) if here.get(name) != there.get(name)]
    return differing


def check_worker_code(root: Path, source: str) -> None:
    """Raise WorkerCodeError when the installed pokegen is not the clone's: DVC would record the clone's code as
    what ran."""
    differing = code_differences(root)
    if differing:
        shown = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise WorkerCodeError(
            f"this worker's pokegen is not the code of the commit it runs ({source[:12]}): {shown} differ. dvc.lock "
            "would record that commit's code as what ran. Install it on the worker (pip install -c constraints.txt "
            "-e . in the worker's clone after git pull, or pip install 'pokegen @ git+URL@BRANCH'), then run again."
        )
