"""The reward scorer the refine stage optimises and the evaluate stage reports with."""

from __future__ import annotations

from omegaconf import DictConfig

from lmgcot.pipeline.stages.teacher import read_rationales
from lmgcot.rewards.scorer import RewardScorer
from lmgcot.rewards.wellformed import vocabulary_of
from lmgcot.student.objectives import OBJECTIVES


def reward_scorer(ctx, cfg: DictConfig) -> RewardScorer:
    """The `reward` config's scorer. Its well-formedness gate knows the words of the teacher's
    train rationales (when the run has them), so the connectives of real rationales count as
    words even where a question's context lacks them."""
    teacher = ctx.run.teacher
    vocabulary = (
        vocabulary_of(r.rationale for r in read_rationales(teacher, "train"))
        if (teacher / "train.jsonl").exists()
        else None
    )
    return RewardScorer.from_config(
        cfg.reward,
        ctx.large_lm,
        ctx.prompts,
        answer_max_new_tokens=cfg.evaluation.answer_max_new_tokens,
        vocabulary=vocabulary,
    )


def student_inputs(ctx, cfg: DictConfig, examples: list) -> list[str]:
    """The student's inputs when it writes rationales (a multitask student: "explain:")."""
    task = OBJECTIVES[cfg.distill.objective].explain_task
    return [ctx.prompts.student_input(x, task) for x in examples]
