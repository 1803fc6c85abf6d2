"""The artifact protocol every cached stage follows, written once.

fingerprint -> take it from the shared store if another run made it -> reuse it if finished under
the same fingerprint -> otherwise drop the resumable state of another config -> work (resuming
from this config's checkpoints) -> write the summary -> mark done -> publish to the shared store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from lmgcot.artifacts import StageDir
from lmgcot.errors import ConfigError
from lmgcot.pipeline.fingerprints import fingerprint, view
from lmgcot.utils.store import shared_stage

log = logging.getLogger("lmgcot")


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its name, the config it reads (sections or `section.key` leaves: its
    fingerprint), the stages whose artifacts it needs, and its body.

    `body(ctx, cfg, out)` gets the run context, the config view holding only `reads`, and the
    stage directory; it writes its `artifacts` there (paths in the stage directory, checked before
    the stage is marked done) and returns the summary. `ignores` are `section.key` leaves of
    `reads` its work does not depend on, null in its fingerprint and view (the test split's cap,
    for the stages that never see the test split). `stale` names files
    in the directory that belong to one configuration and go when the fingerprint changes (the
    checkpoints always do). `cached=False` stages (evaluate) cache per item themselves.
    """

    name: str
    reads: tuple[str, ...]
    body: Callable
    needs: Callable[[DictConfig], tuple[str, ...]] = lambda cfg: ()
    artifacts: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    cached: bool = True
    shared: bool = True
    ignores: tuple[str, ...] = ()

    def fingerprint(self, cfg: DictConfig) -> str:
        return fingerprint(cfg, self.reads, self.ignores)

    def view(self, cfg: DictConfig) -> DictConfig:
        return view(cfg, self.reads, self.ignores)


# What a stage leaves for the others, in errors.
PRODUCT = {"teacher": "teacher rationales", "distill": "a distilled student"}
# A run's own resumable state, never part of a shared artifact.
NOT_SHARED = ("checkpoints",)


def run_stage(stage: Stage, ctx, out: StageDir) -> dict:
    """Run `stage` under the artifact protocol; returns its summary."""
    cfg = ctx.cfg
    if not stage.cached:
        return stage.body(ctx, stage.view(cfg), out)
    fp = stage.fingerprint(cfg)
    store = cfg.paths.get("artifact_dir")
    if not stage.shared or not store or cfg.force or not cfg.get("share_artifacts", True):
        return _make(stage, ctx, out, fp)
    if reusable(out, fp, False):
        return _make(stage, ctx, out, fp)
    # Jobs wanting the same artifact wait for the one making it (a lease, no lock: see store.py).
    got = shared_stage(
        Path(store) / stage.name / fp,
        out.path,
        finished=lambda path: reusable(StageDir(path), fp, False),
        make=lambda: _make(stage, ctx, out, fp),
        skip=NOT_SHARED,
    )
    if got.how == "fetched":
        log.info("%s: reusing the shared artifact %s", stage.name, Path(store) / stage.name / fp)
    elif got.how == "discarded":
        log.warning(
            "%s: another job published this stage first (its lease had expired); this job's copy "
            "is discarded",
            stage.name,
        )
    return got.summary


def _make(stage: Stage, ctx, out: StageDir, fp: str) -> dict:
    if reusable(out, fp, ctx.cfg.force):
        log.info("%s: reusing %s", out.name, out.path)
        return out.summary()
    for need in stage.needs(ctx.cfg):
        needed = ctx.run.stage(need)
        if not needed.done:
            raise ConfigError(
                f"{stage.name} needs {PRODUCT.get(need, need)} in {needed.path}: add the {need} "
                "stage or point hydra.run.dir at a run that has them"
            )
    if out.fingerprint != fp or ctx.cfg.force and out.done:
        # Resumable state and logs of another configuration cannot be resumed, nor those of a
        # finished run that force=true redoes (its last checkpoint is the end: nothing would be
        # redone). A forced run that was interrupted is resumed: it is not done.
        stale = [*out.checkpoints.glob("*.ckpt"), *(out / name for name in stage.stale)]
        for path in stale:
            path.unlink(missing_ok=True)
        out.write_meta({"fingerprint": fp, "done": False})
    summary = stage.body(ctx, stage.view(ctx.cfg), out)
    missing = [name for name in stage.artifacts if not (out / name).exists()]
    if missing:
        # A stage that forgot an artifact must not pass for finished: later stages read them.
        raise RuntimeError(f"{stage.name}: finished without its artifacts {missing} in {out.path}")
    out.write_summary(summary)
    out.mark_done(fp)
    return summary


def reusable(out: StageDir, fp: str, force: bool) -> bool:
    """Whether a finished artifact can be used as it is."""
    meta = out.meta()
    if force or not meta.get("done"):
        return False
    if meta.get("fingerprint") != fp:
        log.warning("%s: config changed since it was made; redoing it", out.path)
        return False
    return True
