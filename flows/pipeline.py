"""The `pokemon-pipeline` Prefect flow: the DAG of dvc.yaml, each stage a Prefect task.

    download -> quantize -> tensorize -> train@MODEL (one per model in pipeline.models)

A stage runs only when DVC says it changed, and is recorded in dvc.lock and the DVC
cache by DVC itself (flows/dvc_stages.py): after this flow, `dvc status` is clean.

Resources: a training whose plugin asks for GPUs carries the `gpu` tag and holds that many
slots of the global concurrency limit `gpu`, which the flow sizes to the GPUs on this machine,
so no more trainings share the GPUs than there are GPUs (Prefect itself has no per-task GPU
declaration).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pokegen")  # core logs show in the Prefect UI

from prefect import flow, get_client, get_run_logger, task  # noqa: E402
from prefect.concurrency.sync import concurrency  # noqa: E402
from prefect.utilities.asyncutils import run_coro_as_sync  # noqa: E402

from pokegen import stages  # noqa: E402
from pokegen.flows import dvc_stages  # noqa: E402
from pokegen.layout import Layout  # noqa: E402
from pokegen.params import ModelSpec, Params, load_params, model_specs  # noqa: E402

DATA_STAGES = ("download", "quantize", "tensorize")
GPU_LIMIT = "gpu"

TASKS = {
    # Network trouble that outlasts the stage's own per-address retries gets two more tries.
    "download": task(stages.run_download, name="download", retries=2, retry_delay_seconds=[5, 30]),
    "quantize": task(stages.run_quantize, name="quantize"),
    "tensorize": task(stages.run_tensorize, name="tensorize"),
}


def _train(params: Params, layout: Layout, name: str, gpus: int) -> dict:
    if gpus:
        with concurrency(GPU_LIMIT, occupy=gpus, strict=True):
            return stages.run_train(params, layout, name)
    return stages.run_train(params, layout, name)


def train_task(spec: ModelSpec):
    """train@NAME as a Prefect task carrying the model's declared resources."""
    tags = [f"model:{spec.name}"] + ([GPU_LIMIT] if spec.resources.gpus else [])
    return task(_train, name=f"train@{spec.name}", tags=tags)


def gpu_slots() -> int:
    """Slots for the `gpu` limit: the GPUs here (at least 1, so CPU-fallback runs still pass one at a time)."""
    import torch

    return max(1, torch.cuda.device_count())


def ensure_gpu_limit(slots: int) -> None:
    async def upsert() -> None:
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, slots)

    run_coro_as_sync(upsert())


@flow(name="pokemon-pipeline")
def pokemon_pipeline(root: str = ".", force: bool = False) -> dict[str, str]:
    """Bring every stage up to date. Returns {stage: 'ran' | 'up to date'}."""
    logger = get_run_logger()
    layout = Layout(Path(root).resolve())
    params = load_params(layout.params)  # validated, models included, before any work
    specs = model_specs(params)
    if any(spec.resources.gpus for spec in specs.values()):
        ensure_gpu_limit(gpu_slots())

    outcome: dict[str, str] = {}

    def bring_up_to_date(stage: str, run) -> None:
        if not force and dvc_stages.is_up_to_date(layout.root, stage):
            logger.info("Stage '%s' didn't change, skipping", stage)
            outcome[stage] = "up to date"
            return
        dvc_stages.prepare(layout.root, stage)
        run()
        dvc_stages.record(layout.root, stage)
        outcome[stage] = "ran"

    for stage in DATA_STAGES:
        bring_up_to_date(stage, lambda stage=stage: TASKS[stage](params, layout))
    for name, spec in specs.items():
        bring_up_to_date(f"train@{name}", lambda name=name, spec=spec: train_task(spec)(params, layout, name, spec.resources.gpus))
    if all(state == "up to date" for state in outcome.values()):
        logger.info("Data and pipelines are up to date.")
    return outcome
