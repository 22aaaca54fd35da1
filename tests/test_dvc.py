"""`dvc repro` in a temporary git repository: the whole DAG, skipping what did not change, push/pull round trip."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import S3Server, run, set_param, stages_run, stale_stages

from pokegen.artifacts import QuantizedSprites
from pokegen.fileio import sha256_file

pytestmark = pytest.mark.slow
TRAININGS = ["train@pixelrnn", "train@vae", "train@gan"]
EVALUATIONS = ["evaluate@pixelrnn", "evaluate@vae", "evaluate@gan"]
ALL_STAGES = ["check", "download", "quantize", "tensorize", *TRAININGS, *EVALUATIONS, "report"]
CHECK = ["check"]  # always_changed: it runs first on every repro, and nothing downstream of it re-runs unless its outputs changed
MODEL_STAGES = [*TRAININGS, *EVALUATIONS, "report"]
OUTPUTS = (
    "data/raw/image.rar", "data/quantized/sprites.safetensors", "data/quantized/preview.png",
    "data/tensors/dataset.safetensors", "models/vae/model/weights.safetensors", "models/pixelrnn/model/checkpoint.json",
    "evaluation/vae/pictures/latent_grid.png", "reports/index.html", "reports/report.md",
)  # fmt: skip



def commit(repo: Path) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "run"], repo)


@pytest.fixture
def repo(reproduced: tuple[Path, str], tmp_path: Path, course_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reproduced repository of the test's own: its workspace, cache, lock and git history copied."""
    monkeypatch.setenv("POKEGEN_DATA_MIRROR", str(course_data))
    copy = tmp_path / "clone"
    shutil.copytree(reproduced[0], copy, symlinks=True)
    return copy


def test_repro_runs_every_stage_then_nothing(reproduced: tuple[Path, str], repo: Path) -> None:
    assert stages_run(reproduced[1]) == ALL_STAGES
    second = run(["dvc", "repro"], repo)
    assert stages_run(second.stdout) == CHECK
    assert "Stage 'report' didn't change, skipping" in second.stdout
    assert stale_stages(repo) == {}
    metrics = run(["dvc", "metrics", "show"], repo).stdout
    assert "course_reference.rmse" in metrics and "models/vae/train_metrics.json" in metrics
    assert "evaluation/pixelrnn/metrics.json" in metrics and "timings" not in metrics, "a wall time is no DVC metric"
    assert "failed to load" not in run(["dvc", "metrics", "show"], repo).stderr
    run(["dvc", "plots", "show", "-o", "plots"], repo)
    page = (repo / "plots" / "index.html").read_text()
    assert "models/pixelrnn/curves.csv" in page and "models/gan/curves.csv" in page


def test_only_what_a_param_touches_runs_again(repo: Path) -> None:
    set_param(repo, "models.vae.latent_dim", 2)
    assert stages_run(run(["dvc", "repro"], repo).stdout) == [*CHECK, "train@vae", "evaluate@vae", "report"], "one model's params touch only that model"
    set_param(repo, "evaluate.latent_grid.span", 1.0)
    assert stages_run(run(["dvc", "repro"], repo).stdout) == [*CHECK, *EVALUATIONS, "report"], "evaluation settings re-evaluate, never re-train"
    set_param(repo, "quantize.colors", 64)
    again = run(["dvc", "repro"], repo).stdout
    assert stages_run(again) == [*CHECK, "quantize", "tensorize", *MODEL_STAGES]
    assert "Stage 'download' didn't change" in again


def test_a_new_temperature_re_evaluates_that_model_and_re_trains_nothing(repo: Path) -> None:
    set_param(repo, "sample.pixelrnn.temperature", 0.95)
    assert sorted(stale_stages(repo)) == ["evaluate@pixelrnn", "report"], "dvc status: sampling is not training"
    assert stages_run(run(["dvc", "repro"], repo).stdout) == [*CHECK, "evaluate@pixelrnn", "report"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    trained_with = lock["train@pixelrnn"]["params"]["params.yaml"]["models.pixelrnn"]
    assert not {"temperature", "new_color_penalty", "completion_candidates", "epsilon"} & set(trained_with), "the training config has no sampling keys"
    assert lock["evaluate@pixelrnn"]["params"]["params.yaml"]["sample.pixelrnn"]["temperature"] == 0.95


def test_a_new_sprite_side_runs_quantize_and_is_not_mistaken_for_a_cached_run(repo: Path) -> None:
    # DVC's run-cache key drops every key named size (treeverse/dvc#10296): under that name a new value counted as
    # cached, and DVC checked out the 20x20 sprites under a dvc.lock that said 16. The key is quantize.side now.
    set_param(repo, "quantize.side", 16)
    repro = run(["dvc", "repro", "quantize"], repo).stdout
    assert "Running stage 'quantize'" in repro and "is cached" not in repro
    assert QuantizedSprites.load(repo / "data/quantized/sprites.safetensors").indices.shape[1:] == (16, 16)
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["quantize"]["params"]["params.yaml"]["quantize"]["side"] == 16
    set_param(repo, "quantize.side", 20)  # back to a run DVC has seen: the run cache may give it back, and the right one
    run(["dvc", "repro", "quantize"], repo)
    assert QuantizedSprites.load(repo / "data/quantized/sprites.safetensors").indices.shape[1:] == (20, 20)


def test_a_damaged_checkpoint_names_the_dvc_command_that_restores_it(repo: Path) -> None:
    weights = repo / "models/vae/model/weights.safetensors"
    trained = sha256_file(weights)
    weights.write_bytes(weights.read_bytes()[:100])  # as a disk or an interrupted copy might leave it
    failed = run(["pokegen", "evaluate", "vae"], repo, check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    message = " ".join(failed.stderr.split())
    assert "models/vae/model/weights.safetensors: unreadable" in message
    assert "dvc repro train@vae" in message
    restore = re.search(r"\(dvc checkout --force (\S+)\)", message)
    assert restore and Path(restore[1]).resolve() == weights.parent.resolve(), message
    run(["dvc", "checkout", "--force", restore[1]], repo)  # the command the message names, as a user runs it
    assert sha256_file(weights) == trained
    run(["pokegen", "evaluate", "vae"], repo)


def test_dvc_exp_run_sets_one_models_param(repo: Path) -> None:
    commit(repo)
    experiment = run(["dvc", "exp", "run", "-S", "models.vae.latent_dim=2"], repo)
    assert stages_run(experiment.stdout) == [*CHECK, "train@vae", "evaluate@vae", "report"]
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo).stdout
    assert "models.vae.latent_dim" in shown


def test_push_then_pull_into_a_fresh_clone_restores_every_output(repo: Path) -> None:
    before = {path: sha256_file(repo / path) for path in OUTPUTS}
    run(["dvc", "push"], repo)
    assert (repo.parent / "pokegen-dvc-remote").is_dir(), "the default remote is a folder beside the clone"
    commit(repo)  # what a user commits after a run: the lock, the small uncached metrics, the .gitignore files
    fresh = repo.parent / "fresh"
    run(["git", "clone", "-q", str(repo), str(fresh)], repo.parent)
    assert not (fresh / "data/quantized/sprites.safetensors").exists()
    run(["dvc", "pull"], fresh)
    assert {path: sha256_file(fresh / path) for path in OUTPUTS} == before
    assert stages_run(run(["dvc", "repro"], fresh).stdout) == CHECK, "pulled outputs need no re-run"


def test_an_s3_remote_round_trip_restores_the_report_without_training(repo: Path, s3_server: S3Server) -> None:
    before = {path: sha256_file(repo / path) for path in OUTPUTS}
    s3_server.create_bucket("pokegen")
    run(["dvc", "remote", "add", "-d", "s3", "s3://pokegen/dvc-store"], repo)
    run(["dvc", "remote", "modify", "s3", "endpointurl", s3_server.endpoint], repo)
    run(["dvc", "push"], repo, env=s3_server.env)
    assert not (repo.parent / "pokegen-dvc-remote").exists(), "the outputs went to S3, not the default folder"
    cached = sorted(p.relative_to(repo / ".dvc/cache").as_posix() for p in (repo / ".dvc/cache/files").rglob("*") if p.is_file())
    pushed = s3_server.keys("pokegen", "dvc-store/")
    assert pushed and set(pushed) <= {f"dvc-store/{name}" for name in cached}, "the bucket holds cache objects"
    commit(repo)

    fresh = repo.parent / "fresh"
    run(["git", "clone", "-q", str(repo), str(fresh)], repo.parent)
    run(["dvc", "pull"], fresh, env=s3_server.env)
    assert {path: sha256_file(fresh / path) for path in OUTPUTS} == before
    assert stages_run(run(["dvc", "repro"], fresh).stdout) == CHECK, "the report came back without any stage running"


def test_the_report_shows_the_figures_dvc_metrics_show(repo: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = next(iter(shown.values()))["data"]
    markdown = (repo / "reports" / "report.md").read_text()
    shown = {}  # (model, column) -> cell, from both tables
    header: list[str] = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if not line.startswith("| "):
            continue
        if cells[0] == "model":
            header = cells
            continue
        shown |= {(cells[0], column): cell for column, cell in zip(header, cells, strict=True)}
    for name in ("pixelrnn", "vae", "gan"):
        metrics = files[f"evaluation/{name}/metrics.json"]["data"]
        for column, path in (("C_T", ("novelty", "data_copying_ct")), ("coverage", ("judge", "coverage")), ("precision", ("judge", "precision")), ("test bits/pixel", ("likelihood", "bits_per_pixel"))):
            value = metrics
            for key in path:
                value = value.get(key) if value is not None else None  # DVC leaves out null values
            assert shown[(name, column)].split(" ")[0] == ("—" if value is None else f"{value:.3f}"), (name, column)
