"""The `pokemon-pipeline` Prefect flow: dvc.yaml's stage graph, each stage a Prefect task.

    check -> download -> quantize -> tensorize -> train@MODEL -> evaluate@MODEL -> report

The flow reads the graph from DVC itself (flows/dvc_stages.py), so a stage added to dvc.yaml runs
here too, in dependency order. A stage runs only when DVC says it changed, and is recorded in
dvc.lock and the DVC cache by DVC's own calls: after this flow, `dvc status` says what it says
after `dvc repro`.

How a stage runs: pokegen's own commands (`pokegen stage NAME`, `pokegen train NAME`,
`pokegen evaluate NAME`, `pokegen report`) run their stage function as a task in this process,
and trainings and evaluations go to the task runner params.yaml names, carrying the model's
declared resources. Any other command runs in a shell in the repository, as `dvc repro` would.

Resources: a model stage whose plugin asks for GPUs carries the `gpu` tag and holds that many
slots of the global concurrency limit `gpu`, which the flow sizes to the GPUs on this machine,
so no more trainings share the GPUs than there are GPUs (Prefect itself has no per-task GPU
declaration).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pokegen")  # core logs show in the Prefect UI...
logging.getLogger("pokegen").setLevel(logging.INFO)  # ...at INFO: Prefect gives extra loggers handlers, not a level

from prefect import flow, get_client, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact, create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.concurrency.sync import concurrency  # noqa: E402
from prefect.futures import PrefectFuture  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.utilities.asyncutils import run_coro_as_sync  # noqa: E402

from pokegen.errors import PokegenError  # noqa: E402
from pokegen.flows import dvc_stages, results  # noqa: E402
from pokegen.flows.deployment import check_worker_code  # noqa: E402
from pokegen.flows.dvc_stages import PlannedStage  # noqa: E402
from pokegen.flows.runners import placed, task_runner  # noqa: E402
from pokegen.layout import Layout  # noqa: E402
from pokegen.params import ModelSpec, Params, load_models  # noqa: E402
from pokegen.stages import STAGES, run_stage  # noqa: E402

GPU_LIMIT = "gpu"
POLL_SECONDS = 0.5  # how long the flow waits on one model's task before looking at the next
REPORT_ARTIFACT = "pokegen-report"
CHANGES_ARTIFACT = "pokegen-changes"
log = logging.getLogger("pokegen.flows.pipeline")


class StageCommandError(PokegenError):
    """A dvc.yaml stage's own command (not one of pokegen's) exited with an error."""


def _report(params: Params, layout: Layout, specs: dict[str, ModelSpec]) -> dict:
    """Stage report, then its metrics table published as a Prefect artifact (shown in the UI)."""
    table = run_stage("report", params=params, layout=layout, specs=specs)
    create_table_artifact(table=table.records(), key=REPORT_ARTIFACT, description=f"pokegen models compared: {layout.reports_dir / 'index.html'}")
    return {"headers": table.headers, "rows": table.rows}


def _shell(stage: str, cmd: str, root: Path) -> None:
    """A stage command of the user's own, run in a shell in the repository as `dvc repro` runs it; its output is logged."""
    log.info("%s: > %s", stage, cmd)
    result = subprocess.run(cmd, shell=True, cwd=root, capture_output=True, text=True, check=False)
    for line in (result.stdout + result.stderr).splitlines():
        log.info("%s: %s", stage, line)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise StageCommandError(f"stage '{stage}' in dvc.yaml: `{cmd}` exited {result.returncode}; fix the command or its inputs:\n{tail}")


def _stage_task(name: str):
    """A Prefect task running stage ``name`` of pokegen.stages.STAGES with what its function asks for."""

    def body(params: Params, layout: Layout, specs: dict[str, ModelSpec]):
        return run_stage(name, params=params, layout=layout, specs=specs)

    body.__name__ = body.__qualname__ = f"run_{name}"
    # Network trouble that outlasts the download's own per-address retries gets two more tries.
    retries = {"retries": 2, "retry_delay_seconds": [5, 30]} if name == "download" else {}
    return task(body, name=name, **retries)


TASKS = {name: _stage_task(name) for name, kind in STAGES.items() if not kind.per_model and name != "report"}
TASKS |= {"report": task(_report, name="report"), "shell": task(_shell, name="shell")}


def _model_stage(kind: str, params: Params, layout: Layout, spec: ModelSpec) -> dict:
    if spec.resources.gpus:
        with concurrency(GPU_LIMIT, occupy=spec.resources.gpus, strict=True):
            return run_stage(kind, params=params, layout=layout, spec=spec)
    return run_stage(kind, params=params, layout=layout, spec=spec)


def model_task(stage: str, spec: ModelSpec):
    """train@NAME or evaluate@NAME as a Prefect task carrying the model's declared resources."""
    tags = [f"model:{spec.name}"] + ([GPU_LIMIT] if spec.resources.gpus else [])
    return task(_model_stage, name=stage, tags=tags)


@dataclass(frozen=True)
class StageCall:
    """How the flow runs one stage: a task and its arguments, and the model whose resources it carries (model stages)."""

    task: Callable
    arguments: dict = field(default_factory=dict)
    model: ModelSpec | None = None


def stage_call(stage: PlannedStage, params: Params, layout: Layout, specs: dict[str, ModelSpec]) -> StageCall:
    """pokegen's own stage commands run their function in-process; any other command runs in a shell."""
    found = stage.kind
    if found is None or (found[1] is not None and found[1] not in specs):
        return StageCall(TASKS["shell"].with_options(name=stage.name), {"stage": stage.name, "cmd": stage.cmd, "root": layout.root})
    kind, model = found
    if model is not None:
        spec = specs[model]
        return StageCall(model_task(stage.name, spec), {"kind": kind.name, "params": params, "layout": layout, "spec": spec}, spec)
    return StageCall(TASKS[kind.name], {"params": params, "layout": layout, "specs": specs})


def gpu_slots() -> int:
    """Slots for the `gpu` limit: the GPUs here (at least 1, so CPU-fallback runs still pass one at a time)."""
    import torch

    return max(1, torch.cuda.device_count())


def ensure_gpu_limit(slots: int) -> None:
    async def upsert() -> None:
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, slots)

    run_coro_as_sync(upsert())


def _push(dvc: dvc_stages.PipelineRepo, run_cache: bool = False) -> int:
    return dvc.push(run_cache=run_cache)


def _start_from_last_record(branch: results.ResultsBranch, dvc: dvc_stages.PipelineRepo) -> str | None:
    """The last recorded run's dvc.lock and small outputs into the clone, then `dvc pull` of its outputs."""
    base = branch.start(dvc.uncached_outputs())
    fetched, missing = dvc.pull()
    log.info(
        "Starting from %s; pulled %d files from the DVC remote%s.",
        f"the run recorded as {base[:12]} on {branch.branch}" if base else f"{branch.source[:12]} (no recorded run yet)",
        fetched,
        f", {missing} not there (their stages will run)" if missing else "",
    )
    return base


def _record(branch: results.ResultsBranch, layout: Layout, specs: dict[str, ModelSpec], paths: list[str], limits) -> str | None:
    """Record the run on the results branch (flows/results.py), publish its figures against the previous record,
    then raise when the push was refused or the figures got worse than `deployment.regression` allows."""
    outcome = results.record_run(branch, layout.root, list(specs), paths, limits, run_name=flow_run.name)
    create_markdown_artifact(
        results.summary_markdown(outcome, {m: layout.evaluation_pictures(m) / "samples.png" for m in specs}),
        key=CHANGES_ARTIFACT,
        description="this run's figures against the previous recorded run",
    )
    outcome.raise_for_failure()
    return outcome.recorded.commit


# The run's one locked repository is its argument: nothing to hash for a cache key.
push_task = task(_push, name="push", cache_policy=NO_CACHE)
start_task = task(_start_from_last_record, name="pull", cache_policy=NO_CACHE)
record_task = task(_record, name="record", cache_policy=NO_CACHE)


@flow(name="pokemon-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def pokemon_pipeline(root: str = ".", force: bool = False, push: bool = False, record: bool = False) -> dict[str, str]:
    """Bring every stage of dvc.yaml up to date, then (``push``) send the outputs to the DVC remote.

    ``record`` (scheduled runs, in a fresh clone): start from the run last recorded on
    `deployment.results_branch`, and after the push commit what changed there (flows/results.py).

    Returns {stage: 'ran' | 'restored' | 'up to date'} in the order `dvc repro` would run them ('restored':
    from DVC's run cache, as `dvc repro` does when a run with the same inputs was recorded before). A stage starts as
    soon as every stage it depends on is recorded; trainings and evaluations go to the task runner
    params.yaml asks for (pipeline.runner: in parallel on Dask or Ray). When a stage fails, the
    stages that do not depend on it still run and are recorded; then the run fails with its error.
    The run holds DVC's lock throughout (see dvc_stages).
    """
    logger = get_run_logger()
    layout = Layout(Path(root).resolve())
    params, specs = load_models(layout.params)  # every door: a bad params.yaml stops here, before any stage
    if any(spec.resources.gpus for spec in specs.values()):
        ensure_gpu_limit(gpu_slots())
    branch = None
    if record:
        results.secrets_into_environment(params.deployment.secrets)
        if params.deployment.results_branch is None:
            raise results.RecordError(f"{layout.params}: deployment.results_branch is null: name a branch to record on")
        branch = results.ResultsBranch(layout.root, params.deployment.results_branch)
        check_worker_code(layout.root, branch.source)
        push = True  # a record whose outputs are not on the DVC remote could not be restored

    with dvc_stages.PipelineRepo(layout.root) as dvc, task_runner(params.pipeline.runner) as runner:
        plan = dvc.plan()
        recorded_paths = dvc.uncached_outputs()
        if branch is not None:
            start_task(branch, dvc)
        outcome: dict[str, str] = {}
        waiting = list(plan)
        running: list[tuple[PrefectFuture, str]] = []
        failed: dict[str, PrefectFuture | BaseException] = {}
        blocked: set[str] = set()  # failed, or downstream of a failure

        def recorded(name: str, how: str = "ran") -> None:
            dvc.record(name)
            outcome[name] = how

        def start(stage: PlannedStage) -> None:
            if any(up in blocked for up in stage.upstream):
                blocked.add(stage.name)
                return
            if not force and dvc.is_up_to_date(stage.name):
                logger.info("Stage '%s' didn't change, skipping", stage.name)
                outcome[stage.name] = "up to date"
                return
            dvc.prepare(stage.name)
            if not force and dvc.restore_from_run_cache(stage.name, pull=branch is not None):
                logger.info("Stage '%s' is cached: its outputs restored from DVC's run cache, not run", stage.name)
                recorded(stage.name, "restored")
                return
            call = stage_call(stage, params, layout, specs)
            if call.model is not None:  # models run side by side where the task runner allows (Dask, Ray)
                with placed(call.model.resources, params.pipeline.runner.kind):
                    running.append((runner.submit(call.task, call.arguments), stage.name))
                return
            try:
                call.task(**call.arguments)
            except Exception as error:  # noqa: BLE001 - the stages that do not depend on it go on
                failed[stage.name] = error
                blocked.add(stage.name)
                return
            recorded(stage.name)

        while waiting or running:
            ready = next((s for s in waiting if all(up in outcome or up in blocked for up in s.upstream)), None)
            if ready is not None:  # the first in DVC's order whose upstream stages are all settled
                waiting.remove(ready)
                start(ready)
                continue
            if not running:
                break
            future, name = running.pop(0)
            future.wait(timeout=POLL_SECONDS)
            if not future.state.is_final():
                running.append((future, name))  # still running: look at the next one
            elif future.state.is_completed():
                recorded(name)
            else:
                failed[name] = future  # the other models go on; their outputs are kept
                blocked.add(name)
        if failed:
            first = next(failed[stage.name] for stage in plan if stage.name in failed)  # DVC's order: the same error every time
            if isinstance(first, BaseException):
                raise first
            first.result()  # raises that stage's own error
        outcome = {stage.name: outcome[stage.name] for stage in plan}  # DVC's order, not the order stages finished
        if all(state == "up to date" for stage, state in zip(plan, outcome.values(), strict=True) if not stage.always_changed):
            logger.info("Data and pipelines are up to date.")
        else:
            logger.info("Recorded in dvc.lock: to track the changes with git, add dvc.lock and the .gitignore files DVC wrote.")
        if push:
            sent = push_task(dvc, run_cache=branch is not None)  # a later run can restore what this one made
            logger.info("Pushed %d files to the DVC remote.%s", sent, "" if sent else " It already had every output.")
    if branch is not None:
        record_task(branch, layout, specs, recorded_paths, params.deployment.regression)
    return outcome


def run_pipeline(root: Path, force: bool = False, push: bool = False) -> dict[str, str]:
    """Run pokemon-pipeline once, here (trainings go where params.yaml's pipeline.runner says)."""
    return pokemon_pipeline(root=str(root.resolve()), force=force, push=push)
