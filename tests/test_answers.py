"""Answer extraction from large-LM replies, rationale/answer splitting and majority voting."""

from __future__ import annotations

import pytest

from lmgcot.answers.extract import extract_answer, majority_vote, split_rationale_answer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("the answer is Paris", "Paris"),
        ("Therefore, the answer is Paris.", "Paris"),
        ("So the answer is: Paris", "Paris"),
        ("THE ANSWER IS Paris", "Paris"),
        ("Answer: Paris", "Paris"),
        ("answer:Paris", "Paris"),
        ("The final answer is Paris.", "Paris"),
        # The last phrase wins when the model corrects itself.
        ("The answer is Lyon. Wait, no. The answer is Paris.", "Paris"),
        ("Answer: Lyon\nOn reflection, the answer is Paris", "Paris"),
        # Quotes, straight and curly, single and double.
        ('The answer is "Paris".', "Paris"),
        ("The answer is 'Paris'.", "Paris"),
        ("The answer is \u201cParis\u201d.", "Paris"),
        ("The answer is \u2018Paris\u2019", "Paris"),
        ('The answer is "Paris."', "Paris"),
        # Bold markers, around the answer or around the whole phrase.
        ("The answer is **Paris**.", "Paris"),
        ("**Answer:** Paris", "Paris"),
        ("**Answer**: Paris", "Paris"),
        ("**The answer is Paris.**", "Paris"),
        # Trailing periods and whitespace.
        ("The answer is Paris...  \n", "Paris"),
        # Parentheses that wrap the whole answer go; inner ones stay.
        ("The answer is (B).", "B"),
        ("Answer: ((B))", "B"),
        ("The answer is (a) or (b)", "(a) or (b)"),
        ("The answer is Paris (France)", "Paris (France)"),
        # Multi-line: the answer may follow the phrase on the next line.
        ("Let me think.\nThe answer is:\n\n  Paris\nDone.", "Paris"),
        # Multi-line without a phrase: the first non-empty line.
        ("\n\n  Paris.\nIt is the capital of France.", "Paris"),
        ("Paris", "Paris"),
        # Casing and inner punctuation are kept; initialisms keep their final period.
        ("The answer is Washington, D.C.", "Washington, D.C."),
        ("the answer is iPhone", "iPhone"),
        ("The answer is Beyoncé.", "Beyoncé"),
        ("The answer is yes.", "yes"),
        # A phrase with nothing after it is not usable; fall back to earlier phrases...
        ("Answer: Paris\nThat is what the answer is.", "Paris"),
        # ...or to the first line.
        ("I am unsure what the answer is.", "I am unsure what the answer is"),
        # "answers" is not an answer phrase.
        ("The answers are many\nsecond line", "The answers are many"),
        ("", ""),
        ("   \n\t ", ""),
        ('""', ""),
    ],
)
def test_extract_answer(reply: str, expected: str) -> None:
    assert extract_answer(reply) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "A is B. B was born in C. So the answer is C.",
            ("A is B. B was born in C.", "C"),
        ),
        ("A is B.\nAnswer: C", ("A is B.", "C")),
        ("The answer is C.", ("", "C")),
        # Only the final answer sentence (and what follows it) is dropped.
        (
            "X said the answer is D. But X was wrong! Therefore, the answer is E.\nQ: next",
            ("X said the answer is D. But X was wrong!", "E"),
        ),
        # An initialism is not a sentence end, so nothing precedes the answer sentence here...
        ("He moved to Washington, D.C. in 1990, so the answer is 1990.", ("", "1990")),
        # ...and the rationale keeps it whole here.
        (
            "He moved to Washington, D.C. in 1990. So the answer is 1990.",
            ("He moved to Washington, D.C. in 1990.", "1990"),
        ),
        # A period followed by a lower-case word does not end a sentence.
        ("It is approx. so the answer is 3.", ("", "3")),
        ("It rained!\nso the answer is wet", ("It rained!", "wet")),
        ("  A is B. B is C.  ", ("A is B. B is C.", "")),
        ("", ("", "")),
    ],
)
def test_split_rationale_answer(text: str, expected: tuple[str, str]) -> None:
    assert split_rationale_answer(text) == expected


def test_majority_vote_simple() -> None:
    answer, share = majority_vote(["Paris", "Lyon", "Paris", "Nice"])
    assert answer == "Paris"
    assert share == pytest.approx(0.5)


def test_majority_vote_groups_by_normalised_answer() -> None:
    # "the Paris.", "paris" and "PARIS" normalise to "paris" and outvote "Lyon"; the first
    # spelling is the representative.
    answer, share = majority_vote(["Lyon", "the Paris.", "paris", "PARIS"])
    assert answer == "the Paris."
    assert share == pytest.approx(0.75)


def test_majority_vote_tie_goes_to_earliest_first_occurrence() -> None:
    assert majority_vote(["Lyon", "Paris", "Paris", "Lyon"]) == ("Lyon", 0.5)
    assert majority_vote(["Paris", "Lyon", "Lyon", "Paris"]) == ("Paris", 0.5)
    assert majority_vote(["a b", "c", "d"]) == ("a b", pytest.approx(1 / 3))


def test_majority_vote_empty_answers_do_not_vote() -> None:
    # Two empties would outnumber "Paris" if they voted; they still count in the share.
    answer, share = majority_vote(["", "Paris", "  ", "the"])
    assert answer == "Paris"
    assert share == pytest.approx(0.25)


def test_majority_vote_all_empty_or_no_input() -> None:
    assert majority_vote(["", " ", "."]) == ("", 0.0)
    assert majority_vote([]) == ("", 0.0)


def test_majority_vote_single() -> None:
    assert majority_vote(["yes"]) == ("yes", 1.0)
