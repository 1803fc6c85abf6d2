"""distill: fine-tune the student on the kept teacher rationales; export it to distill/student."""

from __future__ import annotations

import logging
import time

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lmgcot.artifacts import StageDir
from lmgcot.distill.datamodule import NO_PAIRS, NO_VAL_PAIRS, RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.errors import LmgcotError
from lmgcot.pipeline.builders import build_student, build_trainer
from lmgcot.pipeline.fingerprints import TEST_ONLY
from lmgcot.pipeline.stage import Stage
from lmgcot.pipeline.stages.teacher import read_rationales
from lmgcot.student.objectives import OBJECTIVES, TrainingPairs
from lmgcot.teacher import kept_rationales

log = logging.getLogger("lmgcot")

READS = ("dataset", "large_lm", "prompt", "teacher", "student", "distill", "trainer", "seed")


def training_pairs(ctx, cfg: DictConfig, split: str) -> TrainingPairs:
    """The `split`'s training pairs under distill.objective, from the kept teacher rationales."""
    objective = OBJECTIVES[cfg.distill.objective]
    examples = getattr(ctx.splits, split)
    kept = []
    if objective.needs_teacher:
        kept = kept_rationales(read_rationales(ctx.run.teacher, split), cfg.teacher.filter_correct)
    return objective.pairs(examples, kept, ctx.prompts)


def _body(ctx, cfg: DictConfig, out: StageDir) -> dict:
    d = cfg.distill
    objective = OBJECTIVES[d.objective]
    pairs = {split: training_pairs(ctx, cfg, split) for split in ("train", "val")}
    if not pairs["train"].count:
        # Before a from-scratch tokenizer is trained on an empty corpus.
        raise LmgcotError(NO_PAIRS)
    if not pairs["val"].count:
        raise LmgcotError(NO_VAL_PAIRS.format(questions=f"the {len(ctx.splits.val)} val questions"))
    # A from-scratch tokenizer (student.tokenizer=bpe) learns its vocabulary from the training pairs.
    student = build_student(cfg.student, cfg.seed, corpus=pairs["train"].texts())
    datamodule = RationaleDataModule(
        student.tokenizer,
        pairs["train"],
        pairs["val"],
        student.max_source_length,
        student.max_target_length,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        group_by_length=d.group_by_length,
        max_tokens=d.max_tokens,
        num_workers=d.num_workers,
        seed=cfg.seed,
    )
    module = RationaleDistiller(
        student.model,
        optimizer=instantiate(d.optimizer),
        scheduler=instantiate(d.scheduler) if d.get("scheduler") else None,
        task_weights=objective.task_weights(float(d.alpha)),
        fast_forward=d.fast_forward,
    )
    trainer, checkpoint = build_trainer(
        cfg.trainer,
        out,
        ctx.loggers,
        monitor="val/loss",
        mode="min",
        limit_val_batches=1.0,
        # The datamodule shards its own length-grouped batches across processes.
        use_distributed_sampler=False,
    )
    resume = out.last_checkpoint
    t0 = time.perf_counter()
    if resume.exists():
        log.info("distill: resumed from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume.exists() else None)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    out.export_student(student.model, student.tokenizer)
    steps, epochs, best_loss = _progress(trainer, checkpoint, resume)
    return {
        "objective": objective.name,
        "train_pairs": pairs["train"].count,
        "val_pairs": pairs["val"].count,
        "steps": int(steps),
        "epochs": int(epochs),
        "best_val_loss": None if best_loss is None else round(float(best_loss), 6),
        "seconds": round(time.perf_counter() - t0, 2),
        "parameters": sum(p.numel() for p in student.model.parameters()),
    }


def _progress(trainer, checkpoint, resume) -> tuple[int, int, float | None]:
    """(steps, epochs, best val loss) of the fit."""
    steps, epochs = trainer.global_step, trainer.current_epoch
    best_loss = checkpoint.best_model_score
    if not steps and resume.exists():
        # A spawning strategy trained in worker processes: their progress is in the checkpoint.
        saved = torch.load(resume, map_location="cpu", weights_only=False)
        steps, epochs = saved.get("global_step", 0), saved.get("epoch", 0)
        best_loss = next(
            (c.get("best_model_score") for c in saved.get("callbacks", {}).values()), None
        )
    return steps, epochs, best_loss


def _needs(cfg: DictConfig) -> tuple[str, ...]:
    # Vanilla fine-tuning (objective=answer) learns gold answers: it needs no teacher.
    return ("teacher",) if OBJECTIVES[cfg.distill.objective].needs_teacher else ()


DISTILL = Stage(
    "distill",
    reads=READS,
    body=_body,
    needs=_needs,
    artifacts=("student",),
    ignores=TEST_ONLY,
)
