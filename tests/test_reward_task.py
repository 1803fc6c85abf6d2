"""The task reward by hand: what it asks the large LM (prompt and params), how it reads and scores
the replies (EM or F1, aliases, answer types), and its errors. Written against the mutants that
`make mutate MUTANTS='lmgcot.rewards.task*'` found no test for (docs/mutation.md)."""

from __future__ import annotations

import pytest
from conftest import config_group

from lmgcot.data.example import Example, Paragraph
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.task import task_reward

pytestmark = pytest.mark.unit

PROMPTS = PromptTemplates(**config_group("prompt"))

ALICE = Example(
    id="task-1",
    question="Where was Alice Smith born?",
    answer="Paris France",
    aliases=("Paris",),
    context=(Paragraph("Alice Smith", ("Alice Smith was born in Paris.",)),),
)
COUNT = Example(
    id="task-2",
    question="How many cats does Bob have?",
    answer="12",
    context=(),
    answer_type="number",
)


class Scripted(LargeLM):
    """Replies from a {rationale marker: reply} script and records every request it gets."""

    backend = "scripted"

    def __init__(self, script: dict[str, str]):
        super().__init__("scripted")
        self.script = script
        self.requests: list[Request] = []

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.requests += requests
        return [Completion(self._reply(r.prompt)) for r in requests]

    def _reply(self, prompt: str) -> str:
        return next((v for k, v in self.script.items() if k in prompt), "I do not know.")


def test_the_large_lm_reads_the_guided_prompt_with_greedy_params_of_the_token_budget():
    lm = Scripted({"r-one": "Paris"})
    task_reward([ALICE, COUNT], ["r-one", "r-two"], lm, PROMPTS)
    assert [r.prompt for r in lm.requests] == [
        PROMPTS.guided_prompt(ALICE, "r-one"),
        PROMPTS.guided_prompt(COUNT, "r-two"),
    ]
    # The params lm_guided_kd's evaluation uses, so that both share cached calls.
    assert {r.params for r in lm.requests} == {GenerationParams(max_new_tokens=32)}
    assert [r.sample_index for r in lm.requests] == [0, 0]
    lm = Scripted({})
    task_reward([ALICE], ["r-one"], lm, PROMPTS, max_new_tokens=7)
    assert [r.params for r in lm.requests] == [GenerationParams(max_new_tokens=7)]


def test_em_is_the_default_and_f1_gives_partial_credit_maximised_over_the_aliases():
    lm = Scripted({"r-partial": "France", "r-alias": "Paris", "r-wrong": "Rome"})
    rationales = ["r-partial", "r-alias", "r-wrong"]
    em, answers = task_reward([ALICE] * 3, rationales, lm, PROMPTS)
    assert em == [0.0, 1.0, 0.0]
    assert answers == ["France", "Paris", "Rome"]
    f1, answers_f1 = task_reward([ALICE] * 3, rationales, lm, PROMPTS, metric="f1")
    # "France" against "Paris France": precision 1, recall 1/2.
    assert f1 == [pytest.approx(2 / 3), 1.0, 0.0]
    assert answers_f1 == answers


def test_answers_are_read_and_scored_by_the_example_s_answer_type():
    lm = Scripted({"r-count": "Counting both litters, Bob has 12 cats in all."})
    rewards, answers = task_reward([COUNT], ["r-count"], lm, PROMPTS, metric="f1")
    assert answers == ["12"] and rewards == [1.0]


def test_no_examples_make_no_call():
    lm = Scripted({})
    assert task_reward([], [], lm, PROMPTS) == ([], [])
    assert lm.requests == [] and lm.usage.calls == 0


def test_misaligned_rationales_and_unknown_metrics_are_named():
    lm = Scripted({})
    with pytest.raises(ValueError, match="^1 rationales for 2 examples$"):
        task_reward([ALICE, COUNT], ["r"], lm, PROMPTS)
    with pytest.raises(
        ValueError, match=r"^reward\.task_metric='EM': unknown metric; allowed: em, f1$"
    ):
        task_reward([ALICE], ["r"], lm, PROMPTS, metric="EM")
    assert lm.requests == []
