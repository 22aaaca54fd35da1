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
