"""Hand-computed checks of answer normalisation, EM, token F1, alias max and aggregation."""

from __future__ import annotations

import pytest

from lmgcot.answers.metrics import (
    aggregate,
    best_over_golds,
    exact_match,
    f1_score,
    normalize_answer,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Big  Red Dog.", "big red dog"),
        ("An apple, a day!", "apple day"),
        # Punctuation goes before articles: "the-end" -> "theend", which is not an article.
        ("the-end", "theend"),
        # Removing the apostrophe joins the letters, so "a's" becomes the word "as", not an article.
        ("a's", "as"),
        ("Theatre", "theatre"),
        ("  \tNew\nYork  ", "new york"),
        ("Beyoncé Knowles", "beyoncé knowles"),
        # Only ASCII punctuation is removed; curly quotes survive normalisation.
        ("\u201cParis\u201d", "\u201cparis\u201d"),
        ("", ""),
        ("The", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "em"),
    [
        ("The Eiffel Tower", "eiffel tower", 1.0),
        ("Eiffel Tower.", "the eiffel tower", 1.0),
        ("U.S.", "US", 1.0),
        ("BEYONCÉ", "beyoncé", 1.0),
        ("Beyonce", "Beyoncé", 0.0),
        ("Eiffel", "Eiffel Tower", 0.0),
        ("", "", 1.0),
    ],
)
def test_exact_match(pred: str, gold: str, em: float) -> None:
    assert exact_match(pred, gold) == em


@pytest.mark.parametrize(
    ("pred", "gold", "f1"),
    [
        # Articles vanish: pred tokens {big, red, dog}, gold {red, dog}: P=2/3, R=1, F1=0.8.
        ("the big red dog", "red dog", 0.8),
        # Overlap 2 of 2 predicted and 4 gold tokens: P=1, R=1/2 -> F1 = 1/(3/2) = 2/3.
        ("New York", "New York City council", 2 / 3),
        ("John Smith", "Smith, John", 1.0),
        ("cat", "dog", 0.0),
        # Multiset overlap: pred has "dog" twice, gold once, so overlap is 1: P=1/2, R=1 -> 2/3.
        ("dog dog", "dog", 2 / 3),
        # Gold "dog dog" against pred "dog": P=1, R=1/2 -> 2/3.
        ("dog", "dog dog", 2 / 3),
        ("Paris!", "paris", 1.0),
        ("", "paris", 0.0),
        ("paris", "", 0.0),
        # Both sides empty share no token, so F1 is 0 even though EM is 1.
        ("", "", 0.0),
        # Non-ASCII tokens compare after lower-casing: P=1/3, R=1 -> F1 = (2/3)/(4/3) = 0.5.
        ("café au lait", "Café", 0.5),
    ],
)
def test_f1_score(pred: str, gold: str, f1: float) -> None:
    assert f1_score(pred, gold) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("pred", "gold", "f1"),
    [
        ("yes", "no", 0.0),
        ("no", "yes", 0.0),
        # Token overlap ("yes") would give 0.5, but the special rule zeroes it.
        ("yes it is", "yes", 0.0),
        ("no", "no way", 0.0),
        ("noanswer", "no answer", 0.0),
        ("Yes.", "yes", 1.0),
        ("NO", "no", 1.0),
        ("noanswer", "noanswer", 1.0),
        # Neither side normalises to a special word, so ordinary token F1 applies: P=R=1/2.
        ("yes sir", "yes madam", 0.5),
    ],
)
def test_f1_yes_no_rule(pred: str, gold: str, f1: float) -> None:
    assert f1_score(pred, gold) == pytest.approx(f1)


def test_best_over_golds_takes_max_over_aliases() -> None:
    # Main gold gives EM 0, F1 0.5 (P=1, R=1/3); alias "USA" matches exactly.
    em, f1 = best_over_golds("USA", ["United States of America", "USA", "America"])
    assert (em, f1) == (1.0, 1.0)


def test_best_over_golds_maxima_are_independent() -> None:
    # "new york" vs "New York City": P=1, R=2/3 -> F1=0.8, EM 0; vs "NYC": 0, 0.
    em, f1 = best_over_golds("new york", ["NYC", "New York City"])
    assert em == 0.0
    assert f1 == pytest.approx(0.8)


def test_best_over_golds_edge_cases() -> None:
    assert best_over_golds("x", []) == (0.0, 0.0)
    # A bare string is one gold, not a sequence of characters.
    assert best_over_golds("Paris", "paris") == (1.0, 1.0)


def test_aggregate_counts_missing_predictions_as_zero() -> None:
    # Three scored examples out of five gold: EM (1+0+1)/5, F1 (1+0.5+1)/5.
    result = aggregate([(1.0, 1.0), (0.0, 0.5), (1.0, 1.0)], n_gold=5)
    assert result["n"] == 5
    assert result["em"] == pytest.approx(0.4)
    assert result["f1"] == pytest.approx(0.5)


def test_aggregate_full_and_empty() -> None:
    assert aggregate([(1.0, 1.0), (0.0, 0.0)], n_gold=2) == {"em": 0.5, "f1": 0.5, "n": 2}
    assert aggregate([], n_gold=3) == {"em": 0.0, "f1": 0.0, "n": 3}
    assert aggregate([], n_gold=0) == {"em": 0.0, "f1": 0.0, "n": 0}


def test_aggregate_rejects_more_scores_than_golds() -> None:
    with pytest.raises(ValueError):
        aggregate([(1.0, 1.0), (1.0, 1.0)], n_gold=1)
