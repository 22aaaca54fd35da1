"""Issue 11: DVC knows everything a stage depends on: params.yaml as a whole, pokegen's code, each plugin's code."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, TINY_MODELS, make_repo, run, runs_its_own_code, stages_run, stale_stages

from pokegen.fileio import sha256_file

pytestmark = pytest.mark.slow
MIXTURE = REPO_ROOT / "examples" / "pokegen-mixture"
MODELS = {"vae": TINY_MODELS["vae"], "mixture": {"components": 3, "train": {"epochs": 2}}}
OUTPUTS = ("data/quantized/sprites.safetensors", "models/vae/model/weights.safetensors", "models/mixture/model/weights.safetensors", "reports/index.html")
# Modules that change no output byte: errors, file plumbing, paths, params parsing (DVC tracks the values) and the
# registry (each plugin's fingerprint is tracked through the check stage).
PLUMBING = {"pokegen", "pokegen.errors", "pokegen.fileio", "pokegen.layout", "pokegen.params", "pokegen.registry", "pokegen.stages"}



def install(plugin_source: Path, site: Path) -> None:
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(plugin_source)], plugin_source.parent)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, course_data: Path) -> tuple[Path, Path]:
    """A reproduced repository running its own copy of pokegen, with the example plugin 0.1.0 installed beside it."""
    base = tmp_path_factory.mktemp("dependencies")
    site = base / "site-0.1.0"
    install(MIXTURE, site)
    repo = make_repo(base / "clone", models=MODELS)
    env = _env(repo, site, course_data)
    assert stages_run(run(["dvc", "repro"], repo, env=env).stdout) == [
        "check", "download", "quantize", "tensorize", "train@vae", "train@mixture", "evaluate@vae", "evaluate@mixture", "report",
    ]  # fmt: skip
    return repo, site


def _env(repo: Path, site: Path, course_data: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{runs_its_own_code(repo)['PYTHONPATH']}:{site}", "POKEGEN_DATA_MIRROR": str(course_data)}


@pytest.fixture
def repo(built: tuple[Path, Path], tmp_path: Path, course_data: Path) -> tuple[Path, dict[str, str]]:
    """The test's own copy of the reproduced repository, and the environment that runs its code."""
    copy = tmp_path / "clone"
    shutil.copytree(built[0], copy, symlinks=True)
    return copy, _env(copy, built[1], course_data)


def test_a_typo_anywhere_in_params_stops_every_door_before_any_stage(repo: tuple[Path, dict[str, str]]) -> None:
    clone, env = repo
    before = {path: sha256_file(clone / path) for path in OUTPUTS}
    lock = (clone / "dvc.lock").read_text()
    with (clone / "params.yaml").open("a") as params:
        params.write("quantise:\n  colors: 64\n")  # meant: quantize.colors; no stage depends on the misspelt key
    for door in (["dvc", "repro"], ["dvc", "exp", "run"], ["pokegen", "pipeline"]):
        refused = run(door, clone, env=env, check=False)
        assert refused.returncode != 0, door
        assert "quantise: unknown key (did you mean 'quantize'?)" in refused.stdout + refused.stderr, door
        assert stages_run(refused.stdout) in ([], ["check"]), f"{door}: nothing but the check ran"
    assert (clone / "dvc.lock").read_text() == lock, "nothing was recorded"
    assert {path: sha256_file(clone / path) for path in OUTPUTS} == before, "nothing was written or removed"
    assert json.loads((clone / "checks/params.json").read_text()) == {"params": "params.yaml", "valid": True}, "the last good check stays"


def test_a_misspelt_model_section_is_named_not_ignored(repo: tuple[Path, dict[str, str]]) -> None:
    clone, env = repo
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["models"]["vea"] = {"latent_dim": 2}  # meant: models.vae.latent_dim
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = run(["dvc", "repro"], clone, env=env, check=False)
    assert refused.returncode != 0 and "models.vea: no model plugin named 'vea' is installed (did you mean 'vae'?)" in refused.stderr


def test_editing_a_plugins_code_re_runs_that_model_only(repo: tuple[Path, dict[str, str]]) -> None:
    clone, env = repo
    with (clone / "plugins/vae/model.py").open("a") as code:
        code.write("\n# an edit to the VAE\n")
    # A comment changes no weight: the report's inputs come out the same, so DVC stops there.
    assert stages_run(run(["dvc", "repro"], clone, env=env).stdout) == ["check", "train@vae", "evaluate@vae"]
    assert stale_stages(clone) == {}


def test_editing_shared_code_re_runs_the_stages_that_run_it(repo: tuple[Path, dict[str, str]]) -> None:
    clone, env = repo
    with (clone / "src/pokegen/evaluation.py").open("a") as code:
        code.write("\n# an edit to the grader\n")
    assert stages_run(run(["dvc", "repro"], clone, env=env).stdout) == ["check", "evaluate@vae", "evaluate@mixture", "report"]
    with (clone / "src/pokegen/training.py").open("a") as code:
        code.write("\n# an edit to the training loop\n")
    # The loop re-trains; the same weights come out, so no evaluation runs again (TorchModel lives apart from it).
    assert stages_run(run(["dvc", "repro"], clone, env=env).stdout) == ["check", "train@vae", "train@mixture"]
    with (clone / "src/pokegen/torch_model.py").open("a") as code:
        code.write("\n# an edit to what loads and draws\n")
    assert stages_run(run(["dvc", "repro"], clone, env=env).stdout) == [
        "check",
        "train@vae",
        "train@mixture",
        "evaluate@vae",
        "evaluate@mixture",
    ]


def test_an_upgraded_third_party_plugin_re_runs_its_own_stages(
    repo: tuple[Path, dict[str, str]], tmp_path: Path, course_data: Path
) -> None:
    clone, env = repo
    upgraded = tmp_path / "pokegen-mixture"
    shutil.copytree(MIXTURE, upgraded, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    project = upgraded / "pyproject.toml"
    project.write_text(project.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    install(upgraded, tmp_path / "site-0.2.0")  # the same code, a new release: pip install -U
    env = _env(clone, tmp_path / "site-0.2.0", course_data)
    assert stages_run(run(["dvc", "repro"], clone, env=env).stdout) == ["check", "train@mixture", "evaluate@mixture", "report"]
    assert json.loads((clone / "checks/plugins/mixture.json").read_text())["version"] == "0.2.0"
    record = json.loads((clone / "models/mixture/model/checkpoint.json").read_text())
    assert record["version"] == "0.2.0", "the model was trained by the upgraded plugin"


def _source(module: str) -> Path:
    parts = module.split(".")
    if parts[:2] == ["pokegen", "plugins"]:
        base = REPO_ROOT / "plugins" / Path(*parts[2:])
    else:
        base = REPO_ROOT / "src" / Path(*parts)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imports(*roots: str, trains: bool = True) -> set[str]:
    """The pokegen modules the roots import, directly or through each other (read from the source, imports inside
    functions included), without following imports of PLUMBING: what they run, not what parses their params.
    ``trains=False``: a stage that never calls a model's fit (evaluate) does not run what fit imports (the loop)."""
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module in PLUMBING or not _source(module).is_file():
            continue
        seen.add(module)
        tree = ast.parse(_source(module).read_text())
        in_fit = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "fit" for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if not trains and id(node) in in_fit:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pokegen"):
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("pokegen")]
    return {module for module in seen if not module.startswith(("pokegen.plugins", "pokegen.flows"))}


def test_each_stage_depends_on_the_pokegen_code_it_runs() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    plugins = ("pokegen.plugins.pixelrnn", "pokegen.plugins.vae", "pokegen.plugins.gan", "pokegen.plugins.transformer")  # what train/evaluate run too
    runs = {
        "download": _imports("pokegen.stages.download"),
        "quantize": _imports("pokegen.stages.quantize"),
        "tensorize": _imports("pokegen.stages.tensorize"),
        "train": _imports("pokegen.stages.train", *plugins),
        "evaluate": _imports("pokegen.stages.evaluate", *plugins, trains=False),
        "report": _imports("pokegen.stages.report"),
    }
    for stage, modules in runs.items():
        definition = stages[stage].get("do", stages[stage])
        deps = {dep if isinstance(dep, str) else next(iter(dep)) for dep in definition["deps"]}
        files = {"src/" + module.replace(".", "/") + ".py" for module in modules}
        assert files <= deps, f"dvc.yaml's {stage} runs but does not depend on {sorted(files - deps)}"
        assert modules, stage
    assert "checks/plugins/${item}.json" in stages["train"]["do"]["deps"] and "checks/plugins/${item}.json" in stages["evaluate"]["do"]["deps"]


def test_an_unchanged_check_imports_no_plugin(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    code = "import sys; from pathlib import Path; from pokegen.layout import Layout; from pokegen.stages.check import run_check; run_check(Layout(Path('.'))); print('torch' in sys.modules)"
    first, second = (run([sys.executable, "-c", code], repo).stdout.strip() for _ in range(2))
    assert (first, second) == ("True", "False"), "the models are checked against their plugins once, then only when something changed"
    set_models = yaml.safe_load((repo / "params.yaml").read_text())
    set_models["models"]["vae"]["latent_dim"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(set_models, sort_keys=False))
    assert run([sys.executable, "-c", code], repo).stdout.strip() == "True", "a changed params.yaml is checked in full"
