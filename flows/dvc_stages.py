"""Run a dvc.yaml stage's body in this process and record it exactly as `dvc repro` would.

`dvc repro` does, per stage: skip if unchanged; remove non-persistent outputs; run the
command; save deps and outs (hashes, run cache); commit outs to the cache; write dvc.lock.
Here the command is a Prefect task instead of a subprocess; the other steps are DVC's own
calls, so both doors leave the same dvc.lock and cache, and `dvc status` is clean after either.
"""

from __future__ import annotations

from pathlib import Path

from dvc.repo import Repo


def _stage(repo: Repo, name: str):
    (stage,) = repo.stage.collect(name)
    return stage


def is_up_to_date(root: Path, name: str) -> bool:
    with Repo(str(root)) as repo, repo.lock:
        return not _stage(repo, name).changed()


def prepare(root: Path, name: str) -> None:
    """Remove the stage's non-persistent outputs, as `dvc repro` does before running a command."""
    with Repo(str(root)) as repo, repo.lock:
        _stage(repo, name).remove_outs(ignore_remove=False, force=False)


def record(root: Path, name: str) -> None:
    """Hash deps and outs, fill the cache and run cache, write dvc.lock."""
    with Repo(str(root)) as repo, repo.lock:
        stage = _stage(repo, name)
        stage.save()
        stage.commit()
        stage.dump(update_pipeline=False)
