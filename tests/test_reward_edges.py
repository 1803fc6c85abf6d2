"""Edges of the reward measures that mutation testing (`make mutate`, docs/mutation.md) found no
test for: error messages that name the missing input, values at the clip, an empty rationale
before others in a batch, the sentence count in reading ease, syllable rules, a scorer's config."""

from __future__ import annotations

import math
import re

import pytest
from conftest import config_group

from lmgcot.data.example import Example, Paragraph
from lmgcot.errors import ConfigError
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards import COMPONENTS, RewardMix
from lmgcot.rewards.aspects import consistency, fluency, naturalness, readability
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
    with pytest.raises(ValueError, match="the large LM's answers, one per rationale"):
        consistency([EXAMPLE], ["x"])
    with pytest.raises(ValueError, match="^2 answers for 1 items"):
        consistency([EXAMPLE], ["x"], answers=["Paris", "Rome"])
    with pytest.raises(ValueError, match="per-token log-probabilities, one list per rationale"):
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
