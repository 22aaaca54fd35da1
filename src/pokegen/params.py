"""params.yaml, validated by pydantic before any stage does any work.

Unknown keys (typos), wrong types and impossible values stop the run with one
message that names every bad key path; nothing is written.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from pokegen.errors import ParamsError
from pokegen.plugin import ALWAYS_ACCEPTED, GenerativeModel, Resources, TrainSettings

COURSE_BASE_URL = "http://speech.ee.ntu.edu.tw/~tlkagk/courses/ML_2016/Pokemon_creation"
PUBLIC_MIRROR_URL = "https://raw.githubusercontent.com/SunnyHaze/PixelRNN-Pokemon-Creation/main"
COURSE_SPRITE_SIZE = 40
COURSE_SPRITE_COUNT = 792
COURSE_COLORS = 167
COURSE_CROP = 20

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

# DVC's run-cache key drops every key of these names at any depth, params included (treeverse/dvc#10296): a stage
# whose only change is such a param counts as cached, and DVC restores another run's outputs under the new value.
RUN_CACHE_BLIND = ("size", "nfiles")
DVC_ISSUE = "https://github.com/treeverse/dvc/issues/10296"
# Keys renamed because DVC could not see them: an old params.yaml gets the new name, not "unknown key".
RENAMED = {("quantize", "size"): "quantize.side"}


def run_cache_blind_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of the settings of ``model`` (and of the pydantic models inside it) that DVC's run cache cannot
    see: named (or aliased) size or nfiles. [] when every setting can be tracked."""
    found = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = (*prefix, key)
        if key in RUN_CACHE_BLIND or name in RUN_CACHE_BLIND:
            found.append(".".join(path))
        pending = [field.annotation]
        while pending:  # the models inside Optional[...], list[...], dict[..., ...] too
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found += run_cache_blind_fields(annotation, path)
            else:
                pending += get_args(annotation)
    return found


def run_cache_blind_keys(raw: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of the keys of a params mapping, at any depth, that DVC's run cache cannot see."""
    if isinstance(raw, list):
        return [path for i, item in enumerate(raw) for path in run_cache_blind_keys(item, (*prefix, str(i)))]
    if not isinstance(raw, dict):
        return []
    found = []
    for key, value in raw.items():
        path = (*prefix, str(key))
        if key in RUN_CACHE_BLIND:
            found.append(".".join(path))
        found += run_cache_blind_keys(value, path)
    return found


def run_cache_blind_problem(path: str, whose: str) -> str:
    """The message for a param DVC's run cache cannot see: what goes wrong, the DVC issue, and the fix."""
    return (
        f"{path}: {whose} named {path.rsplit('.', 1)[-1]!r}, which DVC's run cache cannot see (it drops every key named "
        f"{' or '.join(RUN_CACHE_BLIND)} from its key, {DVC_ISSUE}): a change to it alone would restore another run's "
        "outputs under the new value"
    )


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CourseFiles(StrictModel):
    """The three files the course published, each pinned by SHA-256."""

    sprites: Sha256 = Field("ea287944bb043ab421be656afdb621e74c8d030321adefb6811418e8023f37d2", alias="image.rar")
    pixels: Sha256 = Field("facd83256c33298756c3f2dd533771b69d4b7500618b5e73322bc5dbe97c297d", alias="pixel_color.txt")
    colormap: Sha256 = Field("1ee954cf5adfa6b996bbf9231a1340efb29a2d4d9eabeb37831af45a0c1ac356", alias="colormap.txt")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def pins(self) -> dict[str, str]:
        """File name -> pinned sha256."""
        return self.model_dump(by_alias=True)


def _is_address(value: str) -> bool:
    return value.startswith(("http://", "https://", "file://")) or "://" not in value


class DownloadParams(StrictModel):
    sprites: str = Field("course", min_length=1)
    sprites_sha256: Sha256 | None = None
    mirrors: list[str] = []
    course_urls: list[str] = [COURSE_BASE_URL, PUBLIC_MIRROR_URL]
    course_files: CourseFiles = CourseFiles()
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _addresses_have_known_schemes(self) -> DownloadParams:
        for key, values in (("mirrors", self.mirrors), ("course_urls", self.course_urls)):
            for i, value in enumerate(values):
                if not _is_address(value):
                    raise ValueError(f"{key}[{i}] = {value!r}: use an http(s):// or file:// URL or a folder path")
        if not _is_address(self.sprites):
            raise ValueError(f"sprites = {self.sprites!r}: use 'course', an http(s):// or file:// URL, or a path")
        if self.sprites == "course" and self.sprites_sha256 is not None:
            raise ValueError("sprites_sha256 is for your own sprites; the course files are pinned in course_files")
        return self

    @property
    def uses_course_sprites(self) -> bool:
        return self.sprites == "course"


class QuantizeParams(StrictModel):
    method: Literal["kmeans", "course"] = "kmeans"
    colors: int = Field(COURSE_COLORS, ge=2, le=256)
    side: int = Field(COURSE_CROP, ge=2, le=256, description="sprites are cut to side x side pixels")
    fit: Literal["crop", "resize"] = "crop"
    seed: int = Field(0, ge=0)
    preview_count: int = Field(100, ge=1, le=1024)
    preview_scale: int = Field(4, ge=1, le=32)


class TensorizeParams(StrictModel):
    val: int = Field(40, ge=1)
    test: int = Field(40, ge=1)
    seed: int = Field(0, ge=0)
    flip: bool = Field(False, description="add each training sprite's mirror image to the train split (val and test unflipped)")


class LatentGridParams(StrictModel):
    """The lecture's picture: pick two code dims, sweep them over a grid, hold the others fixed."""

    dims: tuple[int, int] = (0, 1)
    fixed: float | list[float] = Field(0.0, description="value of every other dim (one number, or one per dim)")
    span: float = Field(2.5, gt=0, description="each swept dim runs from -span to +span")
    steps: int = Field(9, ge=2, le=32)

    @model_validator(mode="after")
    def _two_dims(self) -> LatentGridParams:
        if self.dims[0] == self.dims[1] or min(self.dims) < 0:
            raise ValueError(f"dims = {list(self.dims)}: name two different code dims, counted from 0")
        return self


class JudgeParams(StrictModel):
    """The judge (pokegen.judge): a small convolutional network that tells samples from held-out real sprites."""

    seeds: int = Field(3, ge=1, le=20, description="judges trained, each on its own seed and scored on its own fresh samples")


class EvaluateParams(StrictModel):
    seed: int = Field(0, ge=0)
    samples: int = Field(256, ge=16, le=4096, description="sprites each model draws for novelty, distribution and speed")
    covers: list[Annotated[float, Field(gt=0, lt=1)]] = Field([0.5, 0.75], min_length=1, description="covered lower share")
    masks: list[Literal["left", "centre", "scattered"]] = Field(
        ["left", "centre", "scattered"], description="shapes completed by models that fill any mask (completes_any_mask)"
    )
    completion_rows: int = Field(8, ge=1, le=40, description="test sprites shown in the completion picture")
    grid: int = Field(64, ge=1, le=1024, description="sprites in the sample grid")
    scale: int = Field(4, ge=1, le=32, description="picture pixels per sprite pixel")
    near_copy: float = Field(0.05, ge=0, lt=1, description="a sample within this share of differing pixels is a near copy")
    nearest_k: int = Field(5, ge=1, description="k of k-NN precision/recall/density/coverage")
    copying_cells: int = Field(3, ge=1, description="cells of the data-copying test C_T")
    latent_grid: LatentGridParams = LatentGridParams()
    judge: JudgeParams = JudgeParams()

    @model_validator(mode="after")
    def _grid_from_samples(self) -> EvaluateParams:
        if self.grid > self.samples:
            raise ValueError(f"grid = {self.grid} is more than the {self.samples} samples drawn; raise samples or lower grid")
        return self


class RunnerParams(StrictModel):
    """Where the Prefect flow runs the trainings and evaluations (`pokegen pipeline`; `dvc repro` runs them here)."""

    kind: Literal["local", "dask", "ray"] = Field("local", description="local: in this process, one after another")
    address: str | None = Field(None, description="an existing Dask scheduler or Ray cluster; null: start one here")
    workers: int = Field(2, ge=1, le=64, description="workers of the Dask LocalCluster started when address is null")

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> RunnerParams:
        if self.kind == "local" and self.address is not None:
            raise ValueError(f"address = {self.address!r} is for kind dask or ray; set kind, or address: null")
        return self


class PipelineParams(StrictModel):
    models: list[str] = ["pixelrnn", "vae", "gan", "transformer", "neighbours"]  # each gets train@NAME and evaluate@NAME in dvc.yaml
    runner: RunnerParams = RunnerParams()

    @model_validator(mode="after")
    def _unique(self) -> PipelineParams:
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models lists a model twice: {self.models}")
        return self


class RegressionLimits(StrictModel):
    """How much worse than the previous recorded run a scheduled run may get, per model; null: no limit. The keys are
    the `limit` of pokegen.evaluation.METRICS' rows."""

    judge: float | None = Field(0.05, ge=0, description="the judge's accuracy may rise by at most this")
    bits_per_pixel: float | None = Field(0.05, ge=0, description="test bits/pixel may rise by at most this")
    precision: float | None = Field(0.1, ge=0, description="precision (in the judge's space) may fall by at most this")
    recall: float | None = Field(0.1, ge=0, description="recall (in the judge's space) may fall by at most this")


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class DeploymentParams(StrictModel):
    """The scheduled `pokemon-pipeline` deployment that `pokegen deploy` registers (flows/deployment.py)."""

    name: str = Field("pokegen", min_length=1, description="run it with: prefect deployment run pokemon-pipeline/NAME")
    work_pool: str = Field("pokegen", min_length=1, description="the Prefect work pool whose workers run it")
    cron: str | None = Field("0 3 * * *", description="when it runs (checked by pokegen deploy); null: only when triggered")
    timezone: str = Field("UTC", min_length=1)
    repository: str | None = Field(None, description="the git URL workers clone; null: this clone's `origin`")
    branch: str = Field("main", min_length=1, description="the branch each run checks out")
    push: bool = Field(True, description="dvc push the outputs to the default DVC remote after each run")
    results_branch: str | None = Field(
        "pokegen-results", min_length=1, description="each run that changed something is committed here; null: not recorded"
    )
    regression: RegressionLimits = RegressionLimits()
    # Environment variables a run takes from Prefect Secret blocks where its worker does not set them:
    # {POKEGEN_GIT_TOKEN: git-token, AWS_SECRET_ACCESS_KEY: aws-secret}. Never the values themselves.
    secrets: dict[EnvName, str] = {}

    @model_validator(mode="after")
    def _records_what_it_pushed(self) -> DeploymentParams:
        if self.results_branch is not None and not self.push:
            raise ValueError(
                "results_branch needs push: true (a recorded run whose outputs are not on "
                "the DVC remote cannot be restored); set push: true, or results_branch: null to record nothing"
            )
        if self.results_branch == self.branch:
            raise ValueError(
                f"results_branch = {self.results_branch!r} is the branch runs check out: give the results "
                "their own branch (for example pokegen-results)"
            )
        return self


class Params(StrictModel):
    download: DownloadParams = DownloadParams()
    quantize: QuantizeParams = QuantizeParams()
    tensorize: TensorizeParams = TensorizeParams()
    pipeline: PipelineParams = PipelineParams()
    evaluate: EvaluateParams = EvaluateParams()
    deployment: DeploymentParams = DeploymentParams()
    # models.<name>: the plugin's own Config keys, plus `train` (TrainSettings) and `resources` (Resources).
    # sample.<name>: the plugin's Sampling keys (how it draws: evaluate@NAME depends on them, train@NAME does not).
    # Checked against each plugin by model_specs(), since only the plugin knows its keys.
    models: dict[str, dict[str, Any]] = {}
    sample: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _fits_the_data(self) -> Params:
        course = self.download.uses_course_sprites
        q = self.quantize
        if q.method == "course":
            if not course:
                raise ValueError("quantize.method 'course' needs download.sprites: course")
            if (q.colors, q.side, q.fit) != (COURSE_COLORS, COURSE_CROP, "crop"):
                raise ValueError(
                    f"quantize.method 'course' uses the course's {COURSE_COLORS} colors and {COURSE_CROP}x{COURSE_CROP} "
                    f"central crop: set quantize.colors: {COURSE_COLORS}, quantize.side: {COURSE_CROP}, quantize.fit: crop"
                )
        if course and q.side > COURSE_SPRITE_SIZE:
            raise ValueError(
                f"quantize.side = {q.side} is larger than the course sprites ({COURSE_SPRITE_SIZE}x{COURSE_SPRITE_SIZE}); "
                f"use at most {COURSE_SPRITE_SIZE}"
            )
        held_out = self.tensorize.val + self.tensorize.test
        if course and held_out >= COURSE_SPRITE_COUNT:
            raise ValueError(
                f"tensorize.val + tensorize.test = {held_out} leaves no training sprites "
                f"(the course data has {COURSE_SPRITE_COUNT}); lower them"
            )
        return self


def _describe(error: Any, root_model: type[BaseModel] | None = None, prefix: tuple = ()) -> str:
    root_model = root_model or Params
    path = ".".join(str(part) for part in (*prefix, *error["loc"]))
    if error["type"] == "extra_forbidden":
        renamed = RENAMED.get((*prefix, *error["loc"]))
        if renamed:
            return (
                f"{path}: renamed to {renamed} (DVC's run cache cannot see a param named {error['loc'][-1]!r}, "
                f"{DVC_ISSUE}); write {renamed.rsplit('.', 1)[-1]}: {error.get('input')!r} instead"
            )
        model: Any = root_model
        for part in error["loc"][:-1]:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            model = field.annotation if field is not None else None
            if model is None or not isinstance(model, type):
                break
        known = [f.alias or name for name, f in model.model_fields.items()] if isinstance(model, type) and issubclass(model, BaseModel) else []
        hint = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else (f" (known keys: {', '.join(known)})" if known else "")
        return f"{path}: unknown key{suggestion}"
    message = error["msg"].removeprefix("Value error, ")
    if not path:
        return message
    if error["type"] == "missing":
        return f"{path}: required"
    if error["type"] == "value_error":  # our own validators already quote the value
        return f"{path}: {message}"
    return f"{path}: {message} (got {error.get('input')!r})"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError listing every bad key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections (download, quantize, ...)")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  - {_describe(err)}" for err in exc.errors()]
        raise ParamsError(f"{source} is not valid:\n" + "\n".join(lines) + f"\nFix these keys in {source}.") from None


def load_params(path: Path, *, check_models: bool = True) -> Params:
    """Read and validate params.yaml: every section, and each models.<name> names an installed plugin.

    With ``check_models`` each listed model's settings are also checked against its plugin (which
    imports it). Raises ParamsError naming the file and every bad key.
    """
    if check_models:
        return load_models(path)[0]
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    params = parse_params(raw, str(path))
    _check_model_sections(params, str(path))
    return params


def load_models(path: Path) -> tuple[Params, dict[str, ModelSpec]]:
    """params.yaml validated, and each model in pipeline.models resolved against its plugin: what a run
    reads once and hands to its stages. Raises ParamsError naming the file and every bad key."""
    params = load_params(path, check_models=False)
    return params, model_specs(params, str(path))


def _check_model_sections(params: Params, source: str) -> None:
    """A models.<name> section must name an installed plugin: a misspelt name would otherwise be ignored."""
    from pokegen.registry import registered_names  # package metadata only: no plugin is imported

    known = registered_names()
    problems = []
    for name in [*params.models, *(name for name in params.sample if name not in params.models)]:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            section = "models" if name in params.models else "sample"
            problems.append(
                f"  - {section}.{name}: no model plugin named {name!r} is installed"
                + (f" (did you mean '{hint[0]}'?)" if hint else f" (installed: {', '.join(known) or 'none'})")
                + "; rename the section, install its plugin, or remove it"
            )
    if problems:
        raise ParamsError(f"{source} is not valid:\n" + "\n".join(problems) + f"\nFix these keys in {source}.")


@dataclass(frozen=True)
class ModelSpec:
    """One model as params.yaml asks for it: its plugin, validated config, training settings and resources."""

    name: str
    plugin: type[GenerativeModel]
    config: BaseModel
    train: TrainSettings
    resources: Resources
    sampling: BaseModel | None = None  # the plugin's Sampling, from sample.<name>; None: its defaults

    def __post_init__(self) -> None:
        if self.sampling is None:
            object.__setattr__(self, "sampling", self.plugin.Sampling())


def _validate(model: type[BaseModel], raw: Any, prefix: tuple, problems: list[str]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(f"  - {_describe(err, model, prefix)}" for err in exc.errors())
        return None


def model_specs(params: Params, source: str = "params.yaml") -> dict[str, ModelSpec]:
    """Validate every model in pipeline.models against its plugin. Raises one ParamsError listing every problem."""
    from pokegen.registry import get_plugin  # imports the plugins (and torch) only when models are checked

    problems: list[str] = []
    specs: dict[str, ModelSpec] = {}
    for name in params.pipeline.models:
        try:
            plugin = get_plugin(name)
        except ParamsError as exc:
            problems.append(f"  - {exc}")
            continue
        missing = [
            section for section, found in (("models", params.models), ("sample", params.sample)) if name not in found
        ]
        if missing:
            problems += [
                f"  - {section}.{name}: missing; add `{name}: {{}}` under {section} (DVC tracks each model's section)"
                for section in missing
            ]
            continue
        raw = dict(params.models[name] or {})
        asked_sampling = dict(params.sample[name] or {})
        blind = run_cache_blind_fields(plugin.Config, ("models", name)) + run_cache_blind_fields(
            plugin.Sampling, ("sample", name)
        )
        blind += [
            path
            for path in run_cache_blind_keys(raw, ("models", name))
            + run_cache_blind_keys(asked_sampling, ("sample", name))
            if path not in blind
        ]
        if blind:
            problems += [f"  - {run_cache_blind_problem(path, f'a setting of the {name} plugin')}; the plugin must rename it" for path in blind]
            continue
        asked = dict(raw.pop("train", None) or {})
        accepted = plugin.train_settings | ALWAYS_ACCEPTED
        for key in sorted(set(asked) - accepted):
            if key in TrainSettings.model_fields:  # a real setting this plugin does not read (unknown keys are reported below)
                problems.append(f"  - models.{name}.train.{key}: {name} does not use it (it uses {', '.join(sorted(accepted))}); remove it")
                asked.pop(key)
        train = _validate(TrainSettings, {**plugin.train_defaults, **asked}, ("models", name, "train"), problems)
        resources = _validate(
            Resources,
            {**plugin.resources.model_dump(), **(raw.pop("resources", None) or {})},
            ("models", name, "resources"),
            problems,
        )
        moved = sorted(set(raw) & set(plugin.Sampling.model_fields) - set(plugin.Config.model_fields))
        for key in moved:  # a sampling setting where it used to be, among what the model learns with
            problems.append(
                f"  - models.{name}.{key}: a sampling setting; move it to sample.{name}.{key} (changing it then re-trains nothing)"
            )
            raw.pop(key)
        config = _validate(plugin.Config, raw, ("models", name), problems)
        sampling = _validate(plugin.Sampling, asked_sampling, ("sample", name), problems)
        if train is not None and resources is not None and config is not None and sampling is not None:
            specs[name] = ModelSpec(name, plugin, config, train, resources, sampling)
    if problems:
        raise ParamsError(f"{source} is not valid:\n" + "\n".join(problems) + f"\nFix these keys in {source}.")
    return specs
