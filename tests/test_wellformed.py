"""The well-formedness gate: each factor by hand, calibration on teacher rationales and junk."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import config_group
from test_rewards import EXAMPLE

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.data.example import Example, Paragraph
from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.wellformed import (
    known_word_factor,
    repetition_factor,
    sentence_factor,
    vocabulary_of,
    wellformedness,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
JUNK = ["bral was", "TheTheThe in in in in", "Paris Paris Paris Paris.", "was born in", "", " "]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice Smith was born in Paris.", 1.0),
        # The bridge named at the end of one sentence and the start of the next is no stutter.
        ("Alice Smith was born in Paris. Paris is in France.", 1.0),
        # One stutter in 10 words: share 0.1, a quarter of the way from 0.05 to 0.25.
        ("Alice Smith was born in in Paris and studied physics.", 0.75),
        ("in in in in", 0.0),
        # "the cat the cat": the last word completes a repeated bigram, 1 of 4 words.
        ("the cat the cat", 0.0),
        # No stutter, but 3 distinct of 8 bigrams: 0.375, a quarter of the way from 0.3 to 0.6.
        ("Alice met Bob Alice met Bob Alice met Bob.", 0.25),
        # 4 of 23 non-space characters in a run; 6 of 27 in a chunk said three times.
        ("Alice was born in Paris!!!!", 1 - (4 / 23) / 0.25),
        ("Hahaha, Alice was born in Paris.", 1 - (6 / 27) / 0.25),
        ("TheTheThe cat sat.", 0.0),
        # Digits and double letters are not runs.
        ("The committee cost 10000 dollars.", 1.0),
        # A stutter on the second word counts too: 1 in 10 words.
        ("Alice Alice was born in Paris and studied physics today.", 0.75),
        # One word has no bigram: nothing repeats.
        ("Paris.", 1.0),
        # A repeated bigram inside the sentence, not only at its end: 1 stutter in 10 words.
        ("Alice met Bob met Bob in the park last summer.", 0.75),
        # The first word has no word before it (it is not compared with the last one).
        ("Alice said that Bob and Carol had met Alice.", 1.0),
        # 4 distinct words in 12, but 9 distinct of 11 bigrams: words that recur are no loop.
        ("Alice saw Bob. Bob saw Carol. Carol saw Alice. Alice saw Carol.", 1.0),
        ("", 1.0),
    ],
)
def test_repetition_factor(text, expected):
    assert repetition_factor(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice, Paris.", 1.0),
        # alice, paris and the number 1990 of 5 words: 0.6, a quarter of the way from 0.5 to 0.9.
        ("Alice bral Paris 1990 zork.", 0.25),
        ("bral zork", 0.0),
        ("ALICE paris", 1.0),
        ("", 1.0),
    ],
)
def test_known_word_factor(text, expected):
    assert known_word_factor(text, {"alice", "paris"}) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice was born in Paris.", 1.0),
        ('He said "Alice was born in Paris."', 1.0),
        ("Alice was born in Paris", 0.5),  # no final punctuation
        ("Alice was born in. Paris is big.", 0.5),  # 1 of 2 sentences ends on "in"
        ("So. Alice was born in Paris.", 0.5),  # 1 of 2 sentences has fewer than 3 words
        ("Alice (born in Paris.", 0.5),  # unbalanced bracket
        ('He said "Alice was born.', 0.5),  # unbalanced quote
        ("was born in", 0.0),  # its only sentence is a fragment
        ("Alice left Paris.", 1.0),  # three words are a sentence
        ("Alice was born in Paris. ", 1.0),  # white space after the final "." is no matter
        ("Alice [born in Paris.", 0.5),  # unbalanced square bracket
        ("Alice (a physicist) was born in Paris.", 1.0),  # balanced brackets
        ("Alice [a physicist] was born in Paris.", 1.0),
        ("He said \u201cAlice was born in Paris.", 0.5),  # unbalanced curly quotes
        ("He said \u201cAlice was born in Paris.\u201d", 1.0),
        ("", 0.0),
    ],
)
def test_sentence_factor(text, expected):
    assert sentence_factor(text) == pytest.approx(expected)


def test_wellformedness_is_the_product_of_the_factors():
    # One stutter in 10 words (0.75); no final punctuation (0.5); "liked" and "zoology" are in
    # neither the context, the question nor the stop words: 8 of 10 words known (0.75).
    text = "Alice Smith was born in in Paris and liked zoology"
    assert repetition_factor(text) == pytest.approx(0.75)
    assert sentence_factor(text) == 0.5
    assert wellformedness([EXAMPLE], [text]) == pytest.approx([0.75 * 0.5 * 0.75])


def test_the_vocabulary_makes_connectives_known():
    text = "Alice Smith was born in Paris, whereupon Paris became famous."
    # whereupon, became, famous: 7 of 10 words known, half way from 0.5 to 0.9.
    assert wellformedness([EXAMPLE], [text]) == pytest.approx([0.5])
    vocabulary = vocabulary_of(["Whereupon it Became famous."])
    assert vocabulary == {"whereupon", "it", "became", "famous"}
    assert wellformedness([EXAMPLE], [text], vocabulary) == [1.0]
    # Known words do not make junk well-formed.
    assert wellformedness([EXAMPLE], ["became famous"], vocabulary) == [0.0]


@pytest.fixture(scope="module")
def teacher_pairs() -> list[tuple[Example, str]]:
    """The synthetic dataset's teacher rationales, with and without the answer sentence, from
    the simulated large LM with its default chain-corruption rate (wrong facts read the same)."""
    templates = PromptTemplates(**config_group("prompt"))
    examples = SyntheticMultiHop(n_train=120, n_val=0, n_test=0, seed=0).load_splits().train
    lm = SimulatedLargeLM()
    replies = [lm.respond(templates.cot_prompt(x)) for x in examples]
    stripped = [split_rationale_answer(r)[0] for r in replies]
    return [*zip(examples, replies), *zip(examples, stripped)]


def test_calibration_teacher_rationales_score_about_one(teacher_pairs):
    examples, rationales = zip(*teacher_pairs)
    scores = wellformedness(examples, rationales)
    assert sum(scores) / len(scores) >= 0.95
    assert min(scores) >= 0.9


@pytest.mark.parametrize("junk", JUNK)
def test_calibration_junk_scores_low(junk, teacher_pairs):
    examples = [EXAMPLE, *(x for x, _ in teacher_pairs[:8])]
    # Even with every word of the teacher's rationales known.
    vocabulary = vocabulary_of(r for _, r in teacher_pairs)
    for vocab in (None, vocabulary):
        assert max(wellformedness(examples, [junk] * len(examples), vocab)) <= 0.3


def test_known_words_come_from_titles_the_question_and_the_stop_words():
    example = Example(
        id="hand-2",
        question="When did the Zorbian league start?",
        answer="1990",
        context=(Paragraph("Quexley Cup", ("It began in 1990.",)),),
    )
    # quexley and cup only in the title, zorbian and league only in the question, therefore
    # only in the stop words: all 11 words known.
    text = "Therefore the Quexley Cup of the Zorbian league began in 1990."
    assert wellformedness([example], [text]) == [1.0]


def test_an_empty_rationale_first_in_a_batch_leaves_the_rest_scored():
    assert wellformedness([EXAMPLE, EXAMPLE], ["", "Alice Smith was born in Paris."]) == [0.0, 1.0]


def test_wellformedness_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="^1 rationales for 2 items: need one each$"):
        wellformedness([EXAMPLE, EXAMPLE], ["Alice was born in Paris."])
