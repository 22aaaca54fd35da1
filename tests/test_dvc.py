"""Point 7: `dvc repro` in a temporary git repository: runs the DAG, skips what did not change, push/pull round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_repo, run, set_param

from pokegen.fileio import sha256_file

pytestmark = pytest.mark.slow
OUTPUTS = ("data/raw/image.rar", "data/quantized/sprites.safetensors", "data/quantized/preview.png", "data/tensors/dataset.safetensors")


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture
def repo(tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    return make_repo(tmp_path / "clone")


def test_repro_runs_every_stage_then_nothing(repo: Path) -> None:
    first = run(["dvc", "repro"], repo)
    assert ran(first.stdout) == ["download", "quantize", "tensorize"]
    second = run(["dvc", "repro"], repo)
    assert ran(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    status = run(["dvc", "status"], repo)
    assert "up to date" in status.stdout
    metrics = run(["dvc", "metrics", "show"], repo)
    assert "rmse" in metrics.stdout and "course_reference.rmse" in metrics.stdout


def test_changing_quantize_colors_reruns_quantize_and_tensorize_only(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    set_param(repo, "quantize.colors", 64)
    again = run(["dvc", "repro"], repo)
    assert ran(again.stdout) == ["quantize", "tensorize"]
    assert "Stage 'download' didn't change" in again.stdout
    set_param(repo, "tensorize.seed", 1)
    assert ran(run(["dvc", "repro"], repo).stdout) == ["tensorize"]


def test_push_then_pull_into_a_fresh_clone_restores_every_output(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    before = {path: sha256_file(repo / path) for path in OUTPUTS}
    run(["dvc", "push"], repo)
    assert (repo.parent / "pokegen-dvc-remote").is_dir(), "the default remote is a folder beside the clone"
    # What a user commits after a run: the lock, the small uncached metrics and the outputs' .gitignore files.
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "run"], repo)
    fresh = repo.parent / "fresh"
    run(["git", "clone", "-q", str(repo), str(fresh)], repo.parent)
    assert not (fresh / "data/quantized/sprites.safetensors").exists()
    run(["dvc", "pull"], fresh)
    assert {path: sha256_file(fresh / path) for path in OUTPUTS} == before
    assert ran(run(["dvc", "repro"], fresh).stdout) == [], "pulled outputs need no re-run"
