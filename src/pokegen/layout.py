"""Where each stage reads and writes, relative to the repository root (one place, mirrored by dvc.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    # check -> checks
    @property
    def checks_dir(self) -> Path:
        """params.json (params.yaml is valid) and plugins/NAME.json (each listed model's code fingerprint)."""
        return self.root / "checks"

    @property
    def check_stamp(self) -> Path:
        """What the last full params check passed on (local, outside DVC): a no-op run skips importing the plugins."""
        return self.root / ".pokegen" / "params-checked"

    # download -> data/raw
    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def raw_manifest(self) -> Path:
        return self.raw_dir / "manifest.json"

    # quantize -> data/quantized
    @property
    def quantized_dir(self) -> Path:
        return self.root / "data" / "quantized"

    @property
    def quantized_sprites(self) -> Path:
        return self.quantized_dir / "sprites.safetensors"

    @property
    def quantize_preview(self) -> Path:
        return self.quantized_dir / "preview.png"

    @property
    def quantize_metrics(self) -> Path:
        return self.quantized_dir / "metrics.json"

    # tensorize -> data/tensors
    @property
    def tensors_dir(self) -> Path:
        return self.root / "data" / "tensors"

    @property
    def dataset(self) -> Path:
        return self.tensors_dir / "dataset.safetensors"

    @property
    def data_card(self) -> Path:
        return self.tensors_dir / "data_card.json"

    # train@NAME -> models/NAME
    def model_dir(self, name: str) -> Path:
        """The checkpoint folder (checkpoint.json + weights.safetensors)."""
        return self.root / "models" / name / "model"

    def train_metrics(self, name: str) -> Path:
        return self.root / "models" / name / "train_metrics.json"

    def train_curves(self, name: str) -> Path:
        return self.root / "models" / name / "curves.csv"

    # evaluate@NAME -> evaluation/NAME
    def evaluation_metrics(self, name: str) -> Path:
        return self.root / "evaluation" / name / "metrics.json"

    def evaluation_pictures(self, name: str) -> Path:
        """samples.png, completion.png, nearest.png and (for a latent space) latent_grid.png."""
        return self.root / "evaluation" / name / "pictures"

    def training_time(self, name: str) -> Path:
        """The training's wall time on the machine that trained (timings/, outside the outputs, as sampling_speed)."""
        return self.root / "timings" / f"train-{name}.json"

    def sampling_speed(self, name: str) -> Path:
        """Machine-dependent timings stay outside every stage's outputs, so they never change dvc.lock."""
        return self.root / "timings" / f"evaluate-{name}.json"

    @property
    def timings_script(self) -> Path:
        """What reports/index.html loads to show the training seconds of this machine's runs (report.TIMINGS_SCRIPT)."""
        return self.root / "timings" / "report.js"

    # report -> reports
    @property
    def reports_dir(self) -> Path:
        """index.html (images embedded), report.md and images/ beside it."""
        return self.root / "reports"

    def resume_dir(self, name: str) -> Path:
        """Resumable training state: outside DVC's outputs, so DVC does not delete it before a re-run."""
        return self.root / ".pokegen" / "resume" / name
