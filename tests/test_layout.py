"""Points 1 and 2: the README's commands, CI, the pins and the package layout."""

from __future__ import annotations

import importlib.util
import re
import tomllib
import zipfile
from pathlib import Path

import yaml
from conftest import REPO_ROOT, run


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO_ROOT / "README.md").read_text())[:2]


def test_the_readme_opens_with_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    main_job, tests = _readme_commands()
    assert main_job.endswith("&& dvc repro") and "pip install" in main_job
    assert tests.endswith("&& pytest") and ".[test]" in tests
    assert tests in (REPO_ROOT / ".ci" / "run").read_text()


def test_dependencies_are_pinned_and_torch_is_the_cpu_safe_pin() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        assert "==" in requirement, f"{requirement} is not pinned"
    assert "torch==2.13.0" in project["dependencies"]
    constraints = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints and not any(line.startswith("nvidia") for line in constraints)
    assert "pokegen.models" in project["entry-points"]
    assert project["scripts"]["pokegen"] == "pokegen.cli:main"


def test_the_wheel_puts_only_pokegen_into_site_packages(tmp_path: Path) -> None:
    run(["pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO_ROOT)], tmp_path)
    (wheel,) = tmp_path.glob("pokegen-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"pokegen", wheel.name.split("-py3")[0] + ".dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "pokegen/flows/pipeline.py" in names and "pokegen/plugins/__init__.py" in names and "pokegen/stages/train.py" in names


def test_the_code_passes_the_pinned_linter() -> None:
    # ruff at the test extra's pin, with pyproject.toml's rules; its report names each file, line and rule.
    result = run(["ruff", "check", "--no-cache", "--output-format", "concise", "."], REPO_ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_console_command_is_installed() -> None:
    result = run(["pokegen", "--help"], REPO_ROOT)
    assert "stage" in result.stdout and "pipeline" in result.stdout


def test_the_gpu_benchmark_measures_the_readmes_gpu_profile_for_every_built_in_model() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    (block,) = re.findall(r"\*\*On a GPU\*\*.+?```yaml\n(.+?)```", readme, flags=re.DOTALL)
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert yaml.safe_load(block)["models"] == bench.GPU_PROFILE, "README's GPU profile and benchmarks/bench_gpu.py differ"
    built_in = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["pipeline"]["models"]
    from pokegen.registry import get_plugin

    neural = [name for name in built_in if not get_plugin(name).__module__.startswith("pokegen.plugins.baselines")]
    assert sorted(bench.GPU_PROFILE) == sorted(neural), "the GPU profile should cover every network the main job trains"
