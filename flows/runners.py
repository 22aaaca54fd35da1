"""Where the flow's trainings and evaluations run, and how a model's declared resources reach the engine.

    local  Prefect's thread pool with one worker: stages run here, one after another (torch's random
           state is per process, so two trainings in one process would not be repeatable)
    dask   prefect-dask: a LocalCluster of `workers` processes, or the scheduler at `address`; a task
           that needs GPUs carries the Dask resource annotation GPU=n, so only a worker started with
           `--resources "GPU=n"` (or more) runs it
    ray    prefect-ray: a local Ray, or the cluster at `address`; each task asks Ray for its
           num_gpus, num_cpus and memory

Prefect itself has no per-task resource declaration; these annotations are the engines' own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pokegen.errors import ParamsError
from pokegen.params import RunnerParams
from pokegen.plugin import Resources

EXTRAS = {"dask": "prefect_dask", "ray": "prefect_ray"}


def _require(kind: str):
    try:
        return __import__(EXTRAS[kind])
    except ImportError:
        raise ParamsError(f"pipeline.runner.kind = {kind!r} needs {EXTRAS[kind].replace('_', '-')}: pip install 'pokegen[{kind}]'") from None


def task_runner(runner: RunnerParams) -> TaskRunner:
    """The Prefect task runner that params.yaml's pipeline.runner asks for. Raises ParamsError if it is not installed."""
    if runner.kind == "dask":
        from_dask = _require("dask")
        if runner.address:
            return from_dask.DaskTaskRunner(address=runner.address)
        return from_dask.DaskTaskRunner(cluster_kwargs={"n_workers": runner.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
    if runner.kind == "ray":
        from_ray = _require("ray")
        return from_ray.RayTaskRunner(address=runner.address) if runner.address else from_ray.RayTaskRunner()
    return ThreadPoolTaskRunner(max_workers=1)


def dask_annotations(resources: Resources) -> dict:
    """dask.annotate() keywords: only GPUs, since Dask workers advertise no CPU or memory resources by default."""
    return {"resources": {"GPU": resources.gpus}} if resources.gpus else {}


def ray_options(resources: Resources) -> dict:
    """prefect_ray remote_options() keywords: what Ray schedules on."""
    return {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "memory": int(resources.memory_gb * 2**30)}


@contextlib.contextmanager
def placed(resources: Resources, kind: str) -> Iterator[None]:
    """Tasks submitted inside this block carry ``resources`` to the engine ``kind`` runs on."""
    if kind == "dask" and resources.gpus:
        import dask

        with dask.annotate(**dask_annotations(resources)):
            yield
    elif kind == "ray":
        from prefect_ray.context import remote_options

        with remote_options(**ray_options(resources)):
            yield
    else:
        yield
