"""Where a scheduled run's results reach the team: a results branch in the project's git repository.

A scheduled run works in a fresh clone of `deployment.branch`. Around the DAG it:

1. ``start``: fetches the results branch (`deployment.results_branch`) and puts the last recorded
   run's dvc.lock and small uncached outputs (metrics, curves, the data card) into the clone, so
   that `dvc pull` brings that run's outputs and DVC re-runs only the stages whose inputs changed;
2. ``commit``: after the DAG and its `dvc push`, makes a commit of the clone with the new dvc.lock
   and small outputs, on top of the last recorded run (and of the source commit when it is new),
   unless those files are the last recorded run's: a run that changed nothing records nothing;
3. ``push``: `git push`es that commit to the results branch. When another run recorded meanwhile,
   the same tree is committed again on top of it, so neither run is lost.

Why a branch rather than `dvc exp push`: a teammate needs nothing but git and DVC (`git fetch`,
`git checkout pokegen-results`, `dvc pull`); the git server shows the branch, its history lists
the runs (`git log --first-parent`), a pull request merges a run into main, and branch protection
applies as to any branch. DVC experiments live under refs/exps, which git servers do not show.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pokegen.errors import PokegenError
from pokegen.evaluation import METRICS
from pokegen.images import png_bytes
from pokegen.params import RegressionLimits

REMOTE = "origin"  # the remote a clone (Prefect's git_clone step included) calls the repository it came from
GIT_TOKEN = "POKEGEN_GIT_TOKEN"  # a token for https remotes: the worker's environment, or deployment.secrets
PUSH_TRIES = 3
log = logging.getLogger("pokegen.flows.results")
SOURCE_TRAILER = "Source-Commit"
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "pokegen",
    "GIT_AUTHOR_EMAIL": "pokegen@localhost",
    "GIT_COMMITTER_NAME": "pokegen",
    "GIT_COMMITTER_EMAIL": "pokegen@localhost",
}


class RecordError(PokegenError):
    """The run's results could not be fetched from or recorded on the results branch."""


class RegressionError(PokegenError):
    """The run got worse than the previous recorded run by more than deployment.regression allows."""


class SecretError(PokegenError):
    """A Prefect Secret block named in deployment.secrets cannot be read."""


def without_credentials(text: str, token: str | None = None) -> str:
    """``text`` with the user:password@ of every URL, and the token itself, blanked out."""
    text = re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)
    return text.replace(token, "***") if token else text


def with_token(url: str, token: str | None) -> str:
    """An https URL carrying ``token`` (as GitHub, GitLab and Gitea take it); any other URL as it is."""
    parts = urlsplit(url)
    if not token or parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"x-access-token:{token}@{parts.netloc}"))


def secrets_into_environment(secrets: dict[str, str]) -> list[str]:
    """Set each variable of ``secrets`` ({ENV: Secret block name}) the environment lacks from its Prefect
    Secret block; the worker's own environment wins. Returns the variables set."""
    missing = {name: block for name, block in secrets.items() if not os.environ.get(name)}
    if not missing:
        return []
    from prefect.blocks.system import Secret

    for name, block in missing.items():
        try:
            value = Secret.load(block, _sync=True).get()
        except ValueError as error:  # Prefect's "Unable to find block document named ..."
            raise SecretError(
                f"deployment.secrets.{name} names the Prefect Secret block '{block}', which the Prefect server cannot "
                f"give ({error}); create it (prefect block create secret, or Secret(value=...).save('{block}')) or "
                f"set {name} in the worker's environment"
            ) from None
        os.environ[name] = str(value)
    return sorted(missing)


@dataclass(frozen=True)
class Recorded:
    """A commit on the results branch, or nothing when the run changed nothing."""

    commit: str | None
    base: str | None  # the previous recorded run (None: this is the first)
    source: str  # the commit the run checked out
    branch: str


class ResultsBranch:
    """The results branch of the clone at ``root``, seen through its remote `origin`."""

    def __init__(self, root: Path, branch: str) -> None:
        self.root, self.branch = root, branch
        self.token = os.environ.get(GIT_TOKEN) or None
        self.base: str | None = None  # the results branch's head when the run started
        self.source = self._git("rev-parse", "HEAD").strip()

    # -- git ---------------------------------------------------------------------------------------------------
    def _git(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
        )
        if check and result.returncode != 0:
            raise RecordError(
                f"{self.root}: git {args[0]} failed: {without_credentials(result.stderr.strip(), self.token)}"
            )
        return result.stdout if check else result.stdout + result.stderr

    @property
    def remote_url(self) -> str:
        return self._git("remote", "get-url", REMOTE).strip()

    @property
    def _authenticated_url(self) -> str:
        return with_token(self.remote_url, self.token)

    def _remote_head(self) -> str | None:
        """The results branch's commit on the remote (fetched), or None when it has none yet."""
        listed = self._git("ls-remote", self._authenticated_url, f"refs/heads/{self.branch}")
        if not listed.strip():
            return None
        shallow = self._git("rev-parse", "--is-shallow-repository").strip() == "true"
        tracking = f"refs/remotes/{REMOTE}/{self.branch}"
        # A shallow clone (Prefect's git_clone) needs the head, not the whole history behind it.
        depth = ["--depth", "1"] if shallow else []
        self._git("fetch", *depth, "--quiet", self._authenticated_url, f"+refs/heads/{self.branch}:{tracking}")
        return self._git("rev-parse", tracking).strip()

    def _blob(self, commit: str, path: str) -> str | None:
        found = self._git("ls-tree", commit, "--", path)
        return found.split()[2] if found.strip() else None

    def _source_of(self, commit: str) -> str | None:
        message = self._git("log", "-1", "--format=%B", commit)
        match = re.search(rf"^{SOURCE_TRAILER}: ([0-9a-f]{{40}})$", message, re.MULTILINE)
        return match.group(1) if match else None

    # -- the three steps ---------------------------------------------------------------------------------------
    def start(self, recorded_paths: Iterable[str]) -> str | None:
        """Put the last recorded run's dvc.lock and small outputs into the clone. Returns its commit, or None."""
        self.base = self._remote_head()
        if self.base is not None:
            # The .gitignore files DVC wrote too: they lie inside folders that stages hash (models/, evaluation/).
            ignores = [p for p in self._git("ls-tree", "-r", "--name-only", self.base).split() if p.endswith(".gitignore")]
            present = [p for p in ["dvc.lock", *recorded_paths] if self._blob(self.base, p)]
            self._git("checkout", self.base, "--", *present, *ignores)
        return self.base

    def commit(self, recorded_paths: Iterable[str], message: str) -> str | None:
        """A commit of the clone with the run's dvc.lock and small outputs (and the .gitignore files DVC wrote),
        or None when those equal the last recorded run's (or, before any, the source commit's)."""
        paths = ["dvc.lock", *recorded_paths, *self._changed_gitignores()]
        index = self.root / ".git" / "pokegen-results-index"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            self._git("read-tree", "HEAD", env=env)
            existing = [p for p in paths if (self.root / p).exists()]
            self._git("add", "--force", "--", *existing, env=env)
            tree = self._git("write-tree", env=env).strip()
        finally:
            index.unlink(missing_ok=True)
        before = self.base or self.source
        if all(self._blob(tree, p) == self._blob(before, p) for p in paths):
            return None
        return self._commit_tree(tree, message)

    def _changed_gitignores(self) -> list[str]:
        listed = self._git("ls-files", "--others", "--modified", "--exclude-standard", "--", "*.gitignore")
        return sorted(set(listed.split()))

    def _commit_tree(self, tree: str, message: str) -> str:
        parents = [self.base] if self.base else []
        if self.base is None or self._source_of(self.base) != self.source:
            parents.append(self.source)  # a new source commit: the run's code and params are in its history
        configured = self._git("config", "user.email", check=False).strip() != ""
        identity = {} if configured else FALLBACK_IDENTITY  # a worker with no git identity of its own
        body = f"{message}\n\n{SOURCE_TRAILER}: {self.source}\n"
        arguments = [argument for parent in parents for argument in ("-p", parent)]
        return self._git("commit-tree", tree, *arguments, "-m", body, env=identity).strip()

    def push(self, commit: str) -> str:
        """Push ``commit`` as the results branch's new head; on top of any run recorded meanwhile. Returns the
        commit pushed. Raises RecordError naming the remote when it refuses."""
        message = self._git("log", "-1", "--format=%B", commit).split(f"\n\n{SOURCE_TRAILER}:")[0]
        tree = self._git("rev-parse", f"{commit}^{{tree}}").strip()
        for attempt in range(1, PUSH_TRIES + 1):
            out = self._git("push", "--porcelain", self._authenticated_url, f"{commit}:refs/heads/{self.branch}", check=False)
            # --porcelain: one line per ref, FLAG <tab> FROM:TO <tab> SUMMARY (REASON); ! is a refusal
            rows = [row.split("\t") for row in out.splitlines() if row.count("\t") >= 2]
            row = next((r for r in rows if r[1].endswith(f":refs/heads/{self.branch}")), None)
            if row is not None and row[0] in ("*", " ", "+", "="):  # created, fast-forwarded, or already there
                return commit
            reason = row[2] if row is not None else (out.strip().splitlines() or ["no answer"])[-1]
            if ("fetch first" in reason or "non-fast-forward" in reason) and attempt < PUSH_TRIES:
                self.base = self._remote_head()  # another run recorded meanwhile: the same tree, on top of it
                commit = self._commit_tree(tree, message)
                continue
            raise RecordError(
                f"git push to {without_credentials(self.remote_url, self.token)} (branch {self.branch}) was refused: "
                f"{without_credentials(reason, self.token)}. The run's outputs are on the DVC remote; its record "
                f"(dvc.lock and metrics, commit {commit[:12]}) is not. Give the worker the right to push "
                f"{self.branch} (its git credentials, {GIT_TOKEN} or deployment.secrets), then run again."
            )
        raise AssertionError("unreachable")  # the last try raises or returns


# -- figures against the previous recorded run ---------------------------------------------------------------------
# (key in deployment.regression, key in evaluation/NAME/metrics.json, label, +1 if higher is worse): the rows of the
# one metrics table that name a limit.
FIGURES = tuple((metric.limit, metric.key, metric.label, +1 if metric.worse == "higher" else -1) for metric in METRICS if metric.limit)


@dataclass(frozen=True)
class Figure:
    model: str
    limit_key: str
    label: str
    worse_sign: int
    old: float | None
    new: float | None

    @property
    def worse_by(self) -> float | None:
        return None if self.old is None or self.new is None else (self.new - self.old) * self.worse_sign


def compare(root: Path, models: Sequence[str], against: str) -> list[Figure]:
    """Each model's figures in the clone against commit ``against``, read by `dvc metrics diff`."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        diff = repo.metrics.diff(a_rev=against, all=True).get("diff", {})
    figures = []
    for model in models:
        found = diff.get(f"evaluation/{model}/metrics.json", {})
        for limit_key, key, label, sign in FIGURES:
            values = found.get(key, {})
            figures.append(Figure(model, limit_key, label, sign, values.get("old"), values.get("new")))
    return figures


def regressions(figures: Iterable[Figure], limits: RegressionLimits) -> list[str]:
    """One line per figure that got worse than `deployment.regression` allows, naming the model and both values."""
    lines = []
    for figure in figures:
        limit = getattr(limits, figure.limit_key)
        if limit is not None and figure.worse_by is not None and figure.worse_by > limit + 1e-12:
            lines.append(
                f"{figure.model}: {figure.label} {figure.old:.3f} -> {figure.new:.3f} "
                f"({figure.new - figure.old:+.3f}; deployment.regression.{figure.limit_key} allows {limit})"
            )
    return lines


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@dataclass(frozen=True)
class RecordOutcome:
    """What `record_run` did: the record, the figures against the previous one, what got worse, a refused push."""

    recorded: Recorded
    figures: list[Figure]
    problems: list[str]
    refused: RecordError | None = None

    def raise_for_failure(self) -> None:
        if self.refused is not None:
            raise self.refused
        if self.problems:
            base, commit = self.recorded.base, self.recorded.commit
            raise RegressionError(
                f"worse than the previous recorded run ({base[:12] if base else '-'}) by more than "
                f"deployment.regression allows: {'; '.join(self.problems)}. The run is recorded on "
                f"{self.recorded.branch} ({commit[:12] if commit else 'unchanged'}) for inspection."
            )


def record_run(
    branch: ResultsBranch, root: Path, models: Sequence[str], paths: list[str], limits: RegressionLimits, run_name: str
) -> RecordOutcome:
    """Compare the run with the previous record, commit what changed and push it. A refused push is kept in the
    outcome, not raised, so that the caller can still report the figures."""
    started_from = branch.base
    figures = compare(root, models, started_from or branch.source)
    problems = regressions(figures, limits)
    headline = "; ".join(f"{f.model} {f.label} {f.new:.3f}" for f in figures if f.new is not None and f.limit_key == "judge")
    commit = branch.commit(paths, f"pokegen run {run_name}: {headline or 'results'}")
    refused = None
    if commit is None:
        log.info("Nothing changed since the last recorded run: nothing recorded.")
    else:
        try:
            commit = branch.push(commit)
            log.info("Recorded as %s on %s (%s).", commit[:12], branch.branch, without_credentials(branch.remote_url))
        except RecordError as error:
            commit, refused = None, error
    return RecordOutcome(Recorded(commit, started_from, branch.source, branch.branch), figures, problems, refused)


def summary_markdown(outcome: RecordOutcome, pictures: dict[str, Path]) -> str:
    """The run's Prefect artifact: its figures against the previous recorded run, and each model's samples."""
    recorded, figures, problems = outcome.recorded, outcome.figures, outcome.problems
    base = f"the previous recorded run ({recorded.base[:12]})" if recorded.base else f"{recorded.source[:12]} (no recorded run yet)"
    lines = [f"# pokegen: this run against {base}", ""]
    if recorded.commit:
        lines.append(f"Recorded as commit `{recorded.commit[:12]}` on `{recorded.branch}`: `git fetch origin {recorded.branch} && git checkout {recorded.branch} && dvc pull`.")
    else:
        lines.append(f"Nothing changed since {base}: nothing new recorded.")
    lines += ["", "| model | figure | previous | this run | change |", "|---|---|---|---|---|"]
    for f in figures:
        change = "—" if f.old is None or f.new is None else f"{f.new - f.old:+.3f}"
        lines.append(f"| {f.model} | {f.label} | {_cell(f.old)} | {_cell(f.new)} | {change} |")
    if problems:
        lines += ["", "**Worse than deployment.regression allows:**", "", *(f"- {p}" for p in problems)]
    lines += ["", "## Samples", ""]
    for model, picture in pictures.items():
        if picture.exists():
            lines += [f"### {model}", "", f"![{model} samples](data:image/png;base64,{_png_base64(picture)})", ""]
    return "\n".join(lines)


def _png_base64(path: Path, width: int = 320) -> str:
    """The picture at most ``width`` pixels wide (pixel art: nearest neighbour), as base64 PNG."""
    from PIL import Image

    with Image.open(path) as image:
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.NEAREST)
        return base64.b64encode(png_bytes(image)).decode()
