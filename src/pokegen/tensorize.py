"""The seeded train/val/test split and its data card: pure functions."""

from __future__ import annotations

import hashlib

import numpy as np

from pokegen.artifacts import SPLITS, QuantizedSprites, SpriteDataset
from pokegen.errors import DataError

FLIPPED = "~flipped"  # the name of a training sprite's mirror image: NAME~flipped


def split_sprites(sprites: QuantizedSprites, *, val: int, test: int, seed: int, flip: bool = False) -> SpriteDataset:
    """Shuffle with ``seed`` and cut into val, test and the rest for train; with ``flip``, every training
    sprite's mirror image joins the train split (sprites face either way; val and test stay as they are).
    Raises DataError if the splits don't fit."""
    count = len(sprites.indices)
    if val + test >= count:
        raise DataError(
            f"tensorize.val ({val}) + tensorize.test ({test}) = {val + test} leaves no training sprites "
            f"out of {count}; lower them in params.yaml"
        )
    order = np.random.default_rng(seed).permutation(count)
    chosen = {"val": order[:val], "test": order[val : val + test], "train": order[val + test :]}
    splits = {split: sprites.indices[chosen[split]] for split in SPLITS}
    names = {split: tuple(sprites.names[i] for i in chosen[split]) for split in SPLITS}
    if flip:
        splits["train"] = np.concatenate([splits["train"], splits["train"][:, :, ::-1]])
        names["train"] = names["train"] + tuple(name + FLIPPED for name in names["train"])
    return SpriteDataset(palette=sprites.palette, splits=splits, names=names)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def data_card(dataset: SpriteDataset, *, seed: int, quantized_sha256: str, flip: bool = False) -> dict:
    """Counts, sizes and content hashes a person can read (and diff) without loading arrays."""
    first = dataset.splits["train"]
    used = np.unique(np.concatenate([dataset.splits[s].reshape(-1) for s in SPLITS]))
    return {
        "quantized_sha256": quantized_sha256,
        "seed": seed,
        "train_flipped": flip,
        "sprite_size": [int(first.shape[1]), int(first.shape[2])],
        "palette_size": len(dataset.palette),
        "palette_colors_used": len(used),
        "counts": {split: len(dataset.splits[split]) for split in SPLITS},
        "sha256": {"palette": _digest(dataset.palette), **{split: _digest(dataset.splits[split]) for split in SPLITS}},
    }


def check_disjoint(dataset: SpriteDataset) -> None:
    """Each sprite name in exactly one split (a leak would flatter every held-out metric)."""
    seen: dict[str, str] = {}
    for split in SPLITS:
        for listed in dataset.names[split]:
            name = listed.removesuffix(FLIPPED)  # a mirror image is the same sprite...
            if listed != name and split == "train" and seen.get(name) == "train":
                continue  # ...and may train beside its original
            if name in seen:
                raise DataError(f"sprite {name!r} is in both {seen[name]} and {split}")
            seen[name] = split
