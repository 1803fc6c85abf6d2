"""Rewards for rationale refinement: the task reward, eight rationale-quality aspects, their mix."""

from lmgcot.rewards.aspects import ASPECTS
from lmgcot.rewards.judge import (
    JudgeParseError,
    build_judge_prompt,
    judge_components,
    judge_scores,
    parse_judge_reply,
)
from lmgcot.rewards.mix import COMPONENTS, RewardMix
from lmgcot.rewards.task import TASK_METRICS, task_reward

__all__ = [
    "ASPECTS",
    "COMPONENTS",
    "JudgeParseError",
    "RewardMix",
    "TASK_METRICS",
    "build_judge_prompt",
    "judge_components",
    "judge_scores",
    "parse_judge_reply",
    "task_reward",
]
