"""The task reward: does the frozen large LM answer correctly when guided by the rationale."""

from __future__ import annotations

from collections.abc import Sequence

from lmgcot.answers.typed import read_answer, score_answer
from lmgcot.data.example import Example
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.prompts import PromptTemplates

TASK_METRICS = ("em", "f1")


def task_reward(
    examples: Sequence[Example],
    rationales: Sequence[str],
    large_lm: LargeLM,
    prompts: PromptTemplates,
    metric: str = "em",
    max_new_tokens: int = 32,
) -> tuple[list[float], list[str]]:
    """(rewards, answers): EM or token F1 of the large LM's guided answer against the golds.

    The large LM reads `prompts.guided_prompt(example, rationale)` through `large_lm.generate`
    with greedy params of `max_new_tokens` (the ones `lm_guided_kd` evaluation uses), so repeated
    rationales and evaluation share cached calls. The reward is the maximum over the gold answer
    and its aliases, read and compared by the example's answer type (`score_answer`). The extracted answers come back too: the consistency
    aspect compares them with the rationale's conclusion.
    """
    if metric not in TASK_METRICS:
        raise ValueError(
            f"reward.task_metric={metric!r}: unknown metric; allowed: {', '.join(TASK_METRICS)}"
        )
    if len(examples) != len(rationales):
        raise ValueError(f"{len(rationales)} rationales for {len(examples)} examples")
    if not examples:
        return [], []
    params = GenerationParams(max_new_tokens=max_new_tokens)
    texts = [prompts.guided_prompt(e, r) for e, r in zip(examples, rationales)]
    replies = large_lm.generate(texts, params)
    answers = [read_answer(e.answer_type, c[0].text) for e, c in zip(examples, replies)]
    pick = TASK_METRICS.index(metric)  # score_answer returns (em, f1)
    rewards = [
        score_answer(e.answer_type, a, e.gold_answers)[pick] for e, a in zip(examples, answers)
    ]
    return rewards, answers
