"""Evaluation of a trained model, picked by its capabilities: pure functions, arrays in, numbers out.

    likelihood     bits/pixel on the test split (exact, or a lower bound; the ELBO too where the model has one)
    completion     the lecture's experiment: cover the lower rows, let the model fill them in
    novelty        each sample's nearest training sprite (Hamming distance), against the same figure for
                   held-out test sprites, and the data-copying statistic C_T (Meehan et al., AISTATS 2020)
    distribution   palette histogram divergence and k-NN precision/recall/density/coverage
                   (Kynkäänniemi et al. 2019; Naeem et al. 2020, via the `prdc` package)

The feature space of the k-NN metrics and of the C_T cells is fixed and needs no network (pokegen.stats.features):
the sprite's RGB averaged over a 5x5 grid of blocks, plus how often neighbouring pixels share a color.
Raw pixels would not do: uniform noise averages to the middle of pixel space, inside every real sprite's
k-NN ball, while the neighbour-agreement features put it (and pixel-independent baselines) far away.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances

from pokegen.artifacts import SpriteDataset
from pokegen.errors import ParamsError
from pokegen.images import completion_picture, pairs_picture, palette_grid
from pokegen.params import EvaluateParams, LatentGridParams
from pokegen.plugin import ACTIVE_CODE_NATS, GenerativeModel, bits_per_pixel
from pokegen.stats import distribution_metrics, features

COPYING_Z = -3.0  # C_T below this (a z-score) flags a model as copying its training sprites
MIN_CELL_SHARE = 0.05  # a C_T cell counts when it holds at least this share of the samples (the paper's tau)
OUTLINE_LUMINANCE = 110  # of 255 (Rec. 601 luma): a color darker than this can be an outline's
FRAGMENT_PIXELS = 3  # a piece of sprite this small, apart from the body, is a fragment (a dash, a dot)


def cover_mask(count: int, size: int, cover: float) -> np.ndarray:
    """True on the lower round(size * cover) rows of each of ``count`` sprites, (count, S, S)."""
    mask = np.zeros((count, size, size), dtype=bool)
    mask[:, size - round(size * cover) :, :] = True
    return mask


def cover_key(cover: float) -> str:
    return f"cover_{round(cover * 100)}"


MASK_SHAPES = ("left", "centre", "scattered")  # evaluate.masks: what only a model that fills any mask can complete
SCATTERED_SHARE = 0.5


def shape_mask(shape: str, count: int, size: int, seed: int) -> np.ndarray:
    """(count, S, S) True where ``shape`` covers: the left half, the central square of half the side, or a seeded
    half of the pixels scattered at random (a different scatter per sprite)."""
    mask = np.zeros((count, size, size), dtype=bool)
    half, quarter = size // 2, size // 4
    if shape == "left":
        mask[:, :, :half] = True
    elif shape == "centre":
        mask[:, quarter : quarter + half, quarter : quarter + half] = True
    elif shape == "scattered":
        mask[:] = np.random.default_rng(seed).random((count, size, size)) < SCATTERED_SHARE
    else:
        raise ValueError(f"unknown mask shape {shape!r}; one of {', '.join(MASK_SHAPES)}")
    return mask


def mask_key(shape: str) -> str:
    return f"mask_{shape}"


def completion_masks(model: GenerativeModel, count: int, size: int, settings: EvaluateParams) -> dict[str, np.ndarray]:
    """metrics key -> mask of every completion this model is asked for: the lecture's covers of the lower rows,
    then evaluate.masks where the model fills any mask; none without ``complete``."""
    if "complete" not in model.capabilities():
        return {}
    masks = {cover_key(cover): cover_mask(count, size, cover) for cover in settings.covers}
    if model.completes_any_mask:
        masks |= {mask_key(shape): shape_mask(shape, count, size, settings.seed) for shape in settings.masks}
    return masks


def nearest_hamming(queries: np.ndarray, reference: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of its nearest reference image and the share of pixels they differ in."""
    flat_q = queries.reshape(len(queries), -1)
    flat_r = reference.reshape(len(reference), -1)
    distances, index = np.empty(len(flat_q)), np.empty(len(flat_q), dtype=np.int64)
    for start in range(0, len(flat_q), chunk):
        counts = (flat_q[start : start + chunk, None, :] != flat_r[None, :, :]).sum(axis=2)
        index[start : start + chunk] = counts.argmin(axis=1)
        distances[start : start + chunk] = counts.min(axis=1) / flat_r.shape[1]
    return distances, index


def likelihood_metrics(model: GenerativeModel, test: np.ndarray) -> dict | None:
    """Test bits/pixel, labelled exact or bound; None for a model without a likelihood."""
    if model.likelihood is None:
        return None
    pixels = test.shape[1] * test.shape[2]
    metrics = {"kind": model.likelihood, "bits_per_pixel": bits_per_pixel(-model.log_prob(test), pixels)}
    if "elbo" in model.capabilities():
        metrics["elbo_bits_per_pixel"] = bits_per_pixel(-model.elbo(test), pixels)
    if "kl_per_dimension" in model.capabilities():  # posterior collapse, made visible
        # Counted on the figures written, so the count and the list agree even for a KL that rounds onto the threshold.
        kl = [round(float(value), 4) for value in model.kl_per_dimension(test)]
        metrics["kl_nats_per_code_dim"] = kl
        metrics["code_dims_in_use"] = sum(value > ACTIVE_CODE_NATS for value in kl)
        metrics["code_dims"] = len(kl)
    return metrics


def completion_metrics(model: GenerativeModel, test: np.ndarray, masks: dict[str, np.ndarray], seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Per key of ``masks`` (completion_masks): accuracy of the filled-in pixels (and their bits/pixel given the rest,
    where the model has an exact conditional likelihood for that mask); and the completed sprites."""
    metrics, completed = {}, {}
    for key, mask in masks.items():
        completed[key] = model.complete(test, mask, seed=seed)
        metrics[key] = {"covered_pixels": int(mask.sum()) // len(test), "accuracy": float((completed[key][mask] == test[mask]).mean())}
        if "conditional_log_prob" in model.capabilities() and key.startswith("cover_"):
            metrics[key]["bits_per_pixel"] = bits_per_pixel(-model.conditional_log_prob(test, mask), int(mask[0].sum()))
    return metrics, completed


def _z_mann_whitney(samples: np.ndarray, held_out: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of sample distances against held-out distances: << 0 when samples sit closer."""
    m, n = len(samples), len(held_out)
    u = mannwhitneyu(samples, held_out).statistic  # U of the first argument
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def data_copying_statistic(train: np.ndarray, test: np.ndarray, samples: np.ndarray, palette: np.ndarray, cells: int, seed: int) -> float | None:
    """C_T of Meehan, Chaudhuri and Dasgupta (AISTATS 2020): the test-share-weighted mean, over k-means cells
    of the training data, of the Z-scored Mann-Whitney U between the samples' and the test sprites' distances
    to the nearest training sprite of their cell, in the fixed feature space (where, unlike raw pixels, noise
    in the right colors is not "closer" to the training sprites than real ones). Well below 0: the model
    copies; near 0: it does not; above 0: its samples sit farther from the data than real sprites do.
    None when no cell holds enough samples and a test sprite.
    """
    train_f, test_f, samples_f = features(train, palette), features(test, palette), features(samples, palette)
    kmeans = KMeans(n_clusters=min(cells, len(train)), n_init=4, random_state=seed).fit(train_f)
    train_cells, test_cells, sample_cells = kmeans.labels_, kmeans.predict(test_f), kmeans.predict(samples_f)
    weighted, weights = 0.0, 0.0
    for cell in range(kmeans.n_clusters):
        in_test, in_samples = test_f[test_cells == cell], samples_f[sample_cells == cell]
        if len(in_test) == 0 or len(in_samples) < MIN_CELL_SHARE * len(samples):
            continue
        reference = train_f[train_cells == cell]
        to_samples, to_test = (pairwise_distances(points, reference).min(axis=1) for points in (in_samples, in_test))
        weighted += _z_mann_whitney(to_samples, to_test) * len(in_test)
        weights += len(in_test)
    return weighted / weights if weights else None


def latent_grid_codes(latent_dim: int, grid: LatentGridParams) -> np.ndarray:
    """Codes for the lecture's picture: grid.dims swept over [-span, span] (rows, columns), the rest fixed.
    (steps * steps, latent_dim) float32. Raises ParamsError when the dims or fixed values do not fit the code."""
    first, second = grid.dims
    if max(first, second) >= latent_dim:
        raise ParamsError(f"evaluate.latent_grid.dims = {list(grid.dims)}: the model's code has {latent_dim} dims, numbered 0..{latent_dim - 1}")
    fixed = np.full(latent_dim, grid.fixed) if isinstance(grid.fixed, float | int) else np.asarray(grid.fixed, dtype=np.float64)
    if len(fixed) != latent_dim:
        raise ParamsError(f"evaluate.latent_grid.fixed has {len(fixed)} values; give one number, or one per code dim ({latent_dim})")
    values = np.linspace(-grid.span, grid.span, grid.steps)
    codes = np.tile(fixed, (grid.steps * grid.steps, 1))
    codes[:, first] = np.repeat(values, grid.steps)  # down the rows
    codes[:, second] = np.tile(values, grid.steps)  # across the columns
    return codes.astype(np.float32)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (10, 50, 90)}


def novelty_metrics(samples: np.ndarray, train: np.ndarray, test: np.ndarray, palette: np.ndarray, settings: EvaluateParams) -> tuple[dict, np.ndarray]:
    """How close samples sit to their nearest training sprite, against held-out test sprites; and C_T.
    Returns the metrics and each sample's nearest training sprite index."""
    sample_distance, nearest = nearest_hamming(samples, train)
    test_distance, _ = nearest_hamming(test, train)
    ct = data_copying_statistic(train, test, samples, palette, settings.copying_cells, settings.seed)
    metrics = {
        "samples_exact_copies": float((sample_distance == 0).mean()),
        "samples_near_copies": float((sample_distance <= settings.near_copy).mean()),
        "samples_nearest_distance": _quantiles(sample_distance),
        "test_exact_copies": float((test_distance == 0).mean()),
        "test_near_copies": float((test_distance <= settings.near_copy).mean()),
        "test_nearest_distance": _quantiles(test_distance),
        "data_copying_ct": ct,
        "copying": bool(ct is not None and ct < COPYING_Z),
    }
    return metrics, nearest


def lone_pixel_share(images: np.ndarray) -> float:
    """The share of inner pixels whose four neighbours all have one color, another than theirs: a lone pixel in a flat
    region, the speckle an eye sees. Real sprites have few (their details are lines and patches); precision and recall
    barely see them (the feature space averages 4x4 blocks)."""
    inner, up, down, left, right = images[:, 1:-1, 1:-1], images[:, :-2, 1:-1], images[:, 2:, 1:-1], images[:, 1:-1, :-2], images[:, 1:-1, 2:]
    return float(((up == down) & (up == left) & (up == right) & (inner != up)).mean())


def colors_per_sprite(images: np.ndarray) -> float:
    """The mean number of distinct palette colors in a sprite. Real sprites use about a dozen of the 167; a model that
    strews one-off colors through its sprites uses several times as many: the confetti an eye sees as clutter, which
    the lone-pixel share misses (a stray among other colors is not alone in a flat region)."""
    flat = np.sort(images.reshape(len(images), -1), axis=1)
    return float(((flat[:, 1:] != flat[:, :-1]).sum(axis=1) + 1).mean())


def background_color(images: np.ndarray) -> int:
    """The palette index sprites stand on: the commonest color among the four corners of ``images`` (N, S, S)."""
    return int(np.bincount(images[:, [0, 0, -1, -1], [0, -1, 0, -1]].reshape(-1)).argmax())


def outlined_edge_share(images: np.ndarray, palette: np.ndarray) -> float:
    """Of the sprites' edge pixels (sprite pixels with a background pixel among their four neighbours), the share drawn in
    a dark color (luma below OUTLINE_LUMINANCE): real sprites draw a dark outline around the body, a model that sets its
    bodies straight on the background scores low. The background is the commonest corner color of ``images``; 0.0 when
    they have no edge pixels."""
    on_background = images == background_color(images)
    beside = np.zeros_like(on_background)
    beside[:, 1:] |= on_background[:, :-1]
    beside[:, :-1] |= on_background[:, 1:]
    beside[:, :, 1:] |= on_background[:, :, :-1]
    beside[:, :, :-1] |= on_background[:, :, 1:]
    edges = beside & ~on_background
    dark = np.asarray(palette, dtype=np.float64) @ np.array([0.299, 0.587, 0.114]) < OUTLINE_LUMINANCE
    return float(dark[images[edges]].mean()) if edges.any() else 0.0


def fragment_pieces(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sprites' pieces and which are fragments: (labels (N, S, S), 0 on the background and piece i + 1 on piece i;
    is_fragment (pieces,) bool). A piece is 8-connected, of anything but the background, within one sprite; a
    fragment is a piece of at most FRAGMENT_PIXELS pixels smaller than its sprite's largest piece. The background is
    the commonest corner color of ``images``."""
    sprite = images != background_color(images)
    within_a_sprite = np.zeros((3, 3, 3), dtype=bool)
    within_a_sprite[1] = True  # 8-connected in each sprite, never across two
    pieces, count = ndimage.label(sprite, structure=within_a_sprite)
    if count == 0:
        return pieces, np.zeros(0, dtype=bool)
    sizes = np.bincount(pieces.reshape(-1))[1:]
    owner = np.array([where[0].start for where in ndimage.find_objects(pieces)])  # each piece's sprite
    largest = np.zeros(len(images), dtype=sizes.dtype)
    np.maximum.at(largest, owner, sizes)
    return pieces, (sizes <= FRAGMENT_PIXELS) & (sizes < largest[owner])


def fragments_per_sprite(images: np.ndarray) -> float:
    """The mean number of fragments in a sprite (fragment_pieces). Real sprites are one body with the odd detail apart
    (0.05 fragments a sprite on the course's test split, 0.10 on validation). A raster model that starts an outline
    beside the body and drops it a row later leaves a dash on the background, which lone pixels (a dash is not alone)
    and colors per sprite (it is in the outline's color) do not count."""
    _, is_fragment = fragment_pieces(images)
    return float(is_fragment.sum() / len(images))


C2ST_FOLDS = 5


def classifier_two_sample_accuracy(samples: np.ndarray, real: np.ndarray, palette: np.ndarray, seed: int) -> tuple[float, int]:
    """How well a classifier tells ``samples`` from ``real`` sprites (Lopez-Paz & Oquab, ICLR 2017).

    A standardised logistic regression on the fixed feature space, on as many samples as real sprites,
    scored by stratified 5-fold cross-validation. Returns (accuracy, sprites per side): 0.5 means
    this classifier cannot tell them apart, 1.0 that the samples are trivially fake."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    count = min(len(samples), len(real))
    chosen = np.concatenate([samples[rng.permutation(len(samples))[:count]], real[rng.permutation(len(real))[:count]]])
    labels = np.repeat([1, 0], count)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(C2ST_FOLDS, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, features(chosen, palette), labels, cv=folds).mean()), count


@dataclass(frozen=True)
class Evaluation:
    metrics: dict  # JSON-ready, the same for the same seed
    samples: np.ndarray  # (samples, S, S)
    nearest_train: np.ndarray  # each sample's nearest training sprite
    completions: dict[str, np.ndarray]  # completion_masks key -> completed test sprites
    completion_masks: dict[str, np.ndarray]  # the same key -> what was covered
    sprites_per_second: float  # sampling throughput on this machine (kept out of metrics: it varies)


def evaluate(model: GenerativeModel, dataset: SpriteDataset, settings: EvaluateParams) -> Evaluation:
    """Every metric the model's capabilities allow, on the test split, with seeded sampling."""
    train, test, palette = dataset.splits["train"], dataset.splits["test"], dataset.palette
    started = time.perf_counter()
    samples = model.sample(settings.samples, seed=settings.seed)
    sprites_per_second = len(samples) / max(time.perf_counter() - started, 1e-9)
    metrics: dict = {"capabilities": model.capabilities(), "likelihood": likelihood_metrics(model, test)}
    masks = completion_masks(model, len(test), test.shape[1], settings)
    metrics["completion"], completions = completion_metrics(model, test, masks, settings.seed)
    metrics["novelty"], nearest = novelty_metrics(samples, train, test, palette, settings)
    metrics["distribution"] = distribution_metrics(samples, test, palette, settings.nearest_k)
    held_out = np.concatenate([test, dataset.splits["val"]])  # every real sprite no model trained on
    accuracy, per_side = classifier_two_sample_accuracy(samples, held_out, palette, settings.seed)
    metrics["distribution"].update(c2st_accuracy=accuracy, c2st_sprites_per_side=per_side)
    metrics["distribution"].update(lone_pixels=lone_pixel_share(samples), lone_pixels_real=lone_pixel_share(test))
    metrics["distribution"].update(colors_per_sprite=colors_per_sprite(samples), colors_per_sprite_real=colors_per_sprite(test))
    metrics["distribution"].update(
        outlined_edges=outlined_edge_share(samples, palette), outlined_edges_real=outlined_edge_share(test, palette)
    )
    metrics["distribution"].update(fragments=fragments_per_sprite(samples), fragments_real=fragments_per_sprite(test))
    return Evaluation(metrics, samples, nearest, completions, masks, sprites_per_second)


def summary_line(metrics: dict) -> str:
    """One log line: the headline figures of an evaluation."""
    parts = []
    if (metrics.get("likelihood") or {}).get("bits_per_pixel") is not None:
        parts.append(f"test {metrics['likelihood']['bits_per_pixel']:.3f} bits/pixel ({metrics['likelihood']['kind']})")
    for key, row in (metrics.get("completion") or {}).items():
        parts.append(f"{key} accuracy {row['accuracy']:.3f}")
    copying = (metrics.get("novelty") or {}).get("data_copying_ct")
    parts.append(f"C_T {'—' if copying is None else f'{copying:.3f}'}")
    parts.append(f"precision {metrics['distribution']['precision']:.3f} recall {metrics['distribution']['recall']:.3f}")
    return ", ".join(parts)



NEAREST_PAIRS = 16  # sample / nearest-training-sprite pairs in nearest.png, four a row


def pictures(model: GenerativeModel, result: Evaluation, dataset: SpriteDataset, settings: EvaluateParams) -> dict[str, Image.Image]:
    """The pictures of one evaluation: samples.png, completion.png (complete), nearest.png, latent_grid.png (decode)."""
    palette, test, scale = dataset.palette, dataset.splits["test"], settings.scale
    grid = result.samples[: settings.grid]
    drawn = {"samples.png": palette_grid(grid, palette, columns=int(np.ceil(np.sqrt(len(grid)))), scale=scale)}
    if result.completions:
        shown = min(settings.completion_rows, len(test))
        masks = {key: mask[:shown] for key, mask in result.completion_masks.items()}
        completed = {key: images[:shown] for key, images in result.completions.items()}
        drawn["completion.png"] = completion_picture(test[:shown], completed, masks, palette, scale=scale)
    pairs = min(NEAREST_PAIRS, len(result.samples))
    nearest = dataset.splits["train"][result.nearest_train[:pairs]]
    drawn["nearest.png"] = pairs_picture(result.samples[:pairs], nearest, palette, pairs_per_row=4, scale=scale)
    if "decode" in model.capabilities():
        latent_dim = np.asarray(model.encode(test[:1])).shape[1]
        codes = latent_grid_codes(latent_dim, settings.latent_grid)
        drawn["latent_grid.png"] = palette_grid(model.decode(codes), palette, columns=settings.latent_grid.steps, scale=scale)
    return drawn
