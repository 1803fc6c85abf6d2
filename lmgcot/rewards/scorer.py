"""`RewardScorer`: every reward component for a batch of rationales, and their configured mix.

One object serves the RL stage (only the mix's active components, per rollout) and the evaluation's
`rationale_quality` (all eight aspects, per rationale source). Aspects come from one of two
interchangeable scorers: `auto` (offline measures in `lmgcot.rewards.aspects`) or `judge` (the large
LM rates all eight in one call, `lmgcot.rewards.judge`). Large-LM calls go through its persistent
cache, so evaluation re-uses what RL already asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmgcot.data.example import Example
from lmgcot.errors import ConfigError
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.aspects import ASPECTS
from lmgcot.rewards.judge import judge_components, judge_scores
from lmgcot.rewards.mix import RewardMix
from lmgcot.rewards.task import TASK_METRICS, task_reward

SCORERS = ("auto", "judge")


class RewardScorer:
    def __init__(
        self,
        mix: RewardMix,
        large_lm: LargeLM,
        prompts: PromptTemplates,
        scorer: str = "auto",
        task_metric: str = "em",
        answer_max_new_tokens: int = 32,
        judge_max_new_tokens: int = 64,
        judge_max_context_chars: int | None = None,
    ):
        if scorer not in SCORERS:
            raise ConfigError(f"reward.scorer={scorer!r}: allowed values are {list(SCORERS)}")
        if task_metric not in TASK_METRICS:
            raise ConfigError(
                f"reward.task_metric={task_metric!r}: allowed values are {list(TASK_METRICS)}"
            )
        self.mix = mix
        self.large_lm = large_lm
        self.prompts = prompts
        self.scorer = scorer
        self.task_metric = task_metric
        self.answer_max_new_tokens = int(answer_max_new_tokens)
        self.judge_params = GenerationParams(max_new_tokens=int(judge_max_new_tokens))
        self.judge_max_context_chars = judge_max_context_chars

    @classmethod
    def from_config(
        cls, reward_cfg: Mapping, large_lm: LargeLM, prompts: PromptTemplates, **kwargs
    ) -> RewardScorer:
        return cls(
            RewardMix.from_config(reward_cfg),
            large_lm,
            prompts,
            scorer=reward_cfg.get("scorer", "auto"),
            task_metric=reward_cfg.get("task_metric", "em"),
            judge_max_new_tokens=int(reward_cfg.get("judge_max_new_tokens", 64)),
            judge_max_context_chars=reward_cfg.get("judge_max_context_chars"),
            **kwargs,
        )

    @property
    def needs_token_logprobs(self) -> bool:
        """Whether `components` of the active mix needs the reference model's log-probs."""
        return self.scorer == "auto" and "fluency" in self.mix.active

    def components(
        self,
        examples: Sequence[Example],
        rationales: Sequence[str],
        names: Sequence[str] | None = None,
        token_logprobs: Sequence[Sequence[float]] | None = None,
    ) -> tuple[dict[str, list[float | None]], list[dict]]:
        """({component: one score per rationale, None where a judge reply was unusable}, failures).

        `names` defaults to the mix's active components. `token_logprobs` (the reference model's
        per-token log-probabilities of each rationale) is needed for `auto` fluency; without them
        fluency is left out. `failures` lists the judge replies that could not be parsed.
        """
        names = list(self.mix.active if names is None else names)
        unknown = [n for n in names if n != "task" and n not in ASPECTS]
        if unknown:
            raise ValueError(f"unknown reward components {unknown}")
        out: dict[str, list[float | None]] = {}
        failures: list[dict] = []
        answers: list[str] | None = None
        # Consistency compares the rationale's conclusion with the large LM's guided answer: the
        # same (cached) call as the task reward.
        if "task" in names or ("consistency" in names and self.scorer == "auto"):
            rewards, answers = task_reward(
                examples,
                rationales,
                self.large_lm,
                self.prompts,
                metric=self.task_metric,
                max_new_tokens=self.answer_max_new_tokens,
            )
            if "task" in names:
                out["task"] = list(rewards)
        aspects = [n for n in names if n in ASPECTS]
        if not aspects:
            return out, failures
        if self.scorer == "judge":
            scores, failures = judge_scores(
                examples,
                rationales,
                self.large_lm,
                self.judge_params,
                self.judge_max_context_chars,
            )
            columns = judge_components(scores)
            out.update({name: columns[name] for name in aspects})
            return out, failures
        for name in aspects:
            if name == "fluency" and token_logprobs is None:
                continue
            out[name] = list(
                ASPECTS[name](examples, rationales, answers=answers, token_logprobs=token_logprobs)
            )
        return out, failures

    def __call__(
        self,
        examples: Sequence[Example],
        rationales: Sequence[str],
        token_logprobs: Sequence[Sequence[float]] | None = None,
    ) -> tuple[list[float], dict[str, list[float | None]], list[dict]]:
        """(total reward per rationale, the active components, judge failures)."""
        if self.needs_token_logprobs and token_logprobs is None:
            raise ValueError("the fluency reward needs the reference model's token log-probs")
        comps, failures = self.components(examples, rationales, token_logprobs=token_logprobs)
        totals, _ = self.mix.combine(comps)
        return totals, comps, failures


def mean_scores(components: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """Mean of each component over the rationales it scored (None left out, all-None left out)."""
    out = {}
    for name, values in components.items():
        present = [float(v) for v in values if v is not None]
        if present:
            out[name] = sum(present) / len(present)
    return out
