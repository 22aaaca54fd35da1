"""Point 3: params are validated before any work; one clear message names the key path; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, run
from pydantic import BaseModel

from pokegen.errors import ParamsError
from pokegen.params import Params, load_params, model_specs, parse_params, run_cache_blind_fields, run_cache_blind_keys
from pokegen.plugin import Resources, TrainSettings


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return str(info.value)


def test_the_shipped_params_yaml_is_valid_and_matches_the_defaults() -> None:
    shipped = load_params(REPO_ROOT / "params.yaml")
    defaults = Params()
    for section in ("download", "quantize", "tensorize", "pipeline"):
        assert getattr(shipped, section) == getattr(defaults, section), section
    assert shipped.quantize.colors == 167 and shipped.quantize.side == 20
    # each model's section spells out its plugin's defaults, so params.yaml is the one place to read them
    for name, spec in model_specs(shipped).items():
        assert spec.config == spec.plugin.Config(), name
        assert spec.train == TrainSettings(**spec.plugin.train_defaults), name
        assert spec.resources == spec.plugin.resources, name
    assert model_specs(shipped)["pixelrnn"].config.hidden == 512 and model_specs(shipped)["vae"].config.latent_dim == 10


def test_a_typo_names_the_key_path_and_suggests_the_right_key() -> None:
    message = _error({"quantize": {"colrs": 167}})
    assert "quantize.colrs: unknown key" in message
    assert "did you mean 'colors'" in message


def test_an_unknown_section_is_named() -> None:
    assert "downlod: unknown key" in _error({"downlod": {}})


def test_a_wrong_type_names_the_key_and_the_value() -> None:
    message = _error({"quantize": {"colors": "many"}})
    assert "quantize.colors" in message and "'many'" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"quantize": {"colors": 0}}, "quantize.colors"),
        ({"quantize": {"side": 48}}, "quantize.side"),
        ({"tensorize": {"val": 400, "test": 400}}, "tensorize.val + tensorize.test"),
        ({"download": {"timeout_s": 0}}, "download.timeout_s"),
        ({"download": {"mirrors": ["ftp://example.org"]}}, "mirrors[0]"),
        ({"download": {"course_files": {"image.rar": "not-a-hash"}}}, "download.course_files.image.rar"),
        ({"quantize": {"method": "course", "colors": 16}}, "quantize.colors: 167"),
    ],
)
def test_impossible_values_name_their_key(raw: dict, key: str) -> None:
    assert key in _error(raw)


def test_the_old_name_of_a_renamed_key_gets_the_new_name_and_why() -> None:
    message = _error({"quantize": {"size": 40}})
    assert "quantize.size: renamed to quantize.side" in message and "write side: 40 instead" in message
    assert "treeverse/dvc/issues/10296" in message


def test_no_setting_of_pokegens_own_is_invisible_to_dvcs_run_cache() -> None:
    assert run_cache_blind_fields(Params) == []
    assert run_cache_blind_fields(TrainSettings) == [] and run_cache_blind_fields(Resources) == []


def test_settings_named_size_or_nfiles_are_found_at_any_depth() -> None:
    class Inner(BaseModel):
        nfiles: int = 1

    class Outer(BaseModel):
        size: int = 2
        layers: list[Inner] = []
        optional: Inner | None = None

    assert run_cache_blind_fields(Outer, ("models", "x")) == ["models.x.size", "models.x.layers.nfiles", "models.x.optional.nfiles"]
    assert run_cache_blind_keys({"a": {"size": 1, "b": [{"nfiles": 2}, {"ok": 3}]}}) == ["a.size", "a.b.0.nfiles"]


def test_every_bad_key_is_listed_at_once() -> None:
    message = _error({"quantize": {"colors": 0, "fit": "squash"}})
    assert "quantize.colors" in message and "quantize.fit" in message


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("quantize: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml is not valid YAML"):
        load_params(path)


def test_the_stage_command_stops_before_any_work_with_one_message(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["quantize"]["colors"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("download", "quantize", "tensorize"):
        result = run(["pokegen", "stage", stage], tmp_path, check=False)
        assert result.returncode == 2, result.stderr
        assert "quantize.colors" in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing may be written"


def _params_file(tmp_path: Path, edit) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_training_setting_the_plugin_does_not_use_is_refused(tmp_path: Path) -> None:
    path = _params_file(tmp_path, lambda p: p["models"]["gan"]["train"].update(grad_clip=1.0, weight_decay=0.1))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert "models.gan.train.grad_clip: gan does not use it (it uses batch_size, cpu_fallback, ema, epochs, lr, seed); remove it" in message
    assert "models.gan.train.weight_decay: gan does not use it" in message
    assert "models.vae" not in message, "the VAE's training loop reads every setting"


def test_a_model_section_that_names_no_installed_plugin_is_an_error(tmp_path: Path) -> None:
    path = _params_file(tmp_path, lambda p: p["models"].update(vea={"latent_dim": 2}))
    with pytest.raises(ParamsError, match=r"models.vea: no model plugin named 'vea' is installed \(did you mean 'vae'\?\)"):
        load_params(path, check_models=False)  # found without importing any plugin
