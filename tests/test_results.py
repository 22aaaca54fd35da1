"""Recording scheduled runs on the results branch (flows/results.py), on real git repositories on disk:
a bare `origin`, shallow clones of it as Prefect's git_clone makes them, and a server-side hook where a
git server would refuse a push. The full deployment is in test_deployment.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import GIT_IDENTITY, REPO_ROOT, free_port, run

from pokegen.errors import ParamsError
from pokegen.flows.deployment import CODE_FOLDERS, WorkerCodeError, check_worker_code, code_differences
from pokegen.flows.results import (
    FIGURES,
    Figure,
    RecordError,
    ResultsBranch,
    regressions,
    with_token,
    without_credentials,
)
from pokegen.params import RegressionLimits, parse_params

RESULTS = "pokegen-results"
METRICS = "evaluation/pixelrnn/metrics.json"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository whose main holds a dvc.lock and a metrics file, as a project's does."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (seed / "params.yaml").write_text("models: {}\n")
    run(["git", "init", "-q", "--initial-branch", "main"], seed)
    run(["git", "add", "-A"], seed)
    run(["git", "commit", "-qm", "main"], seed, env=GIT_IDENTITY)
    bare = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(seed), str(bare)], tmp_path)
    return bare


def clone(origin: Path, path: Path) -> Path:
    """A shallow clone of main, as Prefect's git_clone step makes one (file://, so --depth applies)."""
    run(["git", "clone", "-q", "--depth", "1", "--branch", "main", f"file://{origin}", str(path)], path.parent)
    return path


def a_run(workdir: Path, lock: str, bits: float) -> None:
    """What a run leaves in its clone: a new dvc.lock and metrics."""
    (workdir / "dvc.lock").write_text(lock)
    (workdir / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (workdir / METRICS).write_text(f'{{"likelihood": {{"bits_per_pixel": {bits}}}}}\n')


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo).stdout.strip()


def test_a_run_starts_from_the_last_record_and_records_only_what_changed(origin: Path, tmp_path: Path) -> None:
    first = clone(origin, tmp_path / "first")
    branch = ResultsBranch(first, RESULTS)
    assert branch.start([METRICS]) is None, "no record yet"
    a_run(first, "lock: first\n", 2.4)
    recorded = branch.push(branch.commit([METRICS], "pokegen run first"))
    assert git(first, "ls-remote", str(origin), f"refs/heads/{RESULTS}").split()[0] == recorded
    assert git(origin, "rev-parse", f"{recorded}^@") == git(origin, "rev-parse", "main"), "on top of main"
    assert git(origin, "show", f"{recorded}:dvc.lock") == "lock: first"

    second = clone(origin, tmp_path / "second")
    later = ResultsBranch(second, RESULTS)
    assert later.start([METRICS]) == recorded
    assert (second / "dvc.lock").read_text() == "lock: first\n", "the last record's lock, for dvc pull"
    assert (second / METRICS).is_file()
    assert later.commit([METRICS], "pokegen run second") is None, "nothing changed: nothing to record"

    a_run(second, "lock: second\n", 2.3)
    newer = later.push(later.commit([METRICS], "pokegen run second"))
    assert git(origin, "rev-parse", f"{newer}^@") == recorded, "main did not move: the last record is its one parent"


def test_two_runs_recording_at_once_keep_both_records(origin: Path, tmp_path: Path) -> None:
    one, other = clone(origin, tmp_path / "one"), clone(origin, tmp_path / "other")
    branches = [ResultsBranch(one, RESULTS), ResultsBranch(other, RESULTS)]
    for branch in branches:
        branch.start([METRICS])  # both start before either records
    a_run(one, "lock: one\n", 2.4)
    a_run(other, "lock: other\n", 2.5)
    first = branches[0].push(branches[0].commit([METRICS], "run one"))
    second = branches[1].push(branches[1].commit([METRICS], "run other"))  # refused once (fetch first), then on top

    history = git(origin, "rev-list", "--first-parent", RESULTS).split()
    assert history[:2] == [second, first]
    assert git(origin, "show", f"{second}:dvc.lock") == "lock: other"
    assert git(origin, "show", f"{first}:dvc.lock") == "lock: one", "the first record is kept"


def test_a_refused_push_names_the_remote_and_its_reason(origin: Path, tmp_path: Path) -> None:
    hook = origin / "hooks" / "pre-receive"  # a protected branch, as a git server refuses it
    hook.write_text("#!/bin/sh\necho 'pokegen-results is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    work = clone(origin, tmp_path / "work")
    branch = ResultsBranch(work, RESULTS)
    branch.start([METRICS])
    a_run(work, "lock: refused\n", 2.4)
    commit = branch.commit([METRICS], "run")
    with pytest.raises(RecordError) as refused:
        branch.push(commit)
    message = str(refused.value)
    assert f"git push to file://{origin} (branch {RESULTS}) was refused: [remote rejected]" in message
    assert "The run's outputs are on the DVC remote" in message and commit[:12] in message
    assert git(origin, "ls-remote", ".", f"refs/heads/{RESULTS}") == "", "nothing recorded"


def test_a_token_reaches_git_but_never_a_message(origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert with_token("https://git.example.org/team/p.git", "s3cr3t") == "https://x-access-token:s3cr3t@git.example.org/team/p.git"
    assert with_token("git@git.example.org:team/p.git", "s3cr3t") == "git@git.example.org:team/p.git", "ssh: its own keys"
    assert with_token("https://me:pw@git.example.org/p.git", "s3cr3t") == "https://me:pw@git.example.org/p.git"
    assert without_credentials("fatal: https://x:s3cr3t@h/p.git s3cr3t", "s3cr3t") == "fatal: https://h/p.git ***"

    work = clone(origin, tmp_path / "work")
    unreachable = f"https://127.0.0.1:{free_port()}/team/pokegen.git"  # nothing listens there
    run(["git", "remote", "set-url", "origin", unreachable], work)
    monkeypatch.setenv("POKEGEN_GIT_TOKEN", "s3cr3t")
    with pytest.raises(RecordError) as failed:
        ResultsBranch(work, RESULTS).start([METRICS])
    assert "127.0.0.1" in str(failed.value) and "s3cr3t" not in str(failed.value)


def test_regressions_name_the_model_and_both_figures() -> None:
    def figure(key: str, label: str, sign: int, old: float | None, new: float | None) -> Figure:
        return Figure("pixelrnn", key, label, sign, old, new)

    limits = RegressionLimits(bits_per_pixel=0.05, precision=0.1, recall=None)
    assert regressions([figure("bits_per_pixel", "test bits/pixel", +1, 2.40, 2.44)], limits) == []
    assert regressions([figure("bits_per_pixel", "test bits/pixel", +1, 2.40, 1.90)], limits) == [], "better"
    assert regressions([figure("bits_per_pixel", "test bits/pixel", +1, None, 2.9)], limits) == [], "no previous"
    assert regressions([figure("recall", "recall", -1, 0.9, 0.1)], limits) == [], "no limit set"
    assert regressions(
        [figure("bits_per_pixel", "test bits/pixel", +1, 2.40, 2.52), figure("precision", "precision", -1, 0.70, 0.55),
         figure("judge", "judge", +1, 0.80, 0.90), figure("judge", "judge", +1, 0.80, 0.84)],
        limits,
    ) == [
        "pixelrnn: test bits/pixel 2.400 -> 2.520 (+0.120; deployment.regression.bits_per_pixel allows 0.05)",
        "pixelrnn: precision 0.700 -> 0.550 (-0.150; deployment.regression.precision allows 0.1)",
        "pixelrnn: judge 0.800 -> 0.900 (+0.100; deployment.regression.judge allows 0.05)",
    ]  # fmt: skip


def test_the_regression_limits_are_the_rows_of_the_metrics_table_that_name_one() -> None:
    from pokegen.evaluation import METRICS

    assert {limit for limit, *_ in FIGURES} == set(RegressionLimits.model_fields), "every limit bounds a figure, every such figure has one"
    assert ("judge", "judge.accuracy", "judge", +1) in FIGURES, "the judge drives scheduled runs' limits"
    assert ("precision", "judge.precision", "precision", -1) in FIGURES, "precision in the judge's space, not the block colors"
    assert all(metric.worse in ("higher", "lower") for metric in METRICS if metric.limit)


def test_a_worker_runs_only_the_code_of_the_commit_it_cloned(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    for folder in CODE_FOLDERS.values():
        shutil.copytree(REPO_ROOT / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert code_differences(checkout) == [], "the installed pokegen is this repository's"
    check_worker_code(checkout, "0" * 40)

    changed = checkout / "src" / "pokegen" / "evaluation.py"
    changed.write_text(changed.read_text() + "\n# a teammate's change\n")
    (checkout / "plugins" / "vae" / "extra.py").write_text("X = 1\n")
    assert code_differences(checkout) == ["src/pokegen/evaluation.py", "plugins/vae/extra.py"]
    with pytest.raises(WorkerCodeError, match=r"\(abcdef012345\): src/pokegen/evaluation.py, plugins/vae/extra.py differ"):
        check_worker_code(checkout, "abcdef0123456789" * 2 + "abcdef01")


def test_recording_needs_a_push_and_a_branch_of_its_own() -> None:
    with pytest.raises(ParamsError, match=r"deployment: results_branch needs push: true"):
        parse_params({"deployment": {"push": False}})
    parse_params({"deployment": {"push": False, "results_branch": None}})
    with pytest.raises(ParamsError, match=r"results_branch = 'main' is the branch runs check out"):
        parse_params({"deployment": {"results_branch": "main"}})
    with pytest.raises(ParamsError, match=r"secrets"):
        parse_params({"deployment": {"secrets": {"NOT A NAME": "block"}}})


def test_an_https_clone_takes_its_token_on_the_worker_never_in_the_deployment() -> None:
    from pokegen.flows.deployment import _clone_source
    from pokegen.params import DeploymentParams

    def pull_step(url: str, **deployment) -> dict:
        return _clone_source(url, DeploymentParams(**deployment)).to_pull_step()["prefect.deployments.steps.git_clone"]

    https = "https://git.example.org/team/pokegen.git"
    assert pull_step(https) == {"repository": https, "branch": "main", "access_token": "{{ $POKEGEN_GIT_TOKEN }}"}
    assert pull_step(https, secrets={"POKEGEN_GIT_TOKEN": "git-token"}, branch="nightly") == {
        "repository": https,
        "branch": "nightly",
        "access_token": "{{ prefect.blocks.secret.git-token }}",
    }
    assert pull_step("git@git.example.org:team/pokegen.git") == {
        "repository": "git@git.example.org:team/pokegen.git",
        "branch": "main",
    }, "ssh: the worker's own keys"


def test_a_worker_without_a_git_identity_still_records(origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = clone(origin, tmp_path / "work")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))  # nobody configured user.name/email
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    branch = ResultsBranch(work, RESULTS)
    branch.start([METRICS])
    a_run(work, "lock: anonymous\n", 2.4)
    recorded = branch.push(branch.commit([METRICS], "run"))
    assert git(origin, "log", "-1", "--format=%an <%ae>", recorded) == "pokegen <pokegen@localhost>"
