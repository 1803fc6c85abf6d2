"""Reading typed answers out of replies (numbers, yes/no, choice letters, strings) and matching them."""

from __future__ import annotations

import pytest

from lmgcot.answers.typed import (
    answers_match,
    canonical_number,
    extract_choice,
    extract_number,
    extract_string,
    extract_typed,
    extract_yes_no,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("She buys 3 packs of 12, so 36 eggs. The answer is 36.", "36"),
        ("48 / 2 = 24 and 24 + 5 = 29. Therefore, the answer is $1,250.", "1250"),
        ("Step 1: 10 - 13 = -3. Answer: -3", "-3"),
        ("Each costs 2.50, so the total is 7.5", "7.5"),  # no phrase: the last number
        ("The answer is 12 apples, not 15.", "12"),  # first number after the phrase
        ("It takes 3.0 hours.", "3"),
        ("The answer is unknown, but 4 people came.", "4"),
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_extract_number(reply, expected):
    assert extract_number(reply) == expected


def test_canonical_number_forms():
    assert canonical_number("1,250") == "1250"
    assert canonical_number("2.50") == "2.5"
    assert canonical_number("-0.0") == "0"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("The coin was flipped twice, so it is still heads up. So the answer is yes.", "yes"),
        ("Yes, no one flipped it... Therefore, the answer is No.", "no"),  # after the phrase
        ("Sharks are fish. The answer is: False", "no"),
        ("no doubt. it is true", "yes"),  # no phrase: the last such word
        ("The answer is not known, but yes seems likely.", "yes"),
        ("Nobody knows; yesterday it rained.", None),  # whole words only
    ],
)
def test_extract_yes_no(reply, expected):
    assert extract_yes_no(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("People keep money in a bank. So the answer is (C).", "C"),
        ("Answer: B) river", "B"),
        ("A person would go there. The answer is D", "D"),
        ("A bank holds money, so (C) bank fits best.", "C"),  # marked letter, no phrase
        ("A person walks into a room.", None),  # the article is not a choice
        ("The answer is (a) lower case", None),
        ("The best option here is E.", "E"),  # a final "E." is marked
    ],
)
def test_extract_choice(reply, expected):
    assert extract_choice(reply) == expected


def test_extract_choice_limits_the_letters():
    assert extract_choice("The answer is (E).", letters="ABC") is None
    assert extract_choice("The answer is (B).", letters="ABC") == "B"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('The last letters are "k" and "y". The answer is "ky".', "ky"),
        ("So the answer is Ally Smith.", "ally smith"),
        ("   ", None),
    ],
)
def test_extract_string(reply, expected):
    assert extract_string(reply) == expected


@pytest.mark.parametrize(
    "kind, predicted, gold, same",
    [
        ("number", "1250", "1,250", True),
        ("number", "2.5", "2.50", True),
        ("number", "3", "4", False),
        ("number", None, "4", False),
        ("number", "3", "three", False),
        ("yes_no", "yes", "True", True),
        ("yes_no", "no", "yes", False),
        ("choice", "C", "(c)", True),
        ("choice", "C", "D", False),
        ("string", "the Ky", "ky", True),
        ("string", "ky", "yk", False),
    ],
)
def test_answers_match(kind, predicted, gold, same):
    assert answers_match(kind, predicted, gold) is same


def test_unknown_type_is_an_error():
    with pytest.raises(ValueError, match="answer type 'date'"):
        extract_typed("date", "x")
    with pytest.raises(ValueError, match="answer type 'date'"):
        answers_match("date", "x", "y")
    assert extract_typed("number", "The answer is 7.") == "7"
