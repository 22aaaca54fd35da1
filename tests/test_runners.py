"""Declared resources reach the engine: Dask resource annotations and Ray options, on real Dask and Ray clusters on 127.0.0.1."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TINY_MODELS, background, child_env, free_port, make_repo, run, stale_stages, wait_for

from pokegen.errors import ParamsError
from pokegen.layout import Layout
from pokegen.params import RunnerParams, parse_params
from pokegen.plugin import Resources


def test_resources_become_dask_annotations_and_ray_options() -> None:
    from pokegen.flows.runners import dask_annotations, ray_options

    gpu = Resources(gpus=2, cpus=4, memory_gb=1.5)
    assert dask_annotations(gpu) == {"resources": {"GPU": 2}}
    assert dask_annotations(Resources()) == {}, "a CPU task may run on any worker"
    assert ray_options(gpu) == {"num_cpus": 4, "num_gpus": 2, "memory": 1536 * 2**20}


def test_a_runner_that_is_not_installed_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from pokegen.flows.runners import task_runner

    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # as if prefect-ray were not installed
    with pytest.raises(
        ParamsError, match=r"pipeline.runner.kind = 'ray' needs prefect-ray: pip install 'pokegen\[ray\]'"
    ):
        task_runner(RunnerParams(kind="ray"))
    with pytest.raises(ParamsError, match="address = 'tcp://x:1' is for kind dask or ray"):
        parse_params({"pipeline": {"runner": {"address": "tcp://x:1"}}})


@pytest.fixture
def dask_cluster() -> Iterator:
    """A real Dask LocalCluster on 127.0.0.1 with one worker that advertises no GPU; stopped afterwards."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


# The VAE asks for a GPU (and may fall back to the CPU, as this machine has none): it must wait for a
# worker that advertises one. The GAN needs none and runs on the plain worker at once.
GPU_AND_CPU_MODELS = {
    "vae": {
        **TINY_MODELS["vae"],
        "resources": {"gpus": 1, "cpus": 1, "memory_gb": 0.5},
        "train": {"epochs": 1, "cpu_fallback": True},
    },
    "gan": {**TINY_MODELS["gan"], "resources": {"cpus": 1, "memory_gb": 0.5}},
}
ALL_RAN = {
    stage: "ran"
    for stage in [
        "check",
        "download",
        "quantize",
        "tensorize",
        "train@vae",
        "train@gan",
        "evaluate@vae",
        "evaluate@gan",
        "report",
    ]
}


def _the_gpu_task_waits_for_a_gpu_worker(
    repo: Path, gpu_worker: Callable[[], contextlib.AbstractContextManager]
) -> None:
    """Run the flow on ``repo``'s cluster; once the CPU model is done, start ``gpu_worker`` and see the GPU model run only then."""
    from pokegen.flows.pipeline import run_pipeline

    layout = Layout(repo)
    outcome: dict = {}
    flow = threading.Thread(
        target=contextvars.copy_context().run, args=(lambda: outcome.update(run_pipeline(repo)),), daemon=True
    )
    flow.start()
    wait_for(lambda: layout.evaluation_metrics("gan").is_file(), timeout=300)
    time.sleep(3)  # the plain worker is idle now: a GPU task would have started on it by now if it could
    assert not layout.model_dir("vae").exists(), "the GPU training ran on a worker without a GPU"
    joined = time.time()
    with gpu_worker():
        flow.join(timeout=300)
    assert not flow.is_alive(), "the flow did not finish once a GPU worker joined"
    assert outcome == ALL_RAN
    assert (layout.model_dir("vae") / "weights.safetensors").stat().st_mtime > joined, (
        "trained after the GPU worker joined"
    )
    assert (layout.model_dir("gan") / "weights.safetensors").stat().st_mtime < joined
    assert stale_stages(repo) == {}, "DVC recorded the stages the workers ran"


@pytest.mark.slow
def test_models_train_in_parallel_on_dask_and_a_gpu_task_waits_for_a_gpu_worker(
    prefect_api: None, dask_cluster, tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    address = dask_cluster.scheduler_address
    repo = make_repo(
        tmp_path / "repo", models=GPU_AND_CPU_MODELS, pipeline={"runner": {"kind": "dask", "address": address}}
    )
    command = [
        "dask",
        "worker",
        address,
        "--nthreads",
        "1",
        "--resources",
        "GPU=1",
        "--no-dashboard",
        "--host",
        "127.0.0.1",
    ]
    _the_gpu_task_waits_for_a_gpu_worker(
        repo, lambda: background(command, tmp_path, child_env(), lambda: True, tmp_path / "dask-gpu-worker.log")
    )


@pytest.mark.slow
def test_on_ray_a_gpu_task_waits_for_a_node_with_a_gpu(
    prefect_api: None, tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    address = f"127.0.0.1:{free_port()}"
    env = child_env(RAY_USAGE_STATS_ENABLED="0")
    node = [
        "ray",
        "start",
        "--block",
        "--num-cpus",
        "1",
        "--object-store-memory",
        str(100 * 2**20),
        "--disable-usage-stats",
    ]
    head = [
        *node,
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        address.split(":")[1],
        "--num-gpus",
        "0",
        "--include-dashboard=false",
    ]

    def nodes() -> int:
        status = run(["ray", "status", "--address", address], tmp_path, env=env, check=False).stdout
        return status.split("Pending:")[0].count(" node_")

    # A Ray cluster of one CPU node on 127.0.0.1, then a second node that advertises a GPU.
    with background(head, tmp_path, env, lambda: nodes() == 1, tmp_path / "ray-head.log"):
        repo = make_repo(
            tmp_path / "repo", models=GPU_AND_CPU_MODELS, pipeline={"runner": {"kind": "ray", "address": address}}
        )
        gpu_node = [*node, "--address", address, "--node-ip-address", "127.0.0.1", "--num-gpus", "1"]
        _the_gpu_task_waits_for_a_gpu_worker(
            repo, lambda: background(gpu_node, tmp_path, env, lambda: nodes() == 2, tmp_path / "ray-gpu-node.log")
        )
