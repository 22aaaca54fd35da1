"""Run a dvc.yaml stage's body in this process and record it exactly as `dvc repro` would.

`dvc repro` does, per stage: skip if unchanged; remove non-persistent outputs; restore them
from the run cache when a run with the same inputs was saved there, else run the command; save
deps and outs (hashes, run cache); commit outs to the cache; write dvc.lock.
Here the command is a Prefect task instead of a subprocess; the other steps are DVC's own
calls, so both doors leave the same dvc.lock and cache, and `dvc status` is clean after either.

Like `dvc repro`, a pipeline run holds DVC's repository lock from its first look at a stage to
its last write: a second run (the flow again, `dvc repro`, `dvc push`) cannot interleave with it
and fails with PipelineLockedError instead, before it changes anything.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from dvc.exceptions import DownloadError, DvcException, NotDvcRepoError
from dvc.lock import LockError
from dvc.repo import Repo, lock_repo
from dvc.repo.reproduce import plan_repro
from dvc.stage import Stage
from dvc.stage.cache import RunCacheNotFoundError

from pokegen.errors import PokegenError
from pokegen.stages import StageKind, parse_command


class PipelineLockedError(PokegenError):
    """Another DVC process (a pipeline run, `dvc repro`, `dvc push`...) holds the repository."""


class PushError(PokegenError):
    """`dvc push` after a run (or `dvc pull` before one) could not reach the DVC remote."""




@dataclass(frozen=True)
class PlannedStage:
    """One stage of dvc.yaml's graph: its name, command and the stages whose outputs it reads."""

    name: str
    cmd: str
    upstream: tuple[str, ...]
    always_changed: bool = False

    @property
    def kind(self) -> tuple[StageKind, str | None] | None:
        """The pokegen stage (pokegen.stages.STAGES) and model its command runs, or None for any other command."""
        words = tuple(shlex.split(self.cmd))
        return parse_command(words[1:]) if words[:1] == ("pokegen",) else None

    @property
    def model(self) -> str | None:
        """The model a per-model stage (`pokegen train NAME`, `pokegen evaluate NAME`) runs."""
        return self.kind[1] if self.kind else None


def _plan(repo: Repo) -> list[PlannedStage]:
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    return [
        PlannedStage(stage.addressing, stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd),
                     tuple(sorted(upstream.addressing for upstream in graph.successors(stage))), stage.always_changed)
        for stage in plan_repro(graph)  # the order `dvc repro` runs them in
        if stage.cmd  # a .dvc file (data added with `dvc add`) has no command to run
    ]  # fmt: skip


class PipelineDefinitionError(PokegenError):
    """dvc.yaml cannot be read as a stage graph (or there is no DVC repository)."""


def read_plan(root: Path) -> list[PlannedStage]:
    """dvc.yaml's stages in the order `dvc repro` runs them, each with its upstream stages (no lock taken).

    Raises PipelineDefinitionError naming the folder or dvc.yaml and DVC's own complaint."""
    try:
        with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC resolves some paths against the working directory
            return _plan(repo)
    except NotDvcRepoError:
        raise PipelineDefinitionError(f"{root}: not a DVC repository (no .dvc folder); run this in a clone of the project") from None
    except DvcException as error:
        raise PipelineDefinitionError(f"{root / 'dvc.yaml'}: DVC cannot read the pipeline: {error}") from None


class PipelineRepo:
    """The DVC repository of one pipeline run, locked from `with` to its end.

    Every call goes through one Repo instance, so DVC's lock is taken once (it is not re-entrant
    across instances) and its caches are reset before each look, since stages run in between.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> Self:
        with contextlib.ExitStack() as stack:  # undoes what it entered if taking the lock fails
            # DVC resolves some output paths against the working directory, as its CLI always runs in the repo.
            stack.enter_context(contextlib.chdir(self.root))
            self.repo = stack.enter_context(Repo(str(self.root)))
            try:
                stack.enter_context(lock_repo(self.repo))
            except LockError:
                raise PipelineLockedError(
                    f"{self.root}: another DVC process (a pipeline run, `dvc repro`, `dvc push`...) holds its lock "
                    f"({self.root / '.dvc' / 'tmp' / 'lock'}); this run changed nothing. Run again when it has finished."
                ) from None
            self._exit = stack.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self._exit.close()

    def plan(self) -> list[PlannedStage]:
        """The stage graph as DVC reads it now (see read_plan). Raises PipelineDefinitionError."""
        self.repo._reset()
        try:
            return _plan(self.repo)
        except DvcException as error:
            raise PipelineDefinitionError(f"{self.root / 'dvc.yaml'}: DVC cannot read the pipeline: {error}") from None

    def _stage(self, name: str) -> Stage:
        self.repo._reset()  # dvc.lock and the outputs changed since the last look
        (stage,) = self.repo.stage.collect(name)
        return stage

    def is_up_to_date(self, name: str) -> bool:
        return not self._stage(name).changed()

    def prepare(self, name: str) -> None:
        """Remove the stage's non-persistent outputs, as `dvc repro` does before running a command."""
        self._stage(name).remove_outs(ignore_remove=False, force=False)

    def restore_from_run_cache(self, name: str, pull: bool = False) -> bool:
        """What `dvc repro` does before running a changed stage: when DVC's run cache holds a run of it with the
        same command, dependencies and params, check that run's outputs out instead (``pull``: fetching them from
        the DVC remote). True when it did; then `record` it."""
        stage = self._stage(name)
        try:
            self.repo.stage_cache.restore(stage, pull=pull)
        except RunCacheNotFoundError:
            return False
        return True

    def record(self, name: str) -> None:
        """Hash deps and outs, fill the cache and run cache, write dvc.lock and the outputs' .gitignore."""
        stage = self._stage(name)
        with self.repo.scm_context(quiet=True):  # the flow says once, at its end, what to git add
            # DVC's own rule (Stage.run): no run-cache entry for a stage with an uncached plain output.
            uncached = any(not out.use_cache for out in stage.outs if not (out.is_metric or out.is_plot))
            stage.save(run_cache=not uncached)
            stage.commit()
            stage.dump(update_pipeline=False)

    def uncached_outputs(self) -> list[str]:
        """The outputs git keeps, not DVC's cache (`cache: false`: metrics, curves, the data card), as paths."""
        self.repo._reset()
        return sorted({str(out.def_path) for stage in self.repo.index.stages for out in stage.outs if not out.use_cache})

    def pull(self) -> tuple[int, int]:
        """`dvc pull` of what dvc.lock lists: (files fetched, outputs missing from the remote). A missing output is
        no error: its stage runs, as after a fresh clone."""
        self.repo._reset()
        fetched, missing = 0, 0
        try:
            self.repo.stage_cache.pull(None)  # the run cache: what any pushed run made, for restore_from_run_cache
            fetched = self.repo.fetch()
        except DownloadError as error:  # some outputs are not on the remote: the others came
            missing = error.amount
        except DvcException as error:
            raise PushError(f"dvc pull into {self.root} failed: {error}. Is the DVC remote reachable from this worker?") from None
        self.repo.checkout(allow_missing=True)
        return fetched, missing

    def push(self, run_cache: bool = False) -> int:
        """`dvc push` to the default remote (``run_cache``: `--run-cache` too): the number of files sent (0 when
        it already had everything)."""
        self.repo._reset()
        if not self.repo.config["core"].get("remote"):
            raise PushError(
                f"{self.root / '.dvc' / 'config'}: no default DVC remote to push to; add one (dvc remote add -d NAME URL) or turn push off"
            )
        try:
            sent = self.repo.push()
            if run_cache:
                entries = self.repo.stage_cache.push(None)
                # DVC 3 pushes the run-cache entries but not what their uncached outputs (metrics, plots) hold,
                # without which another machine cannot restore such a stage from the run cache: send those too.
                for objects in self.repo.stage_cache.get_used_objs(entries).values():
                    sent += len(self.repo.cloud.push(objects).transferred)
                sent += len(entries)
            return sent
        except DvcException as error:
            raise PushError(
                f"dvc push from {self.root} failed: {error}. The outputs are recorded here; run `dvc push` once the remote is reachable."
            ) from None
