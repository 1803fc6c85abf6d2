"""`RewardScorer`: every reward component for a batch of rationales, and their configured mix.

One object serves the RL stage (only the mix's active components, per rollout) and the evaluation's
`rationale_quality` (all eight aspects, per rationale source). Aspects come from one of two
interchangeable scorers: `auto` (offline measures in `lmgcot.rewards.aspects`) or `judge` (the large
LM rates all eight in one call, `lmgcot.rewards.judge`). Large-LM calls go through its persistent
cache, so evaluation re-uses what RL already asked.

With `gate=True` (`reward.gate`, the default) every aspect score, from either scorer, is multiplied
by the rationale's `wellformedness` (`lmgcot.rewards.wellformed`), so degenerate text cannot earn
aspect reward; the gate itself is reported as the logged-only component `wellformed`. The task
reward is never gated: the large LM's answer already judges what the rationale is worth to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmgcot.data.example import Example
from lmgcot.errors import ConfigError
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.aspects import ASPECTS
from lmgcot.rewards.judge import judge_components, judge_scores
from lmgcot.rewards.mix import COMPONENTS, RewardMix
from lmgcot.rewards.task import TASK_METRICS, task_reward
from lmgcot.rewards.wellformed import WELLFORMED, wellformedness

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
        gate: bool = True,
        vocabulary: set[str] | frozenset[str] | None = None,
    ):
        """`gate`: multiply every aspect by `wellformedness`. `vocabulary`: lower-cased words the
        gate counts as known besides each example's context and question (the pipeline passes
        the words of the teacher's train rationales; see `wellformed.vocabulary_of`)."""
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
        self.gate = gate
        self.vocabulary = frozenset(vocabulary or ())

    @classmethod
    def from_config(
        cls, reward_cfg: Mapping, large_lm: LargeLM, prompts: PromptTemplates, **kwargs
    ) -> RewardScorer:
        """From a `reward` config node; `kwargs` (e.g. `vocabulary=`) go to the constructor."""
        gate = reward_cfg.get("gate", True)
        if not isinstance(gate, bool):
            raise ConfigError(f"reward.gate={gate!r}: must be true or false")
        return cls(
            RewardMix.from_config(reward_cfg),
            large_lm,
            prompts,
            scorer=reward_cfg.get("scorer", "auto"),
            task_metric=reward_cfg.get("task_metric", "em"),
            judge_max_new_tokens=int(reward_cfg.get("judge_max_new_tokens", 64)),
            judge_max_context_chars=reward_cfg.get("judge_max_context_chars"),
            gate=gate,
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

        `names` defaults to the mix's active components; besides `COMPONENTS` it may name
        `wellformed`, which is also added whenever the gate is on and any aspect is asked for.
        Aspects come back multiplied by it when the gate is on; task never is. `token_logprobs`
        (the reference model's per-token log-probabilities of each rationale) is needed for
        `auto` fluency; without them fluency is left out. `failures` lists the judge replies that
        could not be parsed.
        """
        names = list(self.mix.active if names is None else names)
        unknown = [n for n in names if n not in COMPONENTS and n != WELLFORMED]
        if unknown:
            raise ValueError(f"unknown reward components {unknown}")
        aspects = [n for n in names if n in ASPECTS]
        wellformed = None
        if WELLFORMED in names or (self.gate and aspects):
            wellformed = wellformedness(examples, rationales, self.vocabulary)
        gate = wellformed if self.gate else None
        out: dict[str, list[float | None]] = {}
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
        columns, failures = self._aspect_columns(
            examples, rationales, aspects, answers, token_logprobs
        )
        for name in aspects:
            if name in columns:
                out[name] = _gated(columns[name], gate)
        if wellformed is not None:
            out[WELLFORMED] = list(wellformed)
        return out, failures

    def _aspect_columns(
        self,
        examples: Sequence[Example],
        rationales: Sequence[str],
        aspects: list[str],
        answers: list[str] | None,
        token_logprobs: Sequence[Sequence[float]] | None,
    ) -> tuple[dict[str, list[float | None]], list[dict]]:
        """The ungated aspect scores, from the judge or measured (`auto`), and the judge replies
        that could not be parsed."""
        if self.scorer == "judge" and aspects:
            scores, failures = judge_scores(
                examples,
                rationales,
                self.large_lm,
                self.judge_params,
                self.judge_max_context_chars,
            )
            return judge_components(scores), failures
        # auto (no work when no aspect is asked for); fluency needs the reference's log-probs.
        columns = {
            name: ASPECTS[name](
                examples, rationales, answers=answers, token_logprobs=token_logprobs
            )
            for name in aspects
            if name != "fluency" or token_logprobs is not None
        }
        return columns, []

    def __call__(
        self,
        examples: Sequence[Example],
        rationales: Sequence[str],
        token_logprobs: Sequence[Sequence[float]] | None = None,
    ) -> tuple[list[float], dict[str, list[float | None]], list[dict]]:
        """(total reward per rationale, the active components and any `wellformed`, failures)."""
        if self.needs_token_logprobs and token_logprobs is None:
            raise ValueError("the fluency reward needs the reference model's token log-probs")
        comps, failures = self.components(examples, rationales, token_logprobs=token_logprobs)
        # `wellformed` is logged, not weighted: the mix only takes its own components.
        totals, _ = self.mix.combine({k: v for k, v in comps.items() if k in COMPONENTS})
        return totals, comps, failures


def _gated(values: Sequence[float | None], gate: Sequence[float] | None) -> list[float | None]:
    """`values` times the gate, element-wise (None stays None); unchanged without a gate."""
    if gate is None:
        return list(values)
    return [None if v is None else v * g for v, g in zip(values, gate)]


def mean_scores(components: Mapping[str, Sequence[float | None]]) -> dict[str, float]:
    """Mean of each component over the rationales it scored (None left out, all-None left out)."""
    out = {}
    for name, values in components.items():
        present = [float(v) for v in values if v is not None]
        if present:
            out[name] = sum(present) / len(present)
    return out
