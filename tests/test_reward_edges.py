"""Edges of the reward measures that mutation testing (`make mutate`, docs/mutation.md) found no
test for: error messages that name the missing input, values at the clip, an empty rationale
before others in a batch, the sentence count in reading ease, syllable rules, a scorer's config,
the judge's prompt word for word, its parse errors and what it asks the large LM."""

from __future__ import annotations

import math
import re

import pytest
from conftest import config_group
from test_reward_scorer import Recorder
from test_rewards import ASPECT_NAMES as JUDGE_ASPECTS

from lmgcot.data.example import Example, Paragraph
from lmgcot.errors import ConfigError
from lmgcot.llm.base import GenerationParams, Usage
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards import COMPONENTS, RewardMix
from lmgcot.rewards.aspects import (
    ASPECT_DESCRIPTIONS,
    consistency,
    fluency,
    naturalness,
    readability,
)
from lmgcot.rewards.judge import (
    JudgeParseError,
    build_judge_prompt,
    judge_components,
    judge_scores,
    parse_judge_reply,
)
from lmgcot.rewards.scorer import RewardScorer
from lmgcot.rewards.text import WORD_RE, count_syllables, sentences

pytestmark = pytest.mark.unit

EXAMPLE = Example(
    id="edge-1",
    question="Where was Alice Smith born?",
    answer="Paris",
    context=(Paragraph("Alice Smith", ("Alice Smith was born in Paris.",)),),
)


def test_missing_or_misaligned_extras_name_what_is_missing():
    with pytest.raises(
        ValueError,
        match=r"^missing input extra\['answers'\]: the large LM's answers, one per rationale$",
    ):
        consistency([EXAMPLE], ["x"])
    with pytest.raises(ValueError, match="^2 answers for 1 items"):
        consistency([EXAMPLE], ["x"], answers=["Paris", "Rome"])
    with pytest.raises(
        ValueError,
        match=r"^missing input extra\['token_logprobs'\]: per-token log-probabilities, one list "
        "per rationale$",
    ):
        fluency([EXAMPLE], ["x"])
    with pytest.raises(ValueError, match="^2 token_logprobs for 1 items"):
        fluency([EXAMPLE], ["x"], token_logprobs=[[-1.0], [-1.0]])
    with pytest.raises(ValueError, match=r"^fluency: token_logprobs\[1\] contains NaN$"):
        fluency([EXAMPLE] * 2, ["x", "y"], token_logprobs=[[-1.0], [float("nan")]])


def test_an_empty_rationale_first_in_a_batch_leaves_the_rest_scored():
    # The empty one scores 0 and the loop goes on to the next rationale.
    assert fluency([EXAMPLE] * 2, ["", "x"], token_logprobs=[[], [-0.5]]) == pytest.approx(
        [0.0, math.exp(-0.5)]
    )
    assert naturalness([EXAMPLE] * 2, ["", "Alice was born in Paris."]) == [0.0, 1.0]


def test_fluency_is_clipped_at_exactly_one():
    assert fluency([EXAMPLE], ["x"], token_logprobs=[[0.5, 0.3]]) == [1.0]


def test_naturalness_counts_word_pairs_and_runs_without_spaces():
    # Bigrams (alice met) (met bob) (bob met) (met bob): 3 distinct of 4; single words would give
    # 2 of 4.
    assert naturalness([EXAMPLE], ["Alice met Bob met Bob."]) == [pytest.approx(0.75)]
    # "Noooooway." without its space: 10 characters, 5 of them in the run of "o".
    assert naturalness([EXAMPLE], ["Nooooo way."]) == [pytest.approx(0.5)]


def test_readability_divides_words_by_sentences():
    text = (
        "Alice lived in a small town near the river and often walked to the market. She liked it."
    )
    words = WORD_RE.findall(text)
    assert len(words) == 18 and len(sentences(text)) == 2
    syllables = sum(count_syllables(w) for w in words)
    fre = 206.835 - 1.015 * 18 / 2 - 84.6 * syllables / 18
    assert 0 < fre < 100  # not at a clip, where a wrong sentence count could not show
    assert readability([EXAMPLE], [text]) == [pytest.approx(fre / 100)]


def test_syllable_rules_for_apostrophes_double_e_and_long_words():
    assert count_syllables("ne'er") == 1  # the apostrophe does not split the vowel group
    assert count_syllables("coffee") == 2  # a final "ee" is voiced
    assert count_syllables("celebrate") == 3  # one silent "e" less of four vowel groups


PROMPTS = PromptTemplates(**config_group("prompt"))


def test_a_scorer_from_config_takes_every_setting_and_otherwise_the_defaults():
    lm = SimulatedLargeLM(error_rate=0.0)
    cfg = {
        "weights": {"task": 1.0, "readability": 3.0},
        "scorer": "judge",
        "task_metric": "f1",
        "judge_max_new_tokens": 7,
        "judge_max_context_chars": 50,
        "gate": False,
    }
    scorer = RewardScorer.from_config(cfg, lm, PROMPTS)
    assert scorer.mix.normalized == RewardMix(cfg["weights"]).normalized
    assert scorer.large_lm is lm and scorer.prompts is PROMPTS
    assert (scorer.scorer, scorer.task_metric, scorer.gate) == ("judge", "f1", False)
    assert scorer.judge_params.max_new_tokens == 7 and scorer.judge_max_context_chars == 50
    default = RewardScorer.from_config({"weights": {"task": 1.0}}, lm, PROMPTS)
    assert (default.scorer, default.task_metric, default.gate) == ("auto", "em", True)
    assert default.judge_params.max_new_tokens == 64 and default.judge_max_context_chars is None


def test_a_mix_shows_its_active_weights():
    assert repr(RewardMix({"task": 1, "readability": 0.5, "fluency": 0})) == (
        "RewardMix(task=1, readability=0.5)"
    )


def test_a_mix_s_errors_name_the_components():
    known = ", ".join(COMPONENTS)
    with pytest.raises(ConfigError, match=re.escape(f"give at least one of {known} a positive")):
        RewardMix({"task": 0})
    with pytest.raises(ConfigError, match="^reward.weights: missing; the reward config must map"):
        RewardMix.from_config({})
    mix = RewardMix({"task": 1, "readability": 1})
    with pytest.raises(ValueError, match=re.escape(f"components ['bogus']; known: {known}")):
        mix.combine({"bogus": [1.0], "task": [1.0], "readability": [1.0]})
    with pytest.raises(ValueError, match="^active reward components not computed: task, readab"):
        mix.combine({})


# -- the judge -------------------------------------------------------------------------------------

TWO_PARAGRAPHS = Example(
    id="edge-2",
    question="Where was Alice Smith born?",
    answer="Paris",
    context=(
        Paragraph("Alice Smith", ("Alice Smith was born in Paris.",)),
        Paragraph("Paris", ("Paris is in France.",)),
    ),
)


def judge_prompt_text(context: str, rationale: str) -> str:
    aspects = "".join(f"- {name}: {ASPECT_DESCRIPTIONS[name]}\n" for name in JUDGE_ASPECTS)
    lines = "".join(f"{name}: N\n" for name in JUDGE_ASPECTS)
    return (
        "You are grading a rationale written to help answer a multi-hop question. Rate the "
        "rationale on each aspect below, from 1 (very poor) to 5 (excellent).\n\n"
        f"Aspects:\n{aspects}\n"
        f"Context:\n{context}\n\n"
        "Question: Where was Alice Smith born?\n"
        f"Rationale: {rationale}\n\n"
        "Reply with exactly 8 lines and nothing else, one per aspect, in this format, where N is "
        f"a whole number from 1 to 5:\n{lines}"
    )


def test_the_judge_prompt_word_for_word_with_its_context_cut_and_an_empty_rationale():
    full = "[Alice Smith] Alice Smith was born in Paris.\n[Paris] Paris is in France."
    assert build_judge_prompt(TWO_PARAGRAPHS, "Alice was\n born  there.") == judge_prompt_text(
        full, "Alice was born there."
    )
    # Cut to the first max_context_chars characters; a context of exactly that length is whole.
    assert build_judge_prompt(TWO_PARAGRAPHS, " \n ", 40) == judge_prompt_text(full[:40], "(empty)")
    assert build_judge_prompt(TWO_PARAGRAPHS, "x", len(full)) == judge_prompt_text(full, "x")


def test_a_judge_parse_error_shows_the_reply_on_one_line_cut_at_120_characters():
    reply = "  Sure.\nfactuality: 9\n" + "x" * 200 + "\n"
    with pytest.raises(JudgeParseError) as info:
        parse_judge_reply(reply)
    preview = ("Sure. | factuality: 9 | " + "x" * 200)[:120]
    assert str(info.value) == (
        f"judge reply could not be parsed: factuality: score 9 is outside 1-5 (reply: {preview!r})"
    )
    assert info.value.problem == "factuality: score 9 is outside 1-5" and info.value.reply == reply


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("fluency: 4.5", "fluency: score 4.5 is not a whole number"),
        ("fluency: 4/10", "fluency: score 4/10 is not out of 5"),
        ("fluency: 6", "fluency: score 6 is outside 1-5"),
        ("fluency: 2", "fluency: given twice with different scores (1 and 2)"),
    ],
)
def test_judge_parse_problems_word_for_word(line, problem):
    reply = "\n".join(f"{name}: 1" for name in JUDGE_ASPECTS) + f"\n{line}"
    with pytest.raises(JudgeParseError) as info:
        parse_judge_reply(reply)
    assert info.value.problem == problem


def test_the_judge_s_scale_ends_are_scores_and_a_score_out_of_5_is_read():
    reply = "\n".join(f"{name}: {5 if i % 2 else 1}/5" for i, name in enumerate(JUDGE_ASPECTS))
    assert parse_judge_reply(reply) == {
        name: 5 if i % 2 else 1 for i, name in enumerate(JUDGE_ASPECTS)
    }
    missing = "\n".join(f"{name}: 3" for name in JUDGE_ASPECTS[2:5])
    with pytest.raises(JudgeParseError) as info:
        parse_judge_reply(missing)
    assert info.value.problem == (
        "no score for factuality, relevance, fluency, naturalness, readability"
    )


def RecordingJudge() -> Recorder:
    """Rates a rationale 4 on every aspect unless it says "junk" (then: no usable reply);
    records every request."""
    return Recorder(unreadable="junk", reply="junk in, junk out")


def test_judge_scores_ask_once_per_rationale_with_greedy_64_token_params_by_default():
    lm = RecordingJudge()
    scores, failures = judge_scores([TWO_PARAGRAPHS] * 2, ["A.", "B."], lm)
    assert failures == [] and scores == [dict.fromkeys(JUDGE_ASPECTS, 0.75)] * 2
    assert [r.prompt for r in lm.requests] == [
        build_judge_prompt(TWO_PARAGRAPHS, "A."),
        build_judge_prompt(TWO_PARAGRAPHS, "B."),
    ]
    assert {r.params for r in lm.requests} == {GenerationParams(max_new_tokens=64)}
    # Given params and a context limit are what the requests carry.
    lm = RecordingJudge()
    params = GenerationParams(max_new_tokens=9, temperature=0.5)
    judge_scores([TWO_PARAGRAPHS], ["A."], lm, params, max_context_chars=12)
    assert [(r.prompt, r.params) for r in lm.requests] == [
        (build_judge_prompt(TWO_PARAGRAPHS, "A.", 12), params)
    ]


def test_an_unusable_judge_reply_first_in_a_batch_leaves_the_rest_scored():
    lm = RecordingJudge()
    scores, failures = judge_scores([EXAMPLE, TWO_PARAGRAPHS], ["junk.", "Fine."], lm)
    assert scores == [None, dict.fromkeys(JUDGE_ASPECTS, 0.75)]
    assert failures == [
        {
            "index": 0,
            "id": "edge-1",
            "reply": "junk in, junk out",
            "problem": "no score for " + ", ".join(JUDGE_ASPECTS),
        }
    ]
    assert judge_components(scores)["readability"] == [None, 0.75]


def test_judge_scores_of_nothing_make_no_call_and_misaligned_inputs_are_named():
    lm = RecordingJudge()
    assert judge_scores([], [], lm) == ([], [])
    # Not even an empty batch goes to the large LM: its usage record is untouched.
    assert lm.requests == [] and lm.usage == Usage()
    with pytest.raises(ValueError, match="^1 rationales for 2 examples$"):
        judge_scores([EXAMPLE, EXAMPLE], ["A."], lm)
    assert lm.requests == []
