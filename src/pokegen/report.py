"""The comparison report: one metrics table for every model and baseline, their pictures, training curves,
the params used and the data card, as a self-contained HTML page (images embedded) and a markdown twin
(images beside it in images/). Pure rendering: entries in, text out.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field

from pokegen.evaluation import FRAGMENT_PIXELS, OUTLINE_LUMINANCE, cover_key, mask_key
from pokegen.plugin import ALWAYS_ACCEPTED
from pokegen.stats import FEATURE_SPACE, f1_score

IMAGES = "images"
PICTURE_TITLES = {
    "samples": "Samples",
    "completion": "Completion: real / covered / completed, per cover (then left half, centre, scattered: models that fill any mask)",
    "latent_grid": "Latent grid: two code dims swept, the rest fixed",
    "nearest": "Novelty: each sample next to its nearest training sprite",
}
MISSING = "—"


@dataclass(frozen=True)
class Entry:
    """One row of the report: a model (or baseline), its evaluation metrics, pictures (name -> PNG) and curves CSV,
    and the validation figure its training chose the best epoch on (train_metrics.json's monitor)."""

    name: str
    metrics: dict
    pictures: dict[str, bytes] = field(default_factory=dict)
    curves_csv: str = ""
    monitor: str | None = None


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]


def picture_order(path) -> tuple[int, str]:
    """Sort key of a picture file: the order of PICTURE_TITLES, then any other picture by name."""
    known = list(PICTURE_TITLES)
    return (known.index(path.stem) if path.stem in known else len(known), path.stem)


def image_path(model: str, picture: str) -> str:
    return f"{IMAGES}/{model}-{picture}.png"


def _get(metrics: dict, *path: str):
    for key in path:
        if not isinstance(metrics, dict) or metrics.get(key) is None:
            return None
        metrics = metrics[key]
    return metrics


def _number(value) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _beside_real(entries: list[Entry], title: str, key: str) -> str:
    """A column's title with the real test sprites' figure (distribution.KEY_real, the same in every evaluation)."""
    real = next((value for entry in entries if (value := _get(entry.metrics, "distribution", f"{key}_real")) is not None), None)
    return title if real is None else f"{title} (real {real:.3f})"


def metrics_table(entries: list[Entry], covers: list[float], masks: list[str] = ()) -> Table:
    """Rows of figures as they appear in each evaluation/NAME/metrics.json, rounded to 3 decimals; the headline figures
    first, so a page narrower than the table still shows them."""
    headline = ("precision", "recall", "c2st_accuracy", "lone_pixels", "colors_per_sprite", "outlined_edges", "fragments")
    headers = ["model", "likelihood", "test bits/pixel", "precision", "recall", "C2ST accuracy"]
    headers += [_beside_real(entries, "lone pixels", "lone_pixels"), _beside_real(entries, "colors per sprite", "colors_per_sprite")]
    headers.append(_beside_real(entries, "outlined edges", "outlined_edges"))
    headers.append(_beside_real(entries, "fragments per sprite", "fragments"))
    headers.append("ELBO bits/pixel")
    for cover in covers:
        headers += [f"completion {cover:.0%} accuracy", f"completion {cover:.0%} bits/pixel"]
    headers += [f"fill {shape} accuracy" for shape in masks]
    headers += ["exact copies", "near copies", "C_T", "palette JS", "density", "coverage", "code dims in use"]
    rows = []
    for entry in entries:
        m = entry.metrics
        row = [entry.name, _get(m, "likelihood", "kind") or "none", _number(_get(m, "likelihood", "bits_per_pixel"))]
        row += [_number(_get(m, "distribution", key)) for key in headline]
        row.append(_number(_get(m, "likelihood", "elbo_bits_per_pixel")))
        for cover in covers:
            row += [_number(_get(m, "completion", cover_key(cover), "accuracy")), _number(_get(m, "completion", cover_key(cover), "bits_per_pixel"))]
        row += [_number(_get(m, "completion", mask_key(shape), "accuracy")) for shape in masks]
        row += [_number(_get(m, "novelty", key)) for key in ("samples_exact_copies", "samples_near_copies", "data_copying_ct")]
        row += [_number(_get(m, "distribution", key)) for key in ("palette_js", "density", "coverage")]
        in_use, dims = _get(m, "likelihood", "code_dims_in_use"), _get(m, "likelihood", "code_dims")
        row.append(MISSING if in_use is None else f"{in_use} of {dims}")
        rows.append(row)
    return Table(headers, rows)


def _f1(entry: Entry) -> float:
    return f1_score(_get(entry.metrics, "distribution", "precision") or 0.0, _get(entry.metrics, "distribution", "recall") or 0.0)


def best_first(entries: list[Entry]) -> list[Entry]:
    """Models and baselines by the harmonic mean of precision and recall, best first; then by test bits/pixel."""
    return sorted(entries, key=lambda entry: (-round(_f1(entry), 6), _get(entry.metrics, "likelihood", "bits_per_pixel") or float("inf")))


def _curve(curves_csv: str, monitor: str | None = None) -> tuple[str, list[tuple[float, float]]] | None:
    """The monitored column of curves.csv (without a monitor, its first validation column) as (epoch, value) points."""
    rows = list(csv.DictReader(io.StringIO(curves_csv)))
    columns = [c for c in (rows[0] if rows else {}) if c == monitor] or [c for c in (rows[0] if rows else {}) if c.startswith("val_")]
    if not columns:
        return None
    column = columns[0]
    return column, [(float(r["epoch"]), float(r[column])) for r in rows if r.get(column)]


def curve_svg(curves_csv: str, monitor: str | None = None, width: int = 360, height: int = 160) -> str:
    """A small inline SVG line chart of the monitored (else the first) validation curve; '' when there is none."""
    found = _curve(curves_csv, monitor)
    if not found or not found[1]:
        return ""
    column, points = found
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 30
    coords = " ".join(f"{pad + (x - x0) / (x1 - x0) * (width - 2 * pad):.1f},{height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad):.1f}" for x, y in points)
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{column} by epoch">'
        f'<polyline fill="none" stroke="#3465a4" stroke-width="2" points="{coords}"/>'
        f'<text x="{pad}" y="14" font-size="11">{html.escape(column)}: {ys[0]:.3f} → {ys[-1]:.3f} (min {min(ys):.3f})</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="11">epoch {x0:g}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">{x1:g}</text></svg>'
    )


NOTES = [
    (
        "Figures are on the test split. Bits/pixel: 'exact' is the model's likelihood, 'bound' a lower bound on it "
        "(for the VAE the importance-weighted bound; the ELBO column is the k = 1 bound)."
    ),
    (
        "Completion covers the lower rows of each test sprite; accuracy is per covered pixel, bits/pixel is that of the "
        "true covered pixels given the rest, for models with an exact conditional likelihood. Fill: the left half, the "
        "central square, or half the pixels scattered, completed by the models that can fill any mask (none of the "
        "lecture's could: a raster model draws a pixel only from those before it; pokegen's raster models weigh "
        "several completions by how well they agree with the known pixels after them)."
    ),
    (
        "Exact / near copies: share of samples identical to, or within evaluate.near_copy of, a training sprite. "
        "C_T (Meehan et al. 2020) is well below 0 for a model that copies its training sprites, near 0 otherwise."
    ),
    f"Precision/recall/density/coverage (k-NN, Kynkäänniemi et al. 2019; Naeem et al. 2020) in a fixed feature space: {FEATURE_SPACE}.",
    (
        "C2ST accuracy (Lopez-Paz & Oquab 2017): a logistic regression on that feature space learns to tell the samples "
        "from the 80 held-out real sprites (test and validation), 5-fold cross-validated; 0.5 means it cannot tell them "
        "apart, 1.0 that the samples are trivially fake."
    ),
    (
        "Baseline rows are computed by the report stage on the same split: every pixel drawn independently from the "
        "training color frequencies, global or per position; and every pixel given its left and upper neighbours "
        "(counts with backed-off smoothing), which no neural model should lose to."
    ),
    (
        "Lone pixels: the share of a sample's inner pixels whose four neighbours all have one other color, a lone pixel in "
        "a flat region: the speckle an eye sees, which the block-averaged feature space above barely does; the header "
        "gives the real test sprites' share."
    ),
    (
        "Colors per sprite: the mean number of distinct palette colors in a sample; real sprites use about a dozen, and "
        "one-off colors strewn through a sprite (clutter an eye sees, which lone pixels miss) raise it; the header gives "
        "the real test sprites' figure."
    ),
    (
        "Outlined edges: of the samples' edge pixels (sprite pixels beside the background), the share in a dark color "
        f"(luma below {OUTLINE_LUMINANCE} of 255): real sprites outline their bodies, a body set straight on the background lowers it "
        "(dark specks on the background count as outlined too); the header gives the real test sprites' share."
    ),
    (
        f"Fragments per sprite: pieces of at most {FRAGMENT_PIXELS} pixels apart from the sprite's body (8-connected), "
        "such as an outline begun beside the body and dropped a row later: the dashes on the background an eye sees; "
        "the header gives the real test sprites' figure."
    ),
    "Rows are sorted by the harmonic mean of precision and recall, best first (then by test bits/pixel).",
]
REAL = "real test sprites"


def glance_path(title: str) -> str:
    """The file of one picture in the at-a-glance row: images/glance-<title as a slug>.png."""
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    return f"{IMAGES}/glance-{'-'.join(part for part in slug.split('-') if part)}.png"


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;display:block;overflow-x:auto}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "img{image-rendering:pixelated;margin:4px}figure{display:inline-block;vertical-align:top}pre{background:#f6f6f6;padding:1em}"
    "#glance img{width:300px}#glance figcaption{max-width:300px}"  # every grid drawn at one size, several to a row
)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def render_html(entries: list[Entry], table: Table, params: dict, data_card: dict, glance: dict[str, bytes] | None = None) -> str:
    """A self-contained page: every image is embedded, nothing is fetched. ``glance``: title -> sample grid, real sprites
    first, shown side by side under the table."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>pokegen report</title>',
        f"<style>{STYLE}</style>",
        "</head><body>",
        "<h1>pokegen: models compared</h1>",
        '<table id="metrics"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in table.headers) + "</tr></thead><tbody>",
        *("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in table.rows),
        "</tbody></table>",
        "<ul>" + "".join(f"<li>{e(note)}</li>" for note in NOTES) + "</ul>",
    ]
    if glance:
        out.append('<section id="glance"><h2>Samples at a glance, at one scale: what real looks like first</h2>')
        out += [f'<figure><img src="{_data_uri(png)}" alt="{e(title)}"><figcaption>{e(title)}</figcaption></figure>' for title, png in glance.items()]
        out.append("</section>")
    for entry in entries:
        out.append(f'<section id="model-{e(entry.name)}"><h2>{e(entry.name)}</h2>')
        for picture, png in entry.pictures.items():
            title = PICTURE_TITLES.get(picture, picture)
            out.append(f'<figure><img src="{_data_uri(png)}" alt="{e(entry.name)} {e(title)}"><figcaption>{e(title)}</figcaption></figure>')
        svg = curve_svg(entry.curves_csv, entry.monitor)
        if svg:
            out.append(f"<figure>{svg}<figcaption>Training curve</figcaption></figure>")
        out.append("</section>")
    out += [
        "<h2>Data card</h2>",
        f"<pre>{e(json.dumps(data_card, indent=2, sort_keys=True))}</pre>",
        "<h2>Params used</h2>",
        f"<pre>{e(json.dumps(params, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(out) + "\n"


def render_markdown(entries: list[Entry], table: Table, params: dict, data_card: dict, glance: dict[str, bytes] | None = None) -> str:
    """The same report in markdown; images are files in images/ beside it (glance pictures at glance_path)."""
    out = ["# pokegen: models compared", "", "| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    out += ["| " + " | ".join(row) + " |" for row in table.rows]
    out += ["", *(f"- {note}" for note in NOTES), ""]
    if glance:
        out += ["## Samples at a glance", "", " ".join(f"![{title}]({glance_path(title)})" for title in glance), ""]
    for entry in entries:
        out += [f"## {entry.name}", ""]
        for picture in entry.pictures:
            out += [f"![{entry.name} {PICTURE_TITLES.get(picture, picture)}]({image_path(entry.name, picture)})", ""]
    out += ["## Data card", "", "```json", json.dumps(data_card, indent=2, sort_keys=True), "```", ""]
    out += ["## Params used", "", "```json", json.dumps(params, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def params_used(params, specs) -> dict:
    """The params the report depends on in dvc.yaml (the runner and the deployment change no figure),
    each model's settings resolved with its plugin's defaults filled in."""
    used = params.model_dump(mode="json", by_alias=True, include={"download", "quantize", "tensorize", "evaluate"})
    used["pipeline"] = {"models": params.pipeline.models}
    used["models"] = {
        name: {
            **spec.config.model_dump(mode="json"),
            "train": spec.train.model_dump(mode="json", include=spec.plugin.train_settings | ALWAYS_ACCEPTED),
            "resources": spec.resources.model_dump(mode="json"),
        }
        for name, spec in specs.items()
    }
    return used
