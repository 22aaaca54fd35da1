"""Point 8: the pokemon-pipeline Prefect flow, on Prefect's local test harness, leaves what `dvc repro` leaves."""

from __future__ import annotations

import asyncio
import contextvars
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import CourseServer, make_repo, run, set_param, stages_run, stale_stages, wait_for

from pokegen.fileio import sha256_file

pytestmark = pytest.mark.slow
MODELS = ["pixelrnn", "vae", "gan"]
STAGES = ["check", "download", "quantize", "tensorize", *(f"train@{m}" for m in MODELS), *(f"evaluate@{m}" for m in MODELS), "report"]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(read())



def _cache_entries(repo: Path) -> list[str]:
    cache = repo / ".dvc" / "cache"
    return sorted(path.relative_to(cache).as_posix() for path in cache.rglob("*") if path.is_file())


def test_the_flow_leaves_the_same_lock_and_a_clean_status(prefect_api: None, reproduced: tuple[Path, str], tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pokegen.flows.pipeline import pokemon_pipeline

    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    by_dvc, _ = reproduced  # the same pipeline files and params, run by `dvc repro`
    by_prefect = make_repo(tmp_path / "by-prefect")

    state = pokemon_pipeline(root=str(by_prefect), return_state=True)
    assert state.is_completed()
    assert state.result() == {stage: "ran" for stage in STAGES}
    names = sorted(task_run.name.rsplit("-", 1)[0] for task_run in _task_runs(state.state_details.flow_run_id))
    assert names == sorted(STAGES), "each stage is its own Prefect task run"

    assert yaml.safe_load((by_prefect / "dvc.lock").read_text()) == yaml.safe_load((by_dvc / "dvc.lock").read_text())
    assert stale_stages(by_prefect) == {}
    assert stages_run(run(["dvc", "repro"], by_prefect).stdout) == ["check"]
    assert run(["git", "status", "--porcelain"], by_prefect).stdout == run(["git", "status", "--porcelain"], by_dvc).stdout
    assert _cache_entries(by_prefect) == _cache_entries(by_dvc), "the same objects and run-cache entries"

    assert pokemon_pipeline(root=str(by_prefect)) == {"check": "ran", **{stage: "up to date" for stage in STAGES[1:]}}

    artifact = _report_artifact()
    assert sorted(row["model"] for row in artifact) == sorted(MODELS)
    markdown = (by_prefect / "reports" / "report.md").read_text()
    assert all(" | ".join(row.values()) in markdown for row in artifact), "the artifact is the report's table"


def _report_artifact() -> list[dict]:
    import json

    from prefect.client.orchestration import get_client

    from pokegen.flows.pipeline import REPORT_ARTIFACT

    async def read():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    (artifact,) = [a for a in asyncio.run(read()) if a.key == REPORT_ARTIFACT]
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_a_failing_download_is_retried_by_prefect(prefect_api: None, tmp_path: Path, course_server: CourseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from pokegen.flows import pipeline

    # The flaky route answers 503 twice per file before serving it; with the stage's own retries off,
    # only Prefect's task retries get the three files through. Delays are zeroed to keep the test fast.
    monkeypatch.setitem(pipeline.TASKS, "download", pipeline.TASKS["download"].with_options(retries=6, retry_delay_seconds=0))
    repo = make_repo(tmp_path / "repo", models={}, download={"course_urls": [course_server.url("flaky")], "retries": 0})

    state = pipeline.pokemon_pipeline(root=str(repo), return_state=True)
    assert state.is_completed()
    (download,) = [t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("download")]
    assert download.run_count == 7  # 3 files x 2 refusals, then success
    assert pipeline.TASKS["download"].retries >= 1, "the shipped flow retries downloads"


def test_a_gpu_training_is_tagged_and_held_to_the_gpu_limit(prefect_api: None, tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from pokegen.flows.pipeline import GPU_LIMIT, gpu_slots, pokemon_pipeline

    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    # This machine has no GPU: the model asks for one and allows the CPU, so it runs, tagged and limited.
    models = {"vae": {"channels": 8, "embed": 4, "iw_samples": 4, "train": {"epochs": 1, "cpu_fallback": True}, "resources": {"gpus": 1}}}
    repo = make_repo(tmp_path / "repo", models=models)
    state = pokemon_pipeline(root=str(repo), return_state=True)
    assert state.is_completed()
    (training,) = [t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("train@vae")]
    assert "gpu" in training.tags and "model:vae" in training.tags

    async def read_limit():
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(GPU_LIMIT)

    limit = asyncio.run(read_limit())
    assert limit.limit == gpu_slots() == 1
    assert limit.active_slots == 0, "the training released its GPU slot"


def test_a_failing_stage_fails_the_run_keeps_what_came_before_and_the_rerun_starts_there(prefect_api: None, reproduced: tuple[Path, str], tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pokegen.flows.pipeline import pokemon_pipeline

    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    repo = tmp_path / "clone"
    shutil.copytree(reproduced[0], repo, symlinks=True)
    lock = (repo / "dvc.lock").read_text()
    weights = sha256_file(repo / "models/pixelrnn/model/weights.safetensors")

    set_param(repo, "evaluate.nearest_k", 100)  # more than the 40 test sprites: evaluate@MODEL refuses it
    state = pokemon_pipeline(root=str(repo), return_state=True)
    assert state.is_failed() and "evaluate.nearest_k = 100 needs more test sprites" in state.message, state.message
    assert sha256_file(repo / "models/pixelrnn/model/weights.safetensors") == weights, "the trainings before it are intact"
    assert (repo / "dvc.lock").read_text() == lock, "nothing half-done was recorded"

    set_param(repo, "evaluate.nearest_k", 5)  # the fix
    again = pokemon_pipeline(root=str(repo))
    assert {stage for stage, done in again.items() if done != "up to date"} == {"check", *(f"evaluate@{m}" for m in MODELS)}, "it starts at the failed stage"
    assert {again[f"evaluate@{m}"] for m in MODELS} == {"restored"}, "inputs a recorded run had: DVC's run cache, as in dvc repro"
    assert list(again) == STAGES, "the outcome lists the stages in DVC's order, whatever order they finished in"
    assert again["report"] == "up to date", "the same evaluations as before: the report stands"
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == yaml.safe_load(lock)
    assert stale_stages(repo) == {}


def test_a_second_run_meets_the_lock_and_changes_nothing(prefect_api: None, tmp_path: Path, course_server: CourseServer) -> None:
    from prefect.settings import PREFECT_API_URL

    from pokegen.flows.pipeline import pokemon_pipeline

    repo = make_repo(tmp_path / "repo", models={}, download={"course_urls": [course_server.url("gate")], "retries": 0, "timeout_s": 120})
    outcome: dict[str, str] = {}
    first = threading.Thread(target=contextvars.copy_context().run, args=(lambda: outcome.update(pokemon_pipeline(root=str(repo))),))
    first.start()
    try:
        wait_for(lambda: course_server.hits("/gate/"), timeout=60)  # the first run holds the repository, mid-download
        recorded = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        assert set(recorded) == {"check"}, "so far the first run recorded its check only"
        by_dvc = run(["dvc", "repro"], repo, check=False)
        assert by_dvc.returncode != 0 and "Unable to acquire lock" in by_dvc.stderr
        by_flow = run(["pokegen", "pipeline"], repo, env={"PREFECT_API_URL": PREFECT_API_URL.value()}, check=False)
        assert by_flow.returncode == 2 and "holds its lock" in by_flow.stderr and "this run changed nothing" in by_flow.stderr, by_flow.stderr
        assert not (repo / "data" / "quantized").exists() and yaml.safe_load((repo / "dvc.lock").read_text())["stages"] == recorded
    finally:
        course_server.gate.set()
        first.join(timeout=300)
    assert outcome == {"check": "ran", "download": "ran", "quantize": "ran", "tensorize": "ran", "report": "ran"}
    assert stale_stages(repo) == {}
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == set(outcome)


EXPORT = {  # a stage a user adds after the report: dvc.yaml is the one definition of the DAG
    "cmd": "python -c \"import pathlib; pathlib.Path('export.md').write_text(pathlib.Path('reports/report.md').read_text().upper())\"",
    "deps": ["reports"],
    "outs": ["export.md"],
}


def test_a_stage_added_to_dvc_yaml_runs_in_the_flow_and_shows_in_plan(prefect_api: None, tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pokegen.flows.pipeline import pokemon_pipeline

    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    repo = make_repo(tmp_path / "repo", models={})
    definition = yaml.safe_load((repo / "dvc.yaml").read_text())
    definition["stages"]["export"] = EXPORT
    (repo / "dvc.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))

    plan = {line.split()[0]: line for line in run(["pokegen", "plan"], repo).stdout.splitlines()}
    assert list(plan)[-1] == "export" and plan["export"].endswith("after report"), plan

    state = pokemon_pipeline(root=str(repo), return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {stage: "ran" for stage in ["check", "download", "quantize", "tensorize", "report", "export"]}
    assert (repo / "export.md").read_text() == (repo / "reports" / "report.md").read_text().upper()
    (export,) = [t for t in _task_runs(state.state_details.flow_run_id) if t.name.startswith("export")]
    assert export.state.is_completed(), "the added stage is its own task run"
    assert "export" in yaml.safe_load((repo / "dvc.lock").read_text())["stages"], "DVC recorded it"
    assert stale_stages(repo) == {} and stages_run(run(["dvc", "repro"], repo).stdout) == ["check"]

    definition["stages"]["export"]["cmd"] = "python -c \"print('no report today'); raise SystemExit(3)\""
    (repo / "dvc.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    failed = pokemon_pipeline(root=str(repo), return_state=True)
    assert failed.is_failed() and "stage 'export' in dvc.yaml" in failed.message and "exited 3" in failed.message, failed.message
    assert "no report today" in failed.message, "the command's own output is in the message"


def test_secrets_come_from_prefect_secret_blocks_unless_the_worker_sets_them(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from prefect.blocks.system import Secret

    from pokegen.flows.results import SecretError, secrets_into_environment

    Secret(value="from-the-block").save("pokegen-test-token", overwrite=True)
    monkeypatch.setenv("POKEGEN_GIT_TOKEN", "")  # unset for the function; restored after the test
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-worker")
    wanted = {"POKEGEN_GIT_TOKEN": "pokegen-test-token", "AWS_ACCESS_KEY_ID": "pokegen-test-token"}
    assert secrets_into_environment(wanted) == ["POKEGEN_GIT_TOKEN"]
    assert os.environ["POKEGEN_GIT_TOKEN"] == "from-the-block"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "from-the-worker", "the worker's own environment wins"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    with pytest.raises(SecretError, match=r"deployment.secrets.AWS_SECRET_ACCESS_KEY names the Prefect Secret block 'nowhere'"):
        secrets_into_environment({"AWS_SECRET_ACCESS_KEY": "nowhere"})
