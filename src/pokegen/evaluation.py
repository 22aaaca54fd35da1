"""Evaluation of a trained model, picked by its capabilities: pure functions, arrays in, numbers out.

    judge          a small convolutional network trained from scratch to tell samples from real sprites
                   (pokegen.judge), and precision/recall/density/coverage in its feature space
    likelihood     bits/pixel on the test split (exact, or a lower bound; the ELBO too where the model has one)
    completion     the lecture's experiment: cover the lower rows, let the model fill them in
    novelty        each sample's nearest training sprite (Hamming distance), against the same figure for
                   held-out test sprites, and the data-copying statistic C_T (Meehan et al., AISTATS 2020)
    distribution   what an eye sees in a grid: lone pixels, colors per sprite, outlined edges, fragments, palette JS
    blocks         the old fixed feature space: k-NN figures and a logistic two-sample test on block colors

METRICS is the one table of every figure: its key in evaluation/NAME/metrics.json, the report's column and note,
the function that computes it, and how a scheduled run may compare on it (deployment.regression). The report,
the log line and the regression limits read it; adding a figure is one row.

The fixed feature space of the block figures and of the C_T cells needs no network (pokegen.stats.features): the
sprite's RGB averaged over a 5x5 grid of blocks, plus how often neighbouring pixels share a color. It sees a
sprite's average colors, not its shape, so the judge's space leads and these are details.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances

from pokegen.artifacts import SpriteDataset
from pokegen.errors import ParamsError
from pokegen.images import completion_picture, pairs_picture, palette_grid
from pokegen.judge import PROTOCOL as JUDGE_PROTOCOL
from pokegen.judge import judge
from pokegen.params import EvaluateParams, LatentGridParams
from pokegen.plugin import ACTIVE_CODE_NATS, GenerativeModel, bits_per_pixel, sample_in_chunks
from pokegen.stats import FEATURE_SPACE, distribution_metrics, features, palette_js_divergence

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


class Scoring:
    """What the metrics of one evaluation read, each part computed once, when a metric first asks for it.

    One pool of samples: the first ``evaluate.samples`` are the samples of the novelty, distribution and pictures;
    the judge learns the training sprites against the first len(train) (or ``samples``, if more), and each of its
    seeds is then scored against as many fresh ones as there are held-out sprites."""

    def __init__(self, model: GenerativeModel, dataset: SpriteDataset, settings: EvaluateParams) -> None:
        self.model, self.settings, self.palette = model, settings, dataset.palette
        self.train, self.val, self.test = dataset.splits["train"], dataset.splits["val"], dataset.splits["test"]
        self.held_out = np.concatenate([self.test, self.val])  # every real sprite no model trained on
        self.judged = max(settings.samples, len(self.train))
        started = time.perf_counter()
        self.pool = sample_in_chunks(model.sample, self.judged + settings.judge.seeds * len(self.held_out), settings.seed)
        self.sprites_per_second = len(self.pool) / max(time.perf_counter() - started, 1e-9)
        self.samples = self.pool[: settings.samples]
        self.capabilities = model.capabilities()

    @functools.cached_property
    def judge(self) -> dict:
        fresh = self.pool[self.judged :].reshape(self.settings.judge.seeds, len(self.held_out), *self.train.shape[1:])
        return judge(self.pool[: len(self.train)], list(fresh), self.train, self.held_out, self.palette, self.settings.nearest_k)

    @functools.cached_property
    def likelihood(self) -> dict | None:
        return likelihood_metrics(self.model, self.test)

    @functools.cached_property
    def completion_masks(self) -> dict[str, np.ndarray]:
        return completion_masks(self.model, len(self.test), self.test.shape[1], self.settings)

    @functools.cached_property
    def completion(self) -> tuple[dict, dict[str, np.ndarray]]:
        return completion_metrics(self.model, self.test, self.completion_masks, self.settings.seed)

    @functools.cached_property
    def novelty(self) -> tuple[dict, np.ndarray]:
        return novelty_metrics(self.samples, self.train, self.test, self.palette, self.settings)

    @functools.cached_property
    def blocks(self) -> dict:
        """The fixed block-color feature space's figures (pokegen.stats), kept as details: it cannot see shape."""
        found = distribution_metrics(self.samples, self.test, self.palette, self.settings.nearest_k)
        accuracy, _ = classifier_two_sample_accuracy(self.samples, self.held_out, self.palette, self.settings.seed)
        return {**found, "c2st_accuracy": accuracy}


@dataclass(frozen=True)
class Metric:
    """One figure of evaluation/NAME/metrics.json: where it is (a dotted key), its column and note in the report, the
    function that computes it from a Scoring (None: the model cannot have it), and how runs may compare on it."""

    key: str
    label: str
    note: str
    compute: Callable[[Scoring], Any]
    headline: bool = False  # a column of the report's short leading table
    worse: Literal["higher", "lower"] | None = None  # which way a figure gets worse (deployment.regression)
    limit: str | None = None  # the deployment.regression key that bounds how much worse a scheduled run may get
    shown: bool = True  # a column of the details table (False: in metrics.json only, a list or a count)
    real: Callable[[Scoring], float] | None = None  # the same figure for the real test sprites, beside it


def _from(section: str, *path: str) -> Callable[[Scoring], Any]:
    """A compute that reads ``path`` from one of Scoring's sections (None where the section or a key is missing)."""

    def compute(scoring: Scoring) -> Any:
        found = getattr(scoring, section)
        found = found[0] if isinstance(found, tuple) else found
        for key in path:
            if not isinstance(found, dict) or key not in found:
                return None
            found = found[key]
        return found

    return compute


def _on_samples(statistic: Callable[..., float], *, with_palette: bool = False) -> tuple[Callable[[Scoring], float], Callable[[Scoring], float]]:
    """(on the samples, on the real test sprites) for a statistic of a set of sprites."""
    extra = (lambda s: (s.palette,)) if with_palette else (lambda s: ())
    return (lambda s: statistic(s.samples, *extra(s))), (lambda s: statistic(s.test, *extra(s)))


def _statistic(key: str, label: str, note: str, statistic: Callable[..., float], with_palette: bool = False) -> Metric:
    on_samples, on_real = _on_samples(statistic, with_palette=with_palette)
    return Metric(f"distribution.{key}", label, note, on_samples, real=on_real)


METRICS: tuple[Metric, ...] = (
    Metric(
        "judge.accuracy", "judge", "Judge: how often a small convolutional network, trained from scratch, tells fresh "
        f"samples from the held-out real sprites; mean ± spread over evaluate.judge.seeds. 0.5: it cannot tell them apart; "
        f"1.0: trivially fake. How it is trained: {JUDGE_PROTOCOL}.",
        _from("judge", "accuracy"), headline=True, worse="higher", limit="judge",
    ),
    Metric("judge.spread", "judge spread", "", _from("judge", "spread"), shown=False),
    Metric(
        "likelihood.bits_per_pixel", "test bits/pixel", "Bits/pixel on the test split: 'exact' is the model's likelihood, "
        "'bound' a lower bound on it (for the VAE the importance-weighted bound; the ELBO column is the k = 1 bound).",
        _from("likelihood", "bits_per_pixel"), headline=True, worse="higher", limit="bits_per_pixel",
    ),
    Metric("likelihood.kind", "likelihood", "", _from("likelihood", "kind"), shown=False),
    Metric(
        "judge.precision", "precision", "Precision and recall in the judge's feature space (what its last layer reads, "
        "k-NN, Kynkäänniemi et al. 2019): the share of fresh samples among the held-out real sprites there, and the share "
        "of those real sprites among the samples (variety); means over the judge's seeds.",
        _from("judge", "precision"), headline=True, worse="lower", limit="precision",
    ),
    Metric("judge.recall", "recall", "", _from("judge", "recall"), headline=True, worse="lower", limit="recall"),
    Metric(
        "novelty.samples_near_copies", "copies", "Copies: the share of samples within evaluate.near_copy of a training "
        "sprite (exact copies included). C_T (Meehan et al. 2020) is well below 0 for a model that copies its training "
        "sprites, near 0 otherwise.",
        _from("novelty", "samples_near_copies"), headline=True, worse="higher",
    ),
    Metric("judge.density", "density", "Density and coverage (Naeem et al. 2020), in the judge's space.", _from("judge", "density")),
    Metric("judge.coverage", "coverage", "", _from("judge", "coverage")),
    Metric("judge.real_right", "judge: real called real", "", _from("judge", "real_right")),
    Metric("judge.fake_right", "judge: samples called fake", "", _from("judge", "fake_right")),
    Metric("judge.per_seed", "judge per seed", "", _from("judge", "per_seed"), shown=False),
    Metric("judge.sprites_per_side", "judge sprites per side", "", _from("judge", "sprites_per_side"), shown=False),
    Metric("likelihood.elbo_bits_per_pixel", "ELBO bits/pixel", "", _from("likelihood", "elbo_bits_per_pixel")),
    Metric("likelihood.code_dims_in_use", "code dims in use", "Code dims in use: how many of the code's dimensions carry "
           f"more than {ACTIVE_CODE_NATS} nats of KL on the test sprites (posterior collapse, made visible).",
           _from("likelihood", "code_dims_in_use")),
    Metric("likelihood.code_dims", "code dims", "", _from("likelihood", "code_dims"), shown=False),
    Metric("likelihood.kl_nats_per_code_dim", "KL per code dim", "", _from("likelihood", "kl_nats_per_code_dim"), shown=False),
    # completion.* rows come from the settings: completion_rows()
    Metric("novelty.samples_exact_copies", "exact copies", "", _from("novelty", "samples_exact_copies")),
    Metric("novelty.data_copying_ct", "C_T", "", _from("novelty", "data_copying_ct")),
    Metric("novelty.copying", "copying", "", _from("novelty", "copying"), shown=False),
    Metric("novelty.samples_nearest_distance", "sample distances", "", _from("novelty", "samples_nearest_distance"), shown=False),
    Metric("novelty.test_exact_copies", "test exact copies", "", _from("novelty", "test_exact_copies"), shown=False),
    Metric("novelty.test_near_copies", "test near copies", "", _from("novelty", "test_near_copies"), shown=False),
    Metric("novelty.test_nearest_distance", "test distances", "", _from("novelty", "test_nearest_distance"), shown=False),
    _statistic("lone_pixels", "lone pixels", "Lone pixels: the share of a sample's inner pixels whose four neighbours all "
               "have one other color, a lone pixel in a flat region; the header gives the real test sprites' share.", lone_pixel_share),
    _statistic("colors_per_sprite", "colors per sprite", "Colors per sprite: the mean number of distinct palette colors in "
               "a sample; real sprites use about a dozen.", colors_per_sprite),
    _statistic("outlined_edges", "outlined edges", "Outlined edges: of the samples' edge pixels (sprite pixels beside the "
               f"background), the share in a dark color (luma below {OUTLINE_LUMINANCE} of 255): real sprites outline their bodies.",
               outlined_edge_share, with_palette=True),
    _statistic("fragments", "fragments per sprite", f"Fragments per sprite: pieces of at most {FRAGMENT_PIXELS} pixels "
               "apart from the sprite's body (8-connected): the dashes on the background an eye sees.", fragments_per_sprite),
    Metric("distribution.palette_js", "palette JS", "Palette JS: the Jensen-Shannon divergence (bits) of the samples' "
           "color histogram from the test sprites'.", lambda s: palette_js_divergence(s.samples, s.test, len(s.palette))),
    Metric("blocks.precision", "block precision", "Block precision/recall/density/coverage and C2ST: the same k-NN figures "
           f"and a logistic-regression two-sample test in the old fixed feature space ({FEATURE_SPACE}), which sees a "
           "sprite's average colors, not its shape (the neighbour baseline's fragments score 0.93 precision there).",
           _from("blocks", "precision")),
    Metric("blocks.recall", "block recall", "", _from("blocks", "recall")),
    Metric("blocks.density", "block density", "", _from("blocks", "density")),
    Metric("blocks.coverage", "block coverage", "", _from("blocks", "coverage")),
    Metric("blocks.c2st_accuracy", "block C2ST", "", _from("blocks", "c2st_accuracy")),
)


def completion_rows(settings: EvaluateParams) -> list[Metric]:
    """The completion figures evaluate's settings ask for: per cover its accuracy and conditional bits/pixel, per mask
    shape its accuracy (models that complete only the lower rows have none of the shapes)."""
    rows = []
    note = (
        "Completion covers the lower rows of each test sprite; accuracy is per covered pixel, bits/pixel is that of the "
        "true covered pixels given the rest, for models with an exact conditional likelihood. Fill: the left half, the "
        "central square, or half the pixels scattered, completed by the models that can fill any mask."
    )
    for cover in settings.covers:
        key = cover_key(cover)
        rows.append(Metric(f"completion.{key}.accuracy", f"completion {cover:.0%} accuracy", note if not rows else "", _from("completion", key, "accuracy")))
        rows.append(Metric(f"completion.{key}.bits_per_pixel", f"completion {cover:.0%} bits/pixel", "", _from("completion", key, "bits_per_pixel")))
        rows.append(Metric(f"completion.{key}.covered_pixels", "covered", "", _from("completion", key, "covered_pixels"), shown=False))
    for shape in settings.masks:
        key = mask_key(shape)
        rows.append(Metric(f"completion.{key}.accuracy", f"fill {shape} accuracy", "", _from("completion", key, "accuracy")))
        rows.append(Metric(f"completion.{key}.covered_pixels", "covered", "", _from("completion", key, "covered_pixels"), shown=False))
    return rows


def metrics_table(settings: EvaluateParams) -> list[Metric]:
    """Every figure an evaluation with these settings writes, in the report's order (completion after the likelihood)."""
    where = next(i for i, metric in enumerate(METRICS) if metric.key.startswith("novelty."))
    return [*METRICS[:where], *completion_rows(settings), *METRICS[where:]]


def _put(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


@dataclass(frozen=True)
class Evaluation:
    metrics: dict  # JSON-ready, the same for the same seed
    samples: np.ndarray  # (samples, S, S)
    nearest_train: np.ndarray  # each sample's nearest training sprite
    completions: dict[str, np.ndarray]  # completion_masks key -> completed test sprites
    completion_masks: dict[str, np.ndarray]  # the same key -> what was covered
    sprites_per_second: float  # sampling throughput on this machine (kept out of metrics: it varies)
    sampled: int  # sprites drawn: the samples and the judge's


def evaluate(model: GenerativeModel, dataset: SpriteDataset, settings: EvaluateParams) -> Evaluation:
    """Every figure of metrics_table the model's capabilities allow, on the held-out splits, with seeded sampling."""
    scoring = Scoring(model, dataset, settings)
    metrics: dict = {"capabilities": scoring.capabilities}
    for metric in metrics_table(settings):
        value = metric.compute(scoring)
        if value is not None:
            _put(metrics, metric.key, value)
            if metric.real is not None:
                _put(metrics, f"{metric.key}_real", metric.real(scoring))
    _, completions = scoring.completion
    _, nearest = scoring.novelty
    return Evaluation(metrics, scoring.samples, nearest, completions, scoring.completion_masks, scoring.sprites_per_second, len(scoring.pool))


def figure(metrics: dict, key: str) -> Any:
    """The figure at dotted ``key`` of an evaluation's metrics (None where it has none)."""
    for part in key.split("."):
        if not isinstance(metrics, dict) or metrics.get(part) is None:
            return None
        metrics = metrics[part]
    return metrics


def summary_line(metrics: dict) -> str:
    """One log line: the headline figures of an evaluation."""
    parts = []
    for metric in METRICS:
        value = figure(metrics, metric.key)
        if metric.headline and isinstance(value, float):
            parts.append(f"{metric.label} {value:.3f}" + (f" ± {figure(metrics, 'judge.spread'):.3f}" if metric.key == "judge.accuracy" else ""))
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
