"""Run a dvc.yaml stage's body in this process and record it exactly as `dvc repro` would.

`dvc repro` does, per stage: skip if unchanged; remove non-persistent outputs; run the
command; save deps and outs (hashes, run cache); commit outs to the cache; write dvc.lock.
Here the command is a Prefect task instead of a subprocess; the other steps are DVC's own
calls, so both doors leave the same dvc.lock and cache, and `dvc status` is clean after either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dvc.repo import Repo
from dvc.stage import Stage


@contextlib.contextmanager
def _locked_stage(root: Path, name: str) -> Iterator[tuple[Repo, Stage]]:
    # DVC resolves some output paths against the working directory, as its CLI always runs in the repo.
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        (stage,) = repo.stage.collect(name)
        yield repo, stage


def is_up_to_date(root: Path, name: str) -> bool:
    with _locked_stage(root, name) as (_, stage):
        return not stage.changed()


def prepare(root: Path, name: str) -> None:
    """Remove the stage's non-persistent outputs, as `dvc repro` does before running a command."""
    with _locked_stage(root, name) as (_, stage):
        stage.remove_outs(ignore_remove=False, force=False)


def record(root: Path, name: str) -> None:
    """Hash deps and outs, fill the cache and run cache, write dvc.lock and the outputs' .gitignore."""
    with _locked_stage(root, name) as (repo, stage), repo.scm_context():
        # DVC's own rule (Stage.run): no run-cache entry for a stage with an uncached plain output.
        uncached = any(not out.use_cache for out in stage.outs if not (out.is_metric or out.is_plot))
        stage.save(run_cache=not uncached)
        stage.commit()
        stage.dump(update_pipeline=False)
