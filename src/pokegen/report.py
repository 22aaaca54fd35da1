"""The comparison report: a short table that leads (the judge first), a details table of every other figure, every
model's pictures, training curves, the params used and the data card, as a self-contained HTML page (images
embedded) and a markdown twin (images beside it in images/). Pure rendering: entries in, text out; the columns and
notes come from pokegen.evaluation.METRICS.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field

from pokegen.evaluation import METRICS, Metric, figure, metrics_table
from pokegen.params import EvaluateParams
from pokegen.plugin import ALWAYS_ACCEPTED

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
    """One row of the report: a model, its evaluation metrics, pictures (name -> PNG) and curves CSV, the validation
    figure its training chose the best epoch on (train_metrics.json's monitor)."""

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


def _number(value) -> str:
    """A figure to 3 decimals, a count as it is; "—" where the model has none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _header(metric: Metric, entries: list[Entry]) -> str:
    """A column's title, with the real test sprites' own figure where the evaluation records one."""
    real = next((value for entry in entries if (value := figure(entry.metrics, f"{metric.key}_real")) is not None), None)
    return metric.label if real is None else f"{metric.label} (real {real:.3f})"


def _judge_order(entry: Entry) -> tuple[float, float]:
    return (figure(entry.metrics, "judge.accuracy") or float("inf"), figure(entry.metrics, "likelihood.bits_per_pixel") or float("inf"))


def judged_first(entries: list[Entry]) -> list[Entry]:
    """Models by the judge's accuracy, the hardest to tell from real sprites first; then by test bits/pixel."""
    return sorted(entries, key=_judge_order)


def _headline_cell(metric: Metric, metrics: dict) -> str:
    value = figure(metrics, metric.key)
    if metric.key == "judge.accuracy" and value is not None:
        return f"{value:.3f} ± {figure(metrics, 'judge.spread'):.3f}"
    if metric.key == "likelihood.bits_per_pixel" and value is not None:
        return f"{value:.3f} {figure(metrics, 'likelihood.kind')}"
    return _number(value)


def headline_table(entries: list[Entry]) -> Table:
    """The short table the report leads with: model, judge ± spread, test bits/pixel (exact or bound), precision and
    recall in the judge's space, copies, training seconds; in the order given (judged_first).

    The training seconds are left "—": a wall time differs from run to run, and the report is a DVC output that must
    come out the same wherever the models do. The page fills them in from TIMINGS_SCRIPT where the machine that
    trained left its timings (training_seconds_script)."""
    columns = [metric for metric in METRICS if metric.headline]
    rows = [[entry.name, *(_headline_cell(metric, entry.metrics) for metric in columns), MISSING] for entry in entries]
    return Table(["model", *(_header(metric, entries) for metric in columns), TRAINING_SECONDS], rows)


TRAINING_SECONDS = "training seconds"
TIMINGS_SCRIPT = "../timings/report.js"  # from reports/index.html: git-ignored, outside every DVC output


def training_seconds_script(seconds: dict[str, float]) -> str:
    """The script index.html loads from TIMINGS_SCRIPT: each model's training wall time on this machine."""
    return f"window.pokegenTrainingSeconds = {json.dumps({name: round(value) for name, value in seconds.items()}, sort_keys=True)};\n"


# Fills the headline's training-seconds column from TIMINGS_SCRIPT, where it loaded; elsewhere the cells stay "—".
FILL_TRAINING_SECONDS = """<script>
(() => {
  const seconds = window.pokegenTrainingSeconds || {};
  const column = [...document.querySelectorAll("#metrics th")].findIndex((th) => th.textContent === "COLUMN");
  for (const row of document.querySelectorAll("#metrics tbody tr")) {
    const name = row.cells[0].textContent;
    if (name in seconds) row.cells[column].textContent = String(seconds[name]);
  }
})();
</script>""".replace("COLUMN", TRAINING_SECONDS)


def details_table(entries: list[Entry], settings: EvaluateParams) -> Table:
    """Every other figure of the evaluation, as evaluation/NAME/metrics.json holds it, rounded to 3 decimals."""
    columns = [metric for metric in metrics_table(settings) if metric.shown and not metric.headline]
    rows = [[entry.name, *(_number(figure(entry.metrics, metric.key)) for metric in columns)] for entry in entries]
    return Table(["model", *(_header(metric, entries) for metric in columns)], rows)


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


def notes(settings: EvaluateParams) -> list[str]:
    """What each figure means: the notes of METRICS, then how the rows are ordered and where the time comes from."""
    found = [metric.note for metric in metrics_table(settings) if metric.note]
    return [
        *found,
        (
            "Training seconds: the wall time of train@MODEL on the machine that trained it. It is not versioned, since it "
            "differs from run to run: index.html shows it, as of the last run of the report, where that machine's "
            "timings/ folder is beside reports/ (timings/train-MODEL.json holds it), and elsewhere it reads —."
        ),
        (
            "Rows are sorted by the judge's accuracy, the model hardest to tell from real sprites first (then by test "
            "bits/pixel). Baselines are plugins too (neighbours: each pixel given its left and upper neighbours, the row "
            "no neural model should lose to); pipeline.models lists which run."
        ),
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


@dataclass(frozen=True)
class Report:
    """What the report shows: the models (judged first), the two tables, the notes, the params used, the data card, and
    the at-a-glance row (title -> sample grid, real sprites first)."""

    entries: list[Entry]
    headline: Table
    details: Table
    notes: list[str]
    params: dict
    data_card: dict
    glance: dict[str, bytes] = field(default_factory=dict)


def _html_table(table: Table, table_id: str) -> list[str]:
    e = html.escape
    return [
        f'<table id="{table_id}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in table.headers) + "</tr></thead><tbody>",
        *("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in table.rows),
        "</tbody></table>",
    ]


def render_html(report: Report) -> str:
    """A self-contained page: every image is embedded, nothing is fetched."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>pokegen report</title>',
        f"<style>{STYLE}</style>",
        "</head><body>",
        "<h1>pokegen: models compared</h1>",
        *_html_table(report.headline, "metrics"),
        f'<script src="{TIMINGS_SCRIPT}"></script>',
        FILL_TRAINING_SECONDS,
    ]
    if report.glance:
        out.append('<section id="glance"><h2>Samples at a glance, at one scale: what real looks like first</h2>')
        out += [f'<figure><img src="{_data_uri(png)}" alt="{e(title)}"><figcaption>{e(title)}</figcaption></figure>' for title, png in report.glance.items()]
        out.append("</section>")
    out += ["<h2>Details</h2>", *_html_table(report.details, "details"), "<ul>" + "".join(f"<li>{e(note)}</li>" for note in report.notes) + "</ul>"]
    for entry in report.entries:
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
        f"<pre>{e(json.dumps(report.data_card, indent=2, sort_keys=True))}</pre>",
        "<h2>Params used</h2>",
        f"<pre>{e(json.dumps(report.params, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(out) + "\n"


def _markdown_table(table: Table) -> list[str]:
    return ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers), *("| " + " | ".join(row) + " |" for row in table.rows)]


def render_markdown(report: Report) -> str:
    """The same report in markdown; images are files in images/ beside it (glance pictures at glance_path)."""
    out = ["# pokegen: models compared", "", *_markdown_table(report.headline), ""]
    if report.glance:
        out += ["## Samples at a glance", "", " ".join(f"![{title}]({glance_path(title)})" for title in report.glance), ""]
    out += ["## Details", "", *_markdown_table(report.details), "", *(f"- {note}" for note in report.notes), ""]
    for entry in report.entries:
        out += [f"## {entry.name}", ""]
        for picture in entry.pictures:
            out += [f"![{entry.name} {PICTURE_TITLES.get(picture, picture)}]({image_path(entry.name, picture)})", ""]
    out += ["## Data card", "", "```json", json.dumps(report.data_card, indent=2, sort_keys=True), "```", ""]
    out += ["## Params used", "", "```json", json.dumps(report.params, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def params_used(params, specs) -> dict:
    """The params the report depends on in dvc.yaml (the runner and the deployment change no figure),
    each model's settings resolved with its plugin's defaults filled in."""
    used = params.model_dump(mode="json", by_alias=True, include={"download", "quantize", "tensorize", "evaluate"})
    used["pipeline"] = {"models": params.pipeline.models}
    used["sample"] = {name: spec.sampling.model_dump(mode="json") for name, spec in specs.items()}
    used["models"] = {
        name: {
            **spec.config.model_dump(mode="json"),
            "train": spec.train.model_dump(mode="json", include=spec.plugin.train_settings | ALWAYS_ACCEPTED),
            "resources": spec.resources.model_dump(mode="json"),
        }
        for name, spec in specs.items()
    }
    return used
