"""`dvc repro` in a temporary git repository: the whole DAG, skipping what did not change, push/pull round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_repo, run, set_param

from pokegen.fileio import sha256_file

pytestmark = pytest.mark.slow
ALL_STAGES = ["download", "quantize", "tensorize", "train@pixelrnn", "train@vae", "train@gan"]
TRAININGS = ALL_STAGES[3:]
OUTPUTS = (
    "data/raw/image.rar", "data/quantized/sprites.safetensors", "data/quantized/preview.png",
    "data/tensors/dataset.safetensors", "models/vae/model/weights.safetensors", "models/pixelrnn/model/checkpoint.json",
)  # fmt: skip


def ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def commit(repo: Path) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "run"], repo)


@pytest.fixture
def repo(tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    return make_repo(tmp_path / "clone")


def test_repro_runs_every_stage_then_nothing(repo: Path) -> None:
    first = run(["dvc", "repro"], repo)
    assert ran(first.stdout) == ALL_STAGES
    second = run(["dvc", "repro"], repo)
    assert ran(second.stdout) == []
    assert "Data and pipelines are up to date" in second.stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout
    metrics = run(["dvc", "metrics", "show"], repo).stdout
    assert "course_reference.rmse" in metrics and "models/vae/train_metrics.json" in metrics
    run(["dvc", "plots", "show", "-o", "plots"], repo)
    page = (repo / "plots" / "index.html").read_text()
    assert "models/pixelrnn/curves.csv" in page and "models/gan/curves.csv" in page


def test_only_what_a_param_touches_runs_again(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    set_param(repo, "models.vae.latent_dim", 2)
    assert ran(run(["dvc", "repro"], repo).stdout) == ["train@vae"], "one model's params re-train only that model"
    set_param(repo, "quantize.colors", 64)
    again = run(["dvc", "repro"], repo).stdout
    assert ran(again) == ["quantize", "tensorize", *TRAININGS]
    assert "Stage 'download' didn't change" in again
    set_param(repo, "tensorize.seed", 1)
    assert ran(run(["dvc", "repro"], repo).stdout) == ["tensorize", *TRAININGS]


def test_dvc_exp_run_sets_one_models_param(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    commit(repo)
    experiment = run(["dvc", "exp", "run", "-S", "models.vae.latent_dim=2"], repo)
    assert ran(experiment.stdout) == ["train@vae"]
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo).stdout
    assert "models.vae.latent_dim" in shown


def test_push_then_pull_into_a_fresh_clone_restores_every_output(repo: Path) -> None:
    run(["dvc", "repro"], repo)
    before = {path: sha256_file(repo / path) for path in OUTPUTS}
    run(["dvc", "push"], repo)
    assert (repo.parent / "pokegen-dvc-remote").is_dir(), "the default remote is a folder beside the clone"
    commit(repo)  # what a user commits after a run: the lock, the small uncached metrics, the .gitignore files
    fresh = repo.parent / "fresh"
    run(["git", "clone", "-q", str(repo), str(fresh)], repo.parent)
    assert not (fresh / "data/quantized/sprites.safetensors").exists()
    run(["dvc", "pull"], fresh)
    assert {path: sha256_file(fresh / path) for path in OUTPUTS} == before
    assert ran(run(["dvc", "repro"], fresh).stdout) == [], "pulled outputs need no re-run"
