"""Stage tensorize: the seeded train/val/test split and its data card."""

from __future__ import annotations

import logging

from pokegen.artifacts import QuantizedSprites
from pokegen.fileio import sha256_file, write_json_atomic
from pokegen.layout import Layout
from pokegen.params import Params
from pokegen.tensorize import check_disjoint, data_card, split_sprites

log = logging.getLogger(__name__)


def run_tensorize(params: Params, layout: Layout) -> dict:
    """Split the quantized sprites; write dataset.safetensors and data_card.json. Returns the card."""
    sprites = QuantizedSprites.load(layout.quantized_sprites)
    tp = params.tensorize
    dataset = split_sprites(sprites, val=tp.val, test=tp.test, seed=tp.seed, flip=tp.flip)
    check_disjoint(dataset)
    card = data_card(dataset, seed=tp.seed, quantized_sha256=sha256_file(layout.quantized_sprites), flip=tp.flip)
    dataset.save(layout.dataset)
    write_json_atomic(layout.data_card, card)
    log.info("tensorize: train %(train)d, val %(val)d, test %(test)d", card["counts"])
    return card
