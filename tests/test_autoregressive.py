"""Issue 10: the raster machinery PixelRNN and the Transformer share (pokegen.autoregressive), with known answers;
the VAE's PixelCNN decoder shares its new-color gate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pokegen.autoregressive import (
    colors_used_before,
    complete_any_mask,
    draw,
    is_raster_suffix,
    neighbour_tokens,
    neighbours_at,
    palette_gated,
    shared_colors,
)
from pokegen.checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from pokegen.errors import DataError
from pokegen.evaluation import shape_mask
from pokegen.plugin import FitContext, TrainSettings
from pokegen.plugins.pixelrnn import PixelRNN, PixelRNNConfig
from pokegen.plugins.transformer import SpriteTransformer, TransformerConfig
from pokegen.plugins.vae import VAE, VAEConfig
from pokegen.testing import toy_sprites


def test_each_pixel_is_fed_the_pixel_before_the_three_above_and_the_one_two_above() -> None:
    image = torch.arange(9).reshape(1, 3, 3)  # colors 0..8 in raster order; 9 stands for off the sprite
    tokens = neighbour_tokens(image, outside=9)[0]
    assert tokens[0].tolist() == [9, 9, 9, 9, 9], "the first pixel sees nothing"
    assert tokens[4].tolist() == [3, 0, 1, 2, 9], "the centre: before it 3; above-left 0, above 1, above-right 2; two above: off"
    assert tokens[3].tolist() == [2, 9, 0, 1, 9], "a row's first pixel follows the end of the row above"
    assert tokens[5].tolist() == [4, 1, 2, 9, 9], "off the right edge"
    assert tokens[7].tolist() == [6, 3, 4, 5, 1], "the last row: two above is the first row's"
    flat = image.reshape(1, -1)
    assert all(torch.equal(neighbours_at(flat, p, 3, 9)[0], tokens[p]) for p in range(9)), "sampling sees what training saw"


def test_the_new_color_gate_takes_its_nats_from_the_colors_the_sprite_has_not_used_before_each_pixel() -> None:
    """Known answer on 3 colors: the sprite 2, 0, 2, 1 has used nothing before its first pixel, {2} before the
    second, {0, 2} before the third and the fourth. With equal color logits and a gate of 0 (softplus(0) = ln 2
    nats), a used color is twice as likely as each new one."""
    used = colors_used_before(torch.tensor([[2, 0, 2, 1]]), colors=3)[0]
    assert used.tolist() == [[False, False, False], [False, False, True], [True, False, True], [True, False, True]]
    outputs = torch.zeros(4, 3 + 1)  # three equal color logits and the gate
    probabilities = torch.softmax(palette_gated(outputs, used), dim=-1)
    assert torch.allclose(probabilities[0], torch.full((3,), 1 / 3)), "nothing used yet: the gate changes nothing"
    assert torch.allclose(probabilities[1], torch.tensor([0.25, 0.25, 0.5]))
    assert torch.allclose(probabilities[3], torch.tensor([0.4, 0.2, 0.4]))


def test_the_shared_colors_are_those_at_least_the_given_share_of_sprites_use() -> None:
    sprites = np.zeros((4, 2, 2), dtype=np.uint8)  # color 0 in all four sprites
    sprites[:3, 0, 0] = 1  # color 1 in three of four
    sprites[3, 1, 1] = 2  # color 2 in one
    assert shared_colors(sprites, colors=4, share=0.5).tolist() == [True, True, False, False]
    assert shared_colors(sprites, colors=4, share=0.75).tolist() == [True, True, False, False]
    assert shared_colors(sprites, colors=4, share=1.0).tolist() == [True, False, False, False]
    assert shared_colors(sprites, colors=4, share=0.25).tolist() == [True, True, True, False]


def test_the_gate_spares_the_shared_colors_from_the_first_pixel_on() -> None:
    """Known answer: the sprite 2, 0, ... on 3 colors with color 1 shared. With equal color logits and a gate of
    0, color 1 counts as used before any pixel: at the first pixel it is twice as likely as 0 or 2."""
    torch.manual_seed(0)
    model = PixelRNN(PixelRNNConfig(hidden=8), colors=3, size=2)
    model.shared_colors = torch.tensor([False, True, False])
    with torch.no_grad():
        model.outputs = lambda images: torch.zeros((len(images), 4, 3 + 1))  # equal logits, gate 0
        probabilities = torch.softmax(model.logits(torch.tensor([[[2, 0], [2, 1]]])), dim=-1)[0]
    assert torch.allclose(probabilities[0], torch.tensor([0.25, 0.5, 0.25])), "only the shared color is used"
    assert torch.allclose(probabilities[1], torch.tensor([0.2, 0.4, 0.4])), "2 drawn: 1 and 2 used, 0 new"


GATED = {  # a model with a new-color gate, and where it keeps its shared colors (attribute, checkpoint tensor)
    "pixelrnn": (lambda: PixelRNN(PixelRNNConfig(hidden=8), colors=6, size=8), lambda model: model.shared_colors, "shared_colors"),
    "vae": (
        lambda: VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8),
        lambda model: model.module.head.shared_colors,
        "head.shared_colors",
    ),
}


@pytest.mark.parametrize("name", GATED)
def test_fit_finds_the_shared_colors_and_the_checkpoint_keeps_them(tmp_path, name) -> None:
    build, shared_of, tensor = GATED[name]
    sprites = np.zeros((40, 8, 8), dtype=np.uint8)  # the background 0 in all
    sprites[:, 4:, 4:] = 1 + np.arange(40)[:, None, None] % 4  # colors 1-4 each in a quarter of the sprites
    sprites[::4, 0, 0] = sprites[1::4, 0, 0] = sprites[2::4, 0, 0] = 5  # color 5 in three quarters
    torch.manual_seed(0)
    model = build()
    model.fit(sprites[:32], sprites[32:], TrainSettings(epochs=1, batch_size=16), FitContext())
    assert shared_of(model).tolist() == [True, False, False, False, False, True]
    save_checkpoint(model, tmp_path, data_sha256="0" * 64, summary={})
    loaded = load_checkpoint(tmp_path)
    assert shared_of(loaded).tolist() == shared_of(model).tolist()
    assert np.array_equal(loaded.sample(4, seed=3), model.sample(4, seed=3)), "the loaded model draws what the trained one drew"

    from safetensors.torch import load, save

    tensors = load((tmp_path / WEIGHTS).read_bytes())
    del tensors[tensor]  # as a checkpoint from before the shared colors
    (tmp_path / WEIGHTS).write_bytes(save(tensors))
    with pytest.raises(DataError, match=rf"do not fit the installed {name} plugin's network.*dvc repro train@{name}"):
        load_checkpoint(tmp_path)


def test_the_vae_decoder_gates_the_colors_new_to_the_sprite_and_spares_the_shared_ones() -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=8, embed=4, head_channels=8), colors=6, size=8)
    head = model.module.head
    head.shared_colors.copy_(torch.tensor([False, False, False, False, False, True]))
    image = torch.zeros((1, 8, 8), dtype=torch.long)
    image[0, 2, 3] = 3
    codes = torch.randn(1, 10)
    with torch.no_grad():
        raw = head.outputs(image, model.module.features(codes))[0].permute(1, 2, 0)  # (S, S, K + 1), the gate last
        logits = model.module.logits(codes, image)[0].permute(1, 2, 0)  # (S, S, K)
    taken = torch.nn.functional.softplus(raw[..., -1])
    assert (taken > 0).all()
    # The first pixel: nothing used yet, every color but the shared 5 loses the gate's nats.
    assert torch.allclose(logits[0, 0, :5], raw[0, 0, :5] - taken[0, 0]) and logits[0, 0, 5] == raw[0, 0, 5]
    # The second: the background 0 is used now.
    assert logits[0, 1, 0] == raw[0, 1, 0] and torch.allclose(logits[0, 1, 3], raw[0, 1, 3] - taken[0, 1])
    # Color 3 at (2, 3) is new there, used after it.
    assert torch.allclose(logits[2, 3, 3], raw[2, 3, 3] - taken[2, 3]) and logits[2, 4, 3] == raw[2, 4, 3]
    assert torch.allclose(logits[2, 4, 1], raw[2, 4, 1] - taken[2, 4]), "a color never drawn stays new"


RASTER_MODELS = [
    (PixelRNN, PixelRNNConfig(hidden=16)),
    (PixelRNN, PixelRNNConfig(hidden=16, context="neighbours")),
    (PixelRNN, PixelRNNConfig(hidden=16, context="previous")),
    (SpriteTransformer, TransformerConfig(width=16, layers=2, heads=2)),
]


@pytest.mark.parametrize(("plugin", "config"), RASTER_MODELS, ids=["pixelrnn", "pixelrnn-neighbours", "pixelrnn-previous", "transformer"])
def test_drawing_step_by_step_gives_the_probabilities_the_model_is_scored_with(plugin, config) -> None:
    """The LSTM's carried state and the Transformer's key/value cache, stepped with the palette so far, must
    reproduce the teacher-forced logits: otherwise samples come from another distribution than the one test
    bits/pixel measures."""
    torch.manual_seed(0)
    model = plugin(config, colors=6, size=8)
    model.module.eval()
    model.shared_colors = torch.tensor([True, False, False, True, False, False])  # spared by the gate in both ways
    images = torch.as_tensor(toy_sprites(count=3, colors=6, size=8), dtype=torch.long)
    with torch.no_grad():
        whole = torch.log_softmax(model.logits(images), dim=-1)
        step, flat = model.drawing_step(3), images.reshape(3, -1)
        used = colors_used_before(flat, 6)
        stepped = torch.stack([torch.log_softmax(step(neighbours_at(flat, p, 8, 6), p, used[:, p]), dim=-1) for p in range(64)], dim=1)
    assert torch.allclose(stepped, whole, atol=1e-4), float((stepped - whole).abs().max())


@pytest.mark.parametrize("completing", [False, True], ids=["sampling", "completing"])
def test_the_sampler_hands_each_step_the_colors_drawn_or_kept_before_it(completing: bool) -> None:
    """What the gate reads while drawing must be what training gave it: the colors of the pixels before the
    position, drawn ones and, when completing, kept ones alike."""
    seen = []

    def recording(neighbours: torch.Tensor, position: int, used: torch.Tensor) -> torch.Tensor:
        seen.append(used.clone())
        return torch.zeros((len(neighbours), 5))  # every color equally likely: sprites of many colors

    known = torch.as_tensor(toy_sprites(count=6, colors=5, size=4), dtype=torch.long).reshape(6, -1)
    mask = torch.rand(known.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    options = {"known": known, "mask": mask} if completing else {}
    pixels, _ = draw(recording, 6, 4, 5, temperature=1.0, generator=torch.Generator().manual_seed(0), **options)
    flat = pixels.reshape(6, -1)
    if completing:
        assert torch.equal(flat[~mask], known[~mask]) and not torch.equal(flat, known), "kept pixels kept, others drawn"
    assert torch.equal(torch.stack(seen, dim=1), colors_used_before(flat, 5))


def _one_color_model(flip: float):
    """A known raster model on 2 colors: the first pixel is either color with probability 1/2, every later pixel
    repeats the one before it except with probability ``flip``. Its sprites are (nearly) all one color."""

    def drawing_step(n: int):
        def step(neighbours: torch.Tensor, position: int, used: torch.Tensor) -> torch.Tensor:
            if position == 0:
                return torch.zeros((len(neighbours), 2))
            same = torch.nn.functional.one_hot(neighbours[:, 0], 3)[:, :2].double()
            return torch.log(same * (1 - flip) + (1 - same) * flip).float()

        return step

    return drawing_step


def test_a_mask_that_is_not_the_lower_rows_is_filled_from_the_known_pixels_after_it() -> None:
    """Known answer: sprites all of color 1, covered but for the last pixel. Drawn in raster order, the first pixel
    is a coin toss that the rest repeats, so a raster draw alone is wrong about half the time; weighing candidates by
    the known last pixel must pick color 1 (a candidate of color 0 weighs 0.001 against ~1)."""
    images = np.ones((20, 4, 4), dtype=np.uint8)
    mask = np.ones_like(images, dtype=bool)
    mask[:, -1, -1] = False
    options = {"temperature": 1.0, "seed": 0, "device": torch.device("cpu")}
    weighed = complete_any_mask(_one_color_model(0.001), images, mask, 2, candidates=16, **options)
    assert np.array_equal(weighed, images), "every covered pixel restored from the known ones after it"
    alone = complete_any_mask(_one_color_model(0.001), images, mask, 2, candidates=1, **options)
    wrong = (alone[mask] != 1).mean()
    assert 0.2 < wrong < 0.8, f"one candidate is a raster draw that ignores the right half ({wrong:.2f} wrong)"


def test_the_mask_shapes_cover_what_their_names_say() -> None:
    left, centre, scattered = (shape_mask(shape, 50, 20, seed=3) for shape in ("left", "centre", "scattered"))
    assert left[:, :, :10].all() and not left[:, :, 10:].any()
    assert centre[:, 5:15, 5:15].all() and centre.sum() == 50 * 100
    assert math.isclose(scattered.mean(), 0.5, abs_tol=0.02) and not np.array_equal(scattered[0], scattered[1])
    assert np.array_equal(scattered, shape_mask("scattered", 50, 20, seed=3)), "seeded"
    lower = np.zeros((2, 20, 20), dtype=bool)
    lower[:, 12:] = True
    assert is_raster_suffix(lower).all() and not is_raster_suffix(left[:2]).any() and not is_raster_suffix(centre[:2]).any()
    with pytest.raises(ValueError, match="unknown mask shape 'top'"):
        shape_mask("top", 1, 20, seed=0)


def test_the_new_color_penalty_makes_a_color_new_to_the_sprite_less_likely_from_the_second_row_on() -> None:
    """A model that draws each of 3 colors with probability 1/3 everywhere, on 2x2 sprites. With a penalty of
    ln 2 nats, a second-row pixel of a sprite whose first row is one color repeats it with probability
    1 / (1 + 2 x 1/2) = 1/2 instead of 1/3; the first row is drawn as without it."""

    def uniform(neighbours: torch.Tensor, position: int, used: torch.Tensor) -> torch.Tensor:
        return torch.zeros((len(neighbours), 3))

    def shares(penalty: float) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(0)
        pixels, _ = draw(uniform, 60_000, 2, 3, temperature=1.0, generator=generator, new_color_penalty=penalty)
        flat = pixels.reshape(len(pixels), -1)
        one_color_row = flat[:, 0] == flat[:, 1]
        return float(one_color_row.double().mean()), float((flat[one_color_row, 2] == flat[one_color_row, 0]).double().mean())

    first_row, repeated = shares(0.0)
    assert first_row == pytest.approx(1 / 3, abs=0.01) and repeated == pytest.approx(1 / 3, abs=0.01)
    first_row, repeated = shares(math.log(2))
    assert first_row == pytest.approx(1 / 3, abs=0.01), "the first row is drawn as without the penalty"
    assert repeated == pytest.approx(1 / 2, abs=0.01), "a used color: twice as likely as each new one"
