"""The scheduled deployment: a real `prefect server start` on 127.0.0.1 (SQLite) and a real process worker.

`pokegen deploy` registers it, `prefect deployment run` triggers it, the worker runs it, and the
repository ends as `dvc repro` leaves it, with the outputs pushed to the DVC remote.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO_ROOT, answers, background, child_env, free_port, make_repo, run, set_param, stale_stages, wait_for

pytestmark = pytest.mark.slow
MODELS = ["pixelrnn", "vae", "gan"]
STAGES = [
    "check",
    "download",
    "quantize",
    "tensorize",
    *(f"train@{m}" for m in MODELS),
    *(f"evaluate@{m}" for m in MODELS),
    "report",
]
NEVER_SOON = "0 3 1 1 *"  # 03:00 on January 1st: a real schedule that does not fire while the test runs


def readme_commands() -> dict[str, list[str]]:
    """The README's deployment commands, by their second word (server, config, deploy, worker, deployment)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(prefect server start.*?)```", text, re.DOTALL).group(1)
    commands = [shlex.split(line.split("#")[0].strip().rstrip("&")) for line in block.splitlines()]
    return {command[1]: command for command in commands}


README = readme_commands()


def test_the_readme_points_the_client_at_the_server_it_starts() -> None:
    start = README["server"]
    host, port = start[start.index("--host") + 1], start[start.index("--port") + 1]
    assert README["config"] == ["prefect", "config", "set", f"PREFECT_API_URL=http://{host}:{port}/api"]
    assert README["deploy"] == ["pokegen", "deploy"]


@dataclass
class PrefectServer:
    api: str
    env: dict[str, str]  # what a client of this server (pokegen, the prefect CLI, a worker) needs

    def get(self, path: str):
        return httpx.get(f"{self.api}{path}", timeout=10).raise_for_status().json()

    def post(self, path: str, body: dict):
        return httpx.post(f"{self.api}{path}", json=body, timeout=10).raise_for_status().json()

    def flow_run(self, run_id: str) -> dict:
        return self.get(f"/flow_runs/{run_id}")

    def task_runs(self, run_id: str) -> list[dict]:
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})

    def logs(self, run_id: str) -> list[dict]:
        """The flow run's logs, once the server has stored the last one (they arrive in batches, after the run)."""
        stored: list[dict] = []

        def complete() -> bool:
            stored[:] = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
            return any(log["task_run_id"] is None and log["message"].startswith("Finished in state") for log in stored)

        try:
            wait_for(complete, timeout=60)
        except AssertionError:
            raise AssertionError(
                f"{len(stored)} logs stored, none says the run finished: {[m['message'][:80] for m in stored[-8:]]}"
            ) from None
        return stored


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-server")  # its own PREFECT_HOME: profiles and the SQLite database
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    common = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server_env = child_env(**common, PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1")
    server_env.pop("PREFECT_API_URL", None)
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(command, home, server_env, lambda: answers(f"{api}/health"), home / "server.log"):
        yield PrefectServer(api, {**common, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"})


def trigger(server: PrefectServer, repo: Path) -> str:
    """`prefect deployment run`, as the README has it: the new flow run's id."""
    out = run(README["deployment"], repo, env=server.env).stdout
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def wait_final(server: PrefectServer, run_ids: list[str], timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [server.flow_run(run_id) for run_id in run_ids]
        if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs):
            return runs
        assert time.monotonic() < deadline, f"flow runs still going: {[(r['name'], r['state_name']) for r in runs]}"
        time.sleep(1)


def test_deploy_then_two_triggered_runs_leave_the_repo_as_dvc_repro_does(
    prefect_server: PrefectServer, reproduced: tuple[Path, str], tmp_path: Path, course_data: Path
) -> None:
    by_dvc, _ = reproduced  # the same pipeline files and params, run by `dvc repro`
    repo = make_repo(tmp_path / "repo", deployment={"cron": NEVER_SOON})

    # The README's commands, on a server of the test's own (its port, its PREFECT_API_URL).
    registered = run(README["deploy"], repo, env=prefect_server.env).stdout
    assert f"'pokemon-pipeline/pokegen' registered: cron '{NEVER_SOON}' (UTC)" in registered
    deployment = prefect_server.get("/deployments/name/pokemon-pipeline/pokegen")
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [NEVER_SOON]
    assert deployment["parameters"] == {"root": str(repo), "push": True}, "parameters come from params.yaml"
    scheduled: list[dict] = []
    wait_for(
        lambda: (
            scheduled.extend(
                prefect_server.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}})
            )
            or scheduled
        )
    )
    assert all(
        r["state_type"] == "SCHEDULED" and r["expected_start_time"].endswith("-01-01T03:00:00Z") for r in scheduled
    )

    worker_env = child_env(**prefect_server.env, POKEGEN_DATA_MIRROR=str(course_data))
    with background(README["worker"], tmp_path, worker_env, lambda: True, tmp_path / "worker.log"):
        first = trigger(prefect_server, repo)
        second = trigger(prefect_server, repo)  # at once: the deployment runs one at a time, so it waits
        first_run, second_run = wait_final(prefect_server, [first, second])
        # A finished run's process sends its last logs as it exits: read them before the worker stops.
        first_logs, second_logs = prefect_server.logs(first), prefect_server.logs(second)
    assert first_run["state_type"] == second_run["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[
        -3000:
    ]
    assert datetime.fromisoformat(second_run["start_time"]) >= datetime.fromisoformat(first_run["end_time"]), (
        "the second run waited for the first"
    )

    # The repository as `dvc repro` leaves it, and the remote holding every output.
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == yaml.safe_load((by_dvc / "dvc.lock").read_text())
    assert stale_stages(repo) == {}
    assert "in sync" in run(["dvc", "status", "--cloud"], repo).stdout, "the run pushed to the DVC remote"

    # Each stage its own task run with its own logs; the report table published; the idle run says so.
    tasks = {t["name"].rsplit("-", 1)[0]: t for t in prefect_server.task_runs(first)}
    assert sorted(tasks) == sorted([*STAGES, "push"])
    for stage in ("quantize", "train@pixelrnn", "evaluate@gan", "report"):
        assert any(
            log["task_run_id"] == tasks[stage]["id"] and log["name"].startswith("pokegen") for log in first_logs
        ), f"{stage} logs"
    artifacts = prefect_server.post(
        "/artifacts/filter", {"artifacts": {"key": {"any_": ["pokegen-report"]}, "flow_run_id": {"any_": [first]}}}
    )
    assert len(artifacts) == 1 and artifacts[0]["type"] == "table"
    assert sorted(t["name"].rsplit("-", 1)[0] for t in prefect_server.task_runs(second)) == ["check", "push"], (
        "nothing changed: no stage ran but the check, which runs on every run"
    )
    messages = [log["message"] for log in second_logs]
    assert "Data and pipelines are up to date." in messages
    assert any("It already had every output" in m for m in messages)


def test_deploy_names_a_bad_schedule_and_a_missing_server(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", deployment={"cron": "every day"})
    bad = run(["pokegen", "deploy"], repo, check=False)
    assert bad.returncode == 2 and "deployment.cron = 'every day' is not a cron expression" in bad.stderr
    assert "Traceback" not in bad.stderr

    set_param(repo, "deployment.cron", "0 3 * * *")
    set_param(repo, "deployment.timezone", "Mars/Olympus")
    bad = run(["pokegen", "deploy"], repo, check=False)
    assert bad.returncode == 2 and "deployment.timezone = 'Mars/Olympus' is not an IANA time zone" in bad.stderr

    set_param(repo, "deployment.timezone", "Asia/Taipei")
    # No server configured: a deployment on Prefect's throwaway one would vanish, so say what to start.
    lonely = run(
        ["pokegen", "deploy"], repo, env={"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_API_URL": None}, check=False
    )
    assert lonely.returncode == 2 and "prefect server start" in lonely.stderr and "PREFECT_API_URL" in lonely.stderr


def test_push_without_a_remote_names_the_config_and_the_fix(tmp_path: Path) -> None:
    from pokegen.flows.dvc_stages import PipelineRepo, PushError

    repo = make_repo(tmp_path / "repo", models={})
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")  # no remote
    with (
        PipelineRepo(repo) as dvc,
        pytest.raises(PushError, match=r"\.dvc/config: no default DVC remote to push to; add one \(dvc remote add -d"),
    ):
        dvc.push()
