"""Answer scoring: HotpotQA-style normalisation, EM, token F1, alias max and aggregation."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Answers where partial token overlap means nothing: "yes it is" is not half right against "yes".
_SPECIAL = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    The steps run in the HotpotQA order (lower -> punctuation -> articles -> whitespace). Only
    `string.punctuation` is removed, so non-ASCII letters and symbols survive unchanged.
    """
    s = s.lower()
    s = s.translate(_DROP_PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 between normalised prediction and gold, counting repeated tokens as a multiset.

    When either normalised side is "yes", "no" or "noanswer" and the sides differ, the score is
    0.0. With no shared token (including when a side is empty) the score is 0.0.
    """
    pred_norm = normalize_answer(prediction)
    gold_norm = normalize_answer(gold)
    if (pred_norm in _SPECIAL or gold_norm in _SPECIAL) and pred_norm != gold_norm:
        return 0.0
    pred_tokens = pred_norm.split()
    gold_tokens = gold_norm.split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(max EM, max F1) of the prediction over the gold answer and its aliases.

    The two maxima are taken independently (the 2WikiMultiHopQA rule); no golds gives (0.0, 0.0).
    """
    if isinstance(golds, str):
        # A bare string would otherwise be scored character by character.
        golds = [golds]
    best_em = max((exact_match(prediction, g) for g in golds), default=0.0)
    best_f1 = max((f1_score(prediction, g) for g in golds), default=0.0)
    return best_em, best_f1


def aggregate(per_example: list[tuple[float, float]], n_gold: int) -> dict:
    """{"em", "f1", "n"}: means over all `n_gold` gold examples.

    Dividing by `n_gold` rather than by the number of scored examples makes a missing prediction
    count as 0 on both metrics. No gold examples gives 0.0 for both means.
    """
    if n_gold < 0:
        raise ValueError(f"n_gold must be >= 0, got {n_gold}")
    if len(per_example) > n_gold:
        raise ValueError(f"{len(per_example)} scored examples but only {n_gold} gold examples")
    if n_gold == 0:
        return {"em": 0.0, "f1": 0.0, "n": 0}
    em = sum(e for e, _ in per_example) / n_gold
    f1 = sum(f for _, f in per_example) / n_gold
    return {"em": em, "f1": f1, "n": n_gold}
