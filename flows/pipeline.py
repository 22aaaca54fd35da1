"""The `pokemon-pipeline` Prefect flow: the DAG of dvc.yaml, each stage a Prefect task.

    download -> quantize -> tensorize -> train@MODEL -> evaluate@MODEL -> report

A stage runs only when DVC says it changed, and is recorded in dvc.lock and the DVC
cache by DVC itself (flows/dvc_stages.py): after this flow, `dvc status` is clean.

Resources: a training whose plugin asks for GPUs carries the `gpu` tag and holds that many
slots of the global concurrency limit `gpu`, which the flow sizes to the GPUs on this machine,
so no more trainings share the GPUs than there are GPUs (Prefect itself has no per-task GPU
declaration).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pokegen")  # core logs show in the Prefect UI...
logging.getLogger("pokegen").setLevel(logging.INFO)  # ...at INFO: Prefect gives extra loggers handlers, not a level

from pokegen.flows import dvc_stages  # noqa: E402
from pokegen.flows.runners import placed, task_runner  # noqa: E402
from prefect import flow, get_client, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_table_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.concurrency.sync import concurrency  # noqa: E402
from prefect.futures import PrefectFuture  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.utilities.asyncutils import run_coro_as_sync  # noqa: E402

from pokegen import stages  # noqa: E402
from pokegen.layout import Layout  # noqa: E402
from pokegen.params import ModelSpec, Params, load_params, model_specs  # noqa: E402

DATA_STAGES = ("download", "quantize", "tensorize")
GPU_LIMIT = "gpu"
POLL_SECONDS = 0.5  # how long the flow waits on one model's task before looking at the next

TASKS = {
    # Network trouble that outlasts the stage's own per-address retries gets two more tries.
    "download": task(stages.run_download, name="download", retries=2, retry_delay_seconds=[5, 30]),
    "quantize": task(stages.run_quantize, name="quantize"),
    "tensorize": task(stages.run_tensorize, name="tensorize"),
}


REPORT_ARTIFACT = "pokegen-report"


def _report(params: Params, layout: Layout) -> dict:
    """Stage report, then its metrics table published as a Prefect artifact (shown in the UI)."""
    table = stages.run_report(params, layout)
    create_table_artifact(
        table=table.records(),
        key=REPORT_ARTIFACT,
        description=f"pokegen models compared: {layout.reports_dir / 'index.html'}",
    )
    return {"headers": table.headers, "rows": table.rows}


report_task = task(_report, name="report")


MODEL_STAGES = {"train": stages.run_train, "evaluate": stages.run_evaluate}


def _model_stage(stage: str, params: Params, layout: Layout, name: str, gpus: int) -> dict:
    if gpus:
        with concurrency(GPU_LIMIT, occupy=gpus, strict=True):
            return MODEL_STAGES[stage](params, layout, name)
    return MODEL_STAGES[stage](params, layout, name)


def model_task(stage: str, spec: ModelSpec):
    """train@NAME or evaluate@NAME as a Prefect task carrying the model's declared resources."""
    tags = [f"model:{spec.name}"] + ([GPU_LIMIT] if spec.resources.gpus else [])
    return task(_model_stage, name=f"{stage}@{spec.name}", tags=tags)


def gpu_slots() -> int:
    """Slots for the `gpu` limit: the GPUs here (at least 1, so CPU-fallback runs still pass one at a time)."""
    import torch

    return max(1, torch.cuda.device_count())


def ensure_gpu_limit(slots: int) -> None:
    async def upsert() -> None:
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, slots)

    run_coro_as_sync(upsert())


def _push(dvc: dvc_stages.PipelineRepo) -> int:
    return dvc.push()


# The run's one locked repository is its argument: nothing to hash for a cache key.
push_task = task(_push, name="push", cache_policy=NO_CACHE)


@flow(name="pokemon-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=1))
def pokemon_pipeline(root: str = ".", force: bool = False, push: bool = False) -> dict[str, str]:
    """Bring every stage up to date, then (``push``) send the outputs to the DVC remote.

    Returns {stage: 'ran' | 'up to date'}. The data stages and the report run in this process.
    Each model's training, then its evaluation, goes to the task runner params.yaml asks for
    (pipeline.runner: in parallel on Dask or Ray), carrying the model's resources. DVC records
    each stage here, one at a time, and the run holds DVC's lock throughout (see dvc_stages).
    """
    logger = get_run_logger()
    layout = Layout(Path(root).resolve())
    params = load_params(layout.params)  # validated, models included, before any work
    specs = model_specs(params)
    if any(spec.resources.gpus for spec in specs.values()):
        ensure_gpu_limit(gpu_slots())

    outcome: dict[str, str] = {}
    with dvc_stages.PipelineRepo(layout.root) as dvc, task_runner(params.pipeline.runner) as runner:

        def changed(stage: str) -> bool:
            if not force and dvc.is_up_to_date(stage):
                logger.info("Stage '%s' didn't change, skipping", stage)
                outcome[stage] = "up to date"
                return False
            dvc.prepare(stage)
            return True

        def recorded(stage: str) -> None:
            dvc.record(stage)
            outcome[stage] = "ran"

        for stage in DATA_STAGES:
            if changed(stage):
                TASKS[stage](params, layout)
                recorded(stage)
        # Each model's evaluation starts as soon as its own training is recorded; models run side by side
        # where the task runner allows (Dask, Ray), one at a time on the local one.
        pending: list[tuple[PrefectFuture, str]] = []

        def submit(stage: str, name: str) -> bool:
            if not changed(f"{stage}@{name}"):
                return False
            spec = specs[name]
            arguments = {"stage": stage, "params": params, "layout": layout, "name": name, "gpus": spec.resources.gpus}
            with placed(spec.resources, params.pipeline.runner.kind):
                pending.append((runner.submit(model_task(stage, spec), arguments), f"{stage}@{name}"))
            return True

        for name in specs:
            submit("train", name) or submit("evaluate", name)
        failed = []
        while pending:
            future, stage = pending.pop(0)
            future.wait(timeout=POLL_SECONDS)
            if not future.state.is_final():
                pending.append((future, stage))  # still running: look at the next one
                continue
            if not future.state.is_completed():
                failed.append(future)  # the other models go on; their outputs are kept
                continue
            recorded(stage)
            kind, name = stage.split("@", 1)
            if kind == "train":
                submit("evaluate", name)
        if failed:
            failed[0].result()  # raises that stage's own error
        if changed("report"):
            report_task(params, layout)
            recorded("report")
        if all(state == "up to date" for state in outcome.values()):
            logger.info("Data and pipelines are up to date.")
        else:
            logger.info(
                "Recorded in dvc.lock: to track the changes with git, add dvc.lock and the .gitignore files DVC wrote."
            )
        if push:
            sent = push_task(dvc)
            logger.info("Pushed %d files to the DVC remote.%s", sent, "" if sent else " It already had every output.")
    return outcome


def run_pipeline(root: Path, force: bool = False, push: bool = False) -> dict[str, str]:
    """Run pokemon-pipeline once, here (trainings go where params.yaml's pipeline.runner says)."""
    return pokemon_pipeline(root=str(root.resolve()), force=force, push=push)
