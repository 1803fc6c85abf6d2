"""The reward scorer the refine stage optimises and the evaluate stage reports with."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from lmgcot.data.example import Example
from lmgcot.errors import ConfigError
from lmgcot.eval.selection import Quality, selection_rewards
from lmgcot.pipeline.builders import load_student
from lmgcot.pipeline.stages.teacher import read_rationales
from lmgcot.rewards.scorer import RewardScorer
from lmgcot.rewards.wellformed import vocabulary_of
from lmgcot.student.generate import score_rationales
from lmgcot.student.objectives import OBJECTIVES


def reward_scorer(ctx, cfg: DictConfig, reward: Mapping | None = None) -> RewardScorer:
    """The `reward` config's scorer (or `reward`'s, a node of the same shape). Its
    well-formedness gate knows the words of the teacher's train rationales (when the run has
    them), so the connectives of real rationales count as words even where a question's context
    lacks them."""
    teacher = ctx.run.teacher
    vocabulary = (
        vocabulary_of(r.rationale for r in read_rationales(teacher, "train"))
        if (teacher / "train.jsonl").exists()
        else None
    )
    return RewardScorer.from_config(
        cfg.reward if reward is None else reward,
        ctx.large_lm,
        ctx.prompts,
        answer_max_new_tokens=cfg.evaluation.answer_max_new_tokens,
        vocabulary=vocabulary,
    )


def student_inputs(ctx, cfg: DictConfig, examples: list) -> list[str]:
    """The student's inputs when it writes rationales (a multitask student: "explain:")."""
    task = OBJECTIVES[cfg.distill.objective].explain_task
    return [ctx.prompts.student_input(x, task) for x in examples]


class SelectionRater:
    """The selection reward (`evaluation.select_reward`, a reward option's weights) of sampled
    rationales, scored as the run scores rewards (`reward.scorer`, `reward.gate`). Memoised:
    best-of-k and weighted self-consistency of one student score its samples once. Fluency under
    the `auto` scorer is the likelihood under the distilled student, as in RL and in
    `rationale_quality`."""

    def __init__(self, ctx, cfg: DictConfig, students: dict):
        self.ctx, self.cfg, self.students = ctx, cfg, students
        reward = OmegaConf.to_container(cfg.reward, resolve=True)
        reward["weights"] = selection_rewards()[cfg.evaluation.select_reward]
        self.scorer = reward_scorer(ctx, cfg, reward)
        self._memo: dict[tuple, Quality] = {}

    def __call__(self, examples: list[Example], rationales: list[list[str]]) -> Quality:
        key = tuple((x.id, tuple(rs)) for x, rs in zip(examples, rationales))
        if key not in self._memo:
            self._memo[key] = self._score(examples, rationales)
        return self._memo[key]

    def _score(self, examples: list[Example], rationales: list[list[str]]) -> Quality:
        flat_x = [x for x, rs in zip(examples, rationales) for _ in rs]
        flat_r = [r for rs in rationales for r in rs]
        logprobs = None
        if self.scorer.needs_token_logprobs:
            logprobs = score_rationales(
                self._reference(), student_inputs(self.ctx, self.cfg, flat_x), flat_r
            )
        totals, comps, _ = self.scorer(flat_x, flat_r, token_logprobs=logprobs)
        scores, components, start = [], [], 0
        for rs in rationales:
            end = start + len(rs)
            scores.append(totals[start:end])
            components.append({name: values[start:end] for name, values in comps.items()})
            start = end
        return Quality(scores, components)

    def _reference(self):
        if "distill" not in self.students:
            if not self.ctx.run.distill.done:
                raise ConfigError(
                    f"evaluation.select_reward={self.cfg.evaluation.select_reward}: fluency is "
                    "scored under the distilled student, and this run has none"
                )
            self.students["distill"] = load_student(self.ctx.cfg, self.ctx.run.distill)
        return self.students["distill"]
