"""The scheduled deployment as a team uses it, on real parts on 127.0.0.1: a bare git repository as
`origin`, a folder as the DVC remote, `prefect server start` (SQLite) and a process worker started in
a folder of its own, not in anyone's clone.

The README's commands put a clone's `main` on origin and register the deployment; the worker clones
origin for each run, records what changed on the results branch, and a teammate's fresh clone
restores the run's models and report without training.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import (
    GIT_IDENTITY,
    REPO_ROOT,
    answers,
    background,
    child_env,
    free_port,
    make_repo,
    run,
    set_param,
    stages_run,
    stale_stages,
    wait_for,
)

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
RESULTS = "pokegen-results"
# What the README's commands name, replaced by this test's own origin and DVC remote.
README_ORIGIN = "git@git.example.org:team/pokegen.git"
README_DVC_REMOTE = "s3://my-bucket/pokegen"


def readme_block(first_command: str) -> list[list[str]]:
    """The README's ```bash block that starts with ``first_command``: its commands, `a && b` as two."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(rf"```bash\n({re.escape(first_command)}.*?)```", text, re.DOTALL).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("  #")[0].strip().removesuffix("&").strip()
        commands += [shlex.split(part) for part in line.split(" && ")]
    return commands


DEPLOY = readme_block("git remote add origin")
RESTORE = readme_block("git clone")


def readme(commands: list[list[str]], *words: str) -> list[str]:
    """The one command of ``commands`` that starts with ``words``."""
    (found,) = [c for c in commands if c[: len(words)] == list(words)]
    return found


def test_the_readme_points_the_client_at_the_server_it_starts() -> None:
    start = readme(DEPLOY, "prefect", "server", "start")
    host, port = start[start.index("--host") + 1], start[start.index("--port") + 1]
    assert readme(DEPLOY, "prefect", "config") == ["prefect", "config", "set", f"PREFECT_API_URL=http://{host}:{port}/api"]
    assert readme(DEPLOY, "pokegen") == ["pokegen", "deploy"]
    assert readme(DEPLOY, "git", "remote") == ["git", "remote", "add", "origin", README_ORIGIN]
    assert readme(RESTORE, "git", "clone")[2] == README_ORIGIN
    assert readme(RESTORE, "git", "checkout") == ["git", "checkout", RESULTS]


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

    def task_names(self, run_id: str) -> list[str]:
        runs = self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
        return sorted(t["name"].rsplit("-", 1)[0] for t in runs)

    def artifact(self, run_id: str, key: str) -> dict:
        (found,) = self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}}})
        return found

    def logs(self, run_id: str) -> list[str]:
        """The flow run's log messages, once the server has stored the last one (they arrive in batches)."""
        stored: list[dict] = []

        def complete() -> bool:
            stored[:] = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
            return any(log["task_run_id"] is None and log["message"].startswith("Finished in state") for log in stored)

        wait_for(complete, timeout=60)
        return [log["message"] for log in stored]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-server")  # its own PREFECT_HOME: profiles and the SQLite database
    start = readme(DEPLOY, "prefect", "server", "start")
    port = free_port()  # the README's command, on a port of the test's own
    start[start.index("--port") + 1] = str(port)
    api = f"http://127.0.0.1:{port}/api"
    common = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server_env = child_env(**common, PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1")
    server_env.pop("PREFECT_API_URL", None)
    with background(start, home, server_env, lambda: answers(f"{api}/health"), home / "server.log"):
        yield PrefectServer(api, {**common, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"})


@pytest.fixture(scope="module")
def worker(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory, course_data: Path) -> Iterator[Path]:
    """The README's worker, started in a folder of its own: it has no clone, only pokegen installed."""
    home = tmp_path_factory.mktemp("worker")
    env = child_env(**prefect_server.env, POKEGEN_DATA_MIRROR=str(course_data))
    with background(readme(DEPLOY, "prefect", "worker"), home, env, lambda: True, home / "worker.log"):
        yield home / "worker.log"


@dataclass
class Team:
    origin: Path  # the bare git repository every clone pulls from and pushes to
    dvc_remote: Path
    dev: Path  # the clone that deployed

    def results_head(self) -> str | None:
        listed = run(["git", "ls-remote", str(self.origin), f"refs/heads/{RESULTS}"], self.dev).stdout
        return listed.split()[0] if listed.strip() else None

    def show(self, commit: str, path: str) -> str:
        return run(["git", "--git-dir", str(self.origin), "show", f"{commit}:{path}"], self.dev).stdout

    def commit_and_push(self, message: str) -> None:
        run(["git", "commit", "-qam", message], self.dev, env=GIT_IDENTITY)
        run(["git", "push", "-q", "origin", "main"], self.dev)


def deploy_by_the_readme(base: Path, prefect_server: PrefectServer) -> tuple[Team, str]:
    """A clone's main pushed to a bare origin, with a DVC remote folder, and `pokegen deploy`: as the README says."""
    origin, dvc_remote = base / "origin.git", base / "dvc-remote"
    run(["git", "init", "-q", "--bare", "--initial-branch", "main", str(origin)], base)
    dev = make_repo(base / "dev", deployment={"cron": NEVER_SOON})
    run(["git", "branch", "-M", "main"], dev)
    registered = ""
    for command in DEPLOY:
        command = [{README_ORIGIN: str(origin), README_DVC_REMOTE: str(dvc_remote)}.get(w, w) for w in command]
        if command[:2] == ["prefect", "deployment"]:
            break  # triggered by the test, once its worker runs
        if command[:3] == ["prefect", "server", "start"] or command[:3] == ["prefect", "worker", "start"]:
            continue  # the fixtures' own, on the test's port
        if command[:2] == ["prefect", "config"]:
            continue  # the test's clients get PREFECT_API_URL from the fixture (no profile of the developer's touched)
        registered += run(command, dev, env={**prefect_server.env, **GIT_IDENTITY}).stdout
    return Team(origin, dvc_remote, dev), registered


def trigger(server: PrefectServer, team: Team, name: str = "pokegen") -> str:
    """`prefect deployment run`, as the README has it: the new flow run's id."""
    command = readme(DEPLOY, "prefect", "deployment", "run")[:-1] + [f"pokemon-pipeline/{name}"]
    out = run(command, team.dev, env=server.env).stdout
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def wait_final(server: PrefectServer, run_ids: list[str], timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [server.flow_run(run_id) for run_id in run_ids]
        if all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs):
            return runs
        assert time.monotonic() < deadline, f"flow runs still going: {[(r['name'], r['state_name']) for r in runs]}"
        time.sleep(1)


@dataclass
class FirstRuns:
    team: Team
    registered: str
    deployment: dict
    runs: list[dict]  # two runs triggered at once
    logs: list[list[str]]


@pytest.fixture(scope="module")
def first_runs(prefect_server: PrefectServer, worker: Path, tmp_path_factory: pytest.TempPathFactory) -> FirstRuns:
    """Deployed by the README's commands, then two runs triggered at once (the second must wait)."""
    team, registered = deploy_by_the_readme(tmp_path_factory.mktemp("team"), prefect_server)
    deployment = prefect_server.get("/deployments/name/pokemon-pipeline/pokegen")
    ids = [trigger(prefect_server, team), trigger(prefect_server, team)]
    runs = wait_final(prefect_server, ids)
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], worker.read_text()[-4000:]
    return FirstRuns(team, registered, deployment, runs, [prefect_server.logs(i) for i in ids])


def test_the_deployment_clones_origin_at_the_branch_params_names(first_runs: FirstRuns) -> None:
    assert f"'pokemon-pipeline/pokegen' registered: cron '{NEVER_SOON}' (UTC)" in first_runs.registered
    deployment = first_runs.deployment
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.git_clone": {"repository": str(first_runs.team.origin), "branch": "main"}}
    ]
    assert deployment["parameters"] == {"root": ".", "push": True, "record": True}, "from params.yaml's deployment"
    assert deployment["entrypoint"] == "pokegen.flows.pipeline.pokemon_pipeline"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [NEVER_SOON]


def test_a_run_records_on_the_results_branch_and_a_teammate_restores_it_without_training(
    first_runs: FirstRuns, prefect_server: PrefectServer, reproduced: tuple[Path, str], tmp_path: Path
) -> None:
    team = first_runs.team
    first, second = first_runs.runs
    assert datetime.fromisoformat(second["start_time"]) >= datetime.fromisoformat(first["end_time"]), (
        "the second run waited for the first"
    )
    assert prefect_server.task_names(first["id"]) == sorted(["pull", *STAGES, "push", "record"])
    assert prefect_server.task_names(second["id"]) == ["check", "pull", "push", "record"], (
        "the second run started from the first's record: nothing to run but the check"
    )
    assert "Nothing changed since the last recorded run: nothing recorded." in first_runs.logs[1]

    # One record: a commit on the results branch on top of main, holding dvc.lock and the metrics.
    main = run(["git", "ls-remote", str(team.origin), "refs/heads/main"], team.dev).stdout.split()[0]
    head = team.results_head()
    parents = run(["git", "--git-dir", str(team.origin), "rev-parse", f"{head}^@"], team.dev).stdout.split()
    assert parents == [main], "the second run recorded nothing"
    message = run(["git", "--git-dir", str(team.origin), "log", "-1", "--format=%B", head], team.dev).stdout
    assert f"Source-Commit: {main}" in message and first["name"] in message

    # The Prefect UI: the report table and the figures against the previous record, with each model's samples.
    assert prefect_server.artifact(first["id"], "pokegen-report")["type"] == "table"
    summary = prefect_server.artifact(first["id"], "pokegen-changes")
    assert summary["type"] == "markdown"
    assert f"Recorded as commit `{head[:12]}` on `{RESULTS}`" in summary["data"]
    assert summary["data"].count("](data:image/png;base64,") == len(MODELS)

    # A teammate: the README's commands in a fresh clone; nothing to train, the same outputs as `dvc repro`.
    mate = tmp_path / "pokegen"
    for command in RESTORE:
        if command[:2] == ["git", "clone"]:
            run(["git", "clone", "-q", str(team.origin), str(mate)], tmp_path)
        elif command[0] in ("cd", "python3", "pip", "."):
            continue  # the install: this test's virtual environment is it
        else:
            run(command, mate)
    assert stale_stages(mate) == {}, "every output restored: nothing to train"
    by_dvc, _ = reproduced  # the same pipeline files and params, run by `dvc repro`
    assert yaml.safe_load((mate / "dvc.lock").read_text()) == yaml.safe_load((by_dvc / "dvc.lock").read_text())
    assert (mate / "reports" / "index.html").is_file() and (mate / "models" / "vae" / "model").is_dir()
    pixelrnn = json.loads((mate / "evaluation" / "pixelrnn" / "metrics.json").read_text())
    assert f"| pixelrnn | test bits/pixel | — | {pixelrnn['likelihood']['bits_per_pixel']:.3f} |" in summary["data"]
    assert stages_run(run(["dvc", "repro"], mate).stdout) == ["check"]


def copy_of(team: Team, base: Path, name: str, prefect_server: PrefectServer) -> Team:
    """Another team's repository holding the first record (origin and DVC remote copied), deployed as ``name``."""
    origin, dvc_remote = base / "origin.git", base / "dvc-remote"
    run(["git", "clone", "-q", "--bare", str(team.origin), str(origin)], base)
    shutil.copytree(team.dvc_remote, dvc_remote)
    dev = base / "dev"
    run(["git", "clone", "-q", str(origin), str(dev)], base)
    (dev / ".dvc" / "config").write_text((dev / ".dvc" / "config").read_text().replace(str(team.dvc_remote), str(dvc_remote)))
    set_param(dev, "deployment.name", name)
    copy = Team(origin, dvc_remote, dev)
    copy.commit_and_push(f"deployment {name}, its own DVC remote")
    run(["pokegen", "deploy"], dev, env=prefect_server.env)
    return copy


def test_a_regression_beyond_the_limit_fails_the_run_naming_the_figures_and_is_still_recorded(
    first_runs: FirstRuns, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    team = copy_of(first_runs.team, tmp_path, "regression", prefect_server)
    before = team.results_head()
    set_param(team.dev, "models.pixelrnn.train.lr", 1e-5)  # barely moves from its start: much worse than lr 0.01
    team.commit_and_push("pixelrnn: a learning rate far too low")

    (failed,) = wait_final(prefect_server, [trigger(prefect_server, team, "regression")])
    assert failed["state_type"] == "FAILED"
    after = team.results_head()
    assert after != before, "recorded for inspection despite the regression"
    old, new = (
        json.loads(team.show(commit, "evaluation/pixelrnn/metrics.json"))["likelihood"]["bits_per_pixel"]
        for commit in (before, after)
    )
    assert new - old > 0.05
    assert f"pixelrnn: test bits/pixel {old:.3f} -> {new:.3f}" in failed["state"]["message"]
    assert "deployment.regression.bits_per_pixel allows 0.05" in failed["state"]["message"]
    assert f"recorded on {RESULTS} ({after[:12]})" in failed["state"]["message"]


def test_a_refused_git_push_fails_naming_the_remote_after_the_outputs_reached_the_dvc_remote(
    first_runs: FirstRuns, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    team = copy_of(first_runs.team, tmp_path, "refused", prefect_server)
    before = team.results_head()
    hook = team.origin / "hooks" / "pre-receive"  # as a git server protects a branch from this worker
    hook.write_text(f'#!/bin/sh\ngrep -q "refs/heads/{RESULTS}" && {{ echo "{RESULTS} is protected" >&2; exit 1; }}\nexit 0\n')
    hook.chmod(0o755)
    set_param(team.dev, "models.vae.train.epochs", 1)
    set_param(team.dev, "deployment.regression", {"judge": None, "bits_per_pixel": None, "precision": None, "recall": None})  # not the point
    team.commit_and_push("vae: one epoch")
    stored_before = sum(1 for p in team.dvc_remote.rglob("*") if p.is_file())

    run_id = trigger(prefect_server, team, "refused")
    (failed,) = wait_final(prefect_server, [run_id])
    message = failed["state"]["message"]
    assert failed["state_type"] == "FAILED"
    assert f"git push to {team.origin} (branch {RESULTS}) was refused" in message
    assert "The run's outputs are on the DVC remote" in message
    assert team.results_head() == before
    pushed = [m for m in prefect_server.logs(run_id) if m.startswith("Pushed ")]
    sent = int(re.match(r"Pushed (\d+) files", pushed[0]).group(1))
    stored_after = sum(1 for p in team.dvc_remote.rglob("*") if p.is_file())
    assert sent > 0 and stored_after > stored_before, "the retrained VAE and its evaluation reached the DVC remote"

    # Nothing trained is lost: once the worker may push, the next run restores the VAE from DVC's run cache.
    hook.unlink()
    rerun_id = trigger(prefect_server, team, "refused")
    (rerun,) = wait_final(prefect_server, [rerun_id])
    assert rerun["state_type"] == "COMPLETED"
    logs = prefect_server.logs(rerun_id)
    for stage in ("train@vae", "evaluate@vae", "report"):
        assert f"Stage '{stage}' is cached: its outputs restored from DVC's run cache, not run" in logs
    assert "train@vae" not in prefect_server.task_names(rerun_id), "not trained again"
    assert team.results_head() != before


def test_deploy_names_a_bad_schedule_a_missing_server_and_a_missing_origin(tmp_path: Path, prefect_server: PrefectServer) -> None:
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

    # A clone that is on no git server: nothing for a worker to clone.
    no_origin = run(["pokegen", "deploy"], repo, env=prefect_server.env, check=False)
    assert no_origin.returncode == 2 and "no git remote 'origin' for the workers to clone" in no_origin.stderr
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    unpushed = run(["pokegen", "deploy"], repo, env=prefect_server.env, check=False)
    assert unpushed.returncode == 2 and f"deployment.branch = 'main' is not a branch of {origin}" in unpushed.stderr


def test_push_without_a_remote_names_the_config_and_the_fix(tmp_path: Path) -> None:
    from pokegen.flows.dvc_stages import PipelineRepo, PushError

    repo = make_repo(tmp_path / "repo", models={})
    (repo / ".dvc" / "config").write_text("[core]\n    analytics = false\n")  # no remote
    with (
        PipelineRepo(repo) as dvc,
        pytest.raises(PushError, match=r"\.dvc/config: no default DVC remote to push to; add one \(dvc remote add -d"),
    ):
        dvc.push()
