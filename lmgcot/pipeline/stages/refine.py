"""refine: RL on the distilled student against the reward mix; export it to refine/student."""

from __future__ import annotations

import functools
import logging
import time

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from lmgcot.artifacts import StageDir
from lmgcot.pipeline.builders import build_refiner, build_trainer, load_student, single_device
from lmgcot.pipeline.fingerprints import TEST_ONLY
from lmgcot.pipeline.scoring import reward_scorer, student_inputs
from lmgcot.pipeline.stage import Stage
from lmgcot.pipeline.stages.distill import READS as DISTILL_READS
from lmgcot.rl.selection import select_policy
from lmgcot.utils.io import append_jsonl

log = logging.getLogger("lmgcot")

SAMPLES_LOG = "rollout_samples.jsonl"  # periodic sample rationales with their rewards
JUDGE_FAILURES = "judge_failures.jsonl"  # judge replies that could not be parsed
# The reward's answers use the evaluation's answer length.
READS = (*DISTILL_READS, "rl", "reward", "evaluation.answer_max_new_tokens")


def _pools(ctx, r: DictConfig) -> dict[str, list]:
    def cap(items, limit):
        return items if limit is None else items[: int(limit)]

    return {
        "train": cap(ctx.splits.train, r.max_questions),
        "val": cap(ctx.splits.val, r.max_val_questions),
    }


# The component rl.keep_best_max_task_drop guards, and the one every val evaluation scores: the
# large LM's answers with the student's greedy rationales. The weights do not define it, so it is
# the yardstick a search over the weights is judged by (`refine.val_task`, sweeps/README.md).
GUARD = "task"


def _reward_fn(scorer, pools: dict, out: StageDir, val_also: str | None = None):
    """The refiner's reward function; on val batches it also scores `val_also` when the mix
    does not (the large LM's answers to the val questions: cached, and cheap next to training)."""

    def reward_fn(batch: dict, rationales: list[str], token_logprobs: list[list[float]]) -> dict:
        examples = [pools[batch["split"]][i] for i in batch["index"]]
        logprobs = token_logprobs if scorer.needs_token_logprobs else None
        totals, comps, failures = scorer(examples, rationales, logprobs)
        if val_also is not None and batch["split"] == "val" and val_also not in comps:
            extra, _ = scorer.components(examples, rationales, names=[val_also])
            comps = {**comps, val_also: extra[val_also]}
        if failures:
            log.warning(
                "refine: %d judge replies could not be parsed (scored 0; see %s), e.g. %s: %s",
                len(failures),
                out / JUDGE_FAILURES,
                failures[0]["id"],
                failures[0]["problem"],
            )
            append_jsonl(out / JUDGE_FAILURES, failures)
        return {**comps, "total": totals}

    return reward_fn


def _sample_logger(loggers: list, out: StageDir):
    def sample_logger(rollout: int, rows: list[dict]) -> None:
        append_jsonl(out / SAMPLES_LOG, ({"rollout": rollout, **row} for row in rows))
        for lg in loggers:
            if type(lg).__name__ == "WandbLogger":
                columns = ["rollout", *rows[0]]
                data = [[rollout, *row.values()] for row in rows]
                lg.log_table(key="rl/samples", columns=columns, data=data)

    return sample_logger


def _loaders(ctx, cfg: DictConfig, pools: dict) -> tuple[DataLoader, DataLoader]:
    r = cfg.rl

    def collate(indices: list[int], split: str) -> dict:
        # One entry per question: the refiner repeats them for the question's samples.
        examples = [pools[split][i] for i in indices]
        return {
            "split": split,
            "index": list(indices),
            "inputs": student_inputs(ctx, cfg, examples),
            "questions": [x.question for x in examples],
        }

    batch_questions = r.rollout_batch_size // r.samples_per_question
    train = DataLoader(
        list(range(len(pools["train"]))),
        batch_size=batch_questions,
        shuffle=True,
        drop_last=len(pools["train"]) >= batch_questions,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=functools.partial(collate, split="train"),
    )
    val = DataLoader(
        list(range(len(pools["val"]))),
        batch_size=r.val_batch_size,
        collate_fn=functools.partial(collate, split="val"),
    )
    return train, val


def _select(module, checkpoint, r: DictConfig, has_val: bool) -> tuple[str, dict | None]:
    """Which policy to export (rl.keep_best): the RL student's best checkpoint, or the distilled
    student when no val evaluation beat it."""
    if not (has_val and r.keep_best):
        return "rl", None
    alpha = r.get("keep_best_alpha")
    state = None
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    choice = select_policy(
        module.val_history,
        None if alpha is None else float(alpha),
        best_rollouts=None if state is None else int(state["rollouts_done"]),
    )
    if choice.selected == "rl":
        module.load_state_dict(state["state_dict"])
    else:
        log.warning(
            "refine: exporting the distilled student unchanged (rl.keep_best=true): %s",
            choice.reason,
        )
    return choice.selected, choice.summary()


def _body(ctx, cfg: DictConfig, out: StageDir) -> dict:
    r = cfg.rl
    student = load_student(cfg, ctx.run.distill)
    scorer = reward_scorer(ctx, cfg)
    log.info("refine: reward %s (%s scorer)", scorer.mix, scorer.scorer)
    pools = _pools(ctx, r)
    train_loader, val_loader = _loaders(ctx, cfg, pools)
    has_val = bool(pools["val"]) and r.val_every > 0
    max_drop = r.keep_best_max_task_drop
    guard = GUARD if has_val and r.keep_best and max_drop is not None else None
    module = build_refiner(
        r,
        student,
        _reward_fn(scorer, pools, out, GUARD if has_val else None),
        weighted_components=scorer.mix.active,
        sample_logger=_sample_logger(ctx.loggers, out),
        guard=guard,
        guard_max_drop=0.0 if max_drop is None else float(max_drop),
    )
    steps_per_rollout = module.steps_per_rollout(train_loader.batch_size)
    trainer, checkpoint = build_trainer(
        single_device(cfg.trainer),
        out,
        ctx.loggers,
        monitor="val/selection" if has_val else None,
        mode="max",
        every_n_train_steps=None if has_val else steps_per_rollout * max(1, r.val_every),
        # Under manual optimisation Lightning counts optimiser steps, several per rollout.
        max_steps=r.rollouts * steps_per_rollout,
        max_epochs=-1,
        val_check_interval=max(1, r.val_every),
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if has_val else 0,
        gradient_clip_val=None,  # the refiner clips its own gradients
        log_every_n_steps=1,
    )
    resume = out.last_checkpoint
    t0 = time.perf_counter()
    before = _reward_before(trainer, module, val_loader if has_val else None, out)
    trainer.fit(
        module,
        train_dataloaders=train_loader,
        val_dataloaders=val_loader if has_val else None,
        ckpt_path=str(resume) if resume.exists() else None,
    )
    selected, selection = _select(module, checkpoint, r, has_val)
    # The checkpoint's own score is `val/selection`, which the guard lowers: report the reward
    # (without a selection there is no guard, and the two are the same).
    best = selection["best_reward"] if selection else checkpoint.best_model_score
    best = round(float(best), 6) if has_val and best is not None else None
    model = module.ref_model if selected == "distilled" else module.model
    out.export_student(model, student.tokenizer)
    log.info("refine: val reward %s -> best %s (%s exported)", _fmt(before), _fmt(best), selected)
    if has_val and selected == "rl" and selection is None and not _evaluated(module):
        # Without keep_best the last weights are exported, which the last evaluation may predate.
        trainer.validate(module, dataloaders=val_loader, verbose=False)
    task_before, task = _val_task(module.val_history, selected, selection, module.rollouts_done)
    log.info("refine: val task %s -> %s (the exported student's)", _fmt(task_before), _fmt(task))
    return {
        "rollouts": int(module.rollouts_done),
        "optimizer_steps": int(trainer.global_step),
        "questions": len(pools["train"]),
        "val_questions": len(pools["val"]) if has_val else 0,
        "val_reward_before": before,
        "val_reward_best": best,
        # The exported student's val task score (GUARD under reward.task_metric): what the
        # sweeps optimise, since the weights do not define it.
        "val_task_before": task_before,
        "val_task": task,
        "selected": selected,
        "selection": selection,
        "reward": dict(scorer.mix.normalized),
        "scorer": scorer.scorer,
        "kl_coef": round(float(module.kl_controller.value), 6),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _reward_before(trainer, module, val_loader, out: StageDir) -> float | None:
    """The distilled student's val reward, measured once and kept in meta.json across resumes."""
    meta = out.meta()
    if out.last_checkpoint.exists():
        log.info("refine: resumed from %s", out.last_checkpoint)
    elif val_loader is not None:
        scores = trainer.validate(module, dataloaders=val_loader, verbose=False)[0]
        meta = {**meta, "val_reward_before": round(float(scores["val/reward"]), 6)}
        out.write_meta(meta)
    return meta.get("val_reward_before")


def _evaluated(module) -> bool:
    """Whether the val history holds an evaluation of the module's current (final) weights."""
    return any(h["rollouts"] == module.rollouts_done for h in module.val_history)


def _val_task(
    history: list[dict], selected: str, selection: dict | None, rollouts_done: int
) -> tuple[float | None, float | None]:
    """(the distilled student's, the exported student's) val task score from the val history:
    the exported one is the distilled student, the evaluation keep_best chose, or the final
    weights. None where no evaluation scored it (no val split, or a checkpoint from before val
    evaluations recorded their components)."""

    def task_at(rollouts: int) -> float | None:
        entries = [h for h in history if h["rollouts"] == rollouts]
        value = entries[-1].get("components", {}).get(GUARD) if entries else None
        return None if value is None else round(float(value), 6)

    if selected == "distilled":
        exported = 0
    elif selection is not None:
        exported = selection["rollouts"]
    else:
        exported = rollouts_done
    return task_at(0), task_at(exported)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


REFINE = Stage(
    "refine",
    reads=READS,
    body=_body,
    needs=lambda cfg: ("distill",),
    artifacts=("student",),
    stale=(SAMPLES_LOG, JUDGE_FAILURES),
    ignores=TEST_ONLY,
)
