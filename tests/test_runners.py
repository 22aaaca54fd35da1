"""Declared resources reach the engine: Dask resource annotations, Ray options, and a real Dask cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, TINY_MODELS, make_repo, run, wait_for

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
    with pytest.raises(ParamsError, match=r"pipeline.runner.kind = 'ray' needs prefect-ray: pip install 'pokegen\[ray\]'"):
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


@pytest.mark.slow
def test_models_train_in_parallel_on_dask_and_a_gpu_task_waits_for_a_gpu_worker(
    prefect_api: None, dask_cluster, tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pokegen.flows.pipeline import run_pipeline

    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    # The VAE asks for a GPU (and may fall back to the CPU, as this machine has none): on Dask it must
    # wait for a worker that advertises GPU=1. The GAN needs none and runs on the plain worker at once.
    models = {"vae": {**TINY_MODELS["vae"], "resources": {"gpus": 1}, "train": {"epochs": 1, "cpu_fallback": True}}, "gan": TINY_MODELS["gan"]}
    repo = make_repo(tmp_path / "repo", models=models, pipeline={"runner": {"kind": "dask", "address": dask_cluster.scheduler_address}})
    layout = Layout(repo)
    outcome: dict = {}
    flow = threading.Thread(target=lambda: outcome.update(run_pipeline(repo)), daemon=True)
    flow.start()

    wait_for(lambda: (layout.evaluation_metrics("gan")).is_file(), timeout=300)
    time.sleep(3)  # the plain worker is idle now: a GPU task would have started on it by now if it could
    assert not layout.model_dir("vae").exists(), "the GPU training ran on a worker without a GPU"

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    gpu_worker = subprocess.Popen(
        [str(BIN / "dask"), "worker", dask_cluster.scheduler_address, "--nthreads", "1", "--resources", "GPU=1", "--no-dashboard", "--host", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    joined = time.time()
    try:
        flow.join(timeout=300)
    finally:
        gpu_worker.terminate()
        gpu_worker.wait(timeout=30)
    assert not flow.is_alive(), "the flow did not finish once a GPU worker joined"
    assert outcome == {stage: "ran" for stage in ["download", "quantize", "tensorize", "train@vae", "train@gan", "evaluate@vae", "evaluate@gan", "report"]}
    assert (layout.model_dir("vae") / "weights.safetensors").stat().st_mtime > joined, "trained after the GPU worker joined"
    assert (layout.model_dir("gan") / "weights.safetensors").stat().st_mtime < joined
    assert "up to date" in run(["dvc", "status"], repo).stdout, "DVC recorded the stages the workers ran"
