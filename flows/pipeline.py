"""The `pokemon-pipeline` Prefect flow: the DAG of dvc.yaml, each stage a Prefect task.

    download -> quantize -> tensorize

A stage runs only when DVC says it changed, and is recorded in dvc.lock and the DVC
cache by DVC itself (flows/dvc_stages.py): after this flow, `dvc status` is clean.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pokegen")  # core logs show in the Prefect UI

from prefect import flow, get_run_logger, task  # noqa: E402

from pokegen import stages  # noqa: E402
from pokegen.flows import dvc_stages  # noqa: E402
from pokegen.layout import Layout  # noqa: E402
from pokegen.params import load_params  # noqa: E402

DATA_STAGES = ("download", "quantize", "tensorize")

TASKS = {
    # Network trouble that outlasts the stage's own per-address retries gets two more tries.
    "download": task(stages.run_download, name="download", retries=2, retry_delay_seconds=[5, 30]),
    "quantize": task(stages.run_quantize, name="quantize"),
    "tensorize": task(stages.run_tensorize, name="tensorize"),
}


@flow(name="pokemon-pipeline")
def pokemon_pipeline(root: str = ".", force: bool = False) -> dict[str, str]:
    """Bring every stage up to date. Returns {stage: 'ran' | 'up to date'}."""
    logger = get_run_logger()
    layout = Layout(Path(root).resolve())
    params = load_params(layout.params)  # validated before any work
    outcome: dict[str, str] = {}
    for name in DATA_STAGES:
        if not force and dvc_stages.is_up_to_date(layout.root, name):
            logger.info("Stage '%s' didn't change, skipping", name)
            outcome[name] = "up to date"
            continue
        dvc_stages.prepare(layout.root, name)
        TASKS[name](params, layout)
        dvc_stages.record(layout.root, name)
        outcome[name] = "ran"
    if all(state == "up to date" for state in outcome.values()):
        logger.info("Data and pipelines are up to date.")
    return outcome
