"""The generated reasoning tasks (last_letter, coin_flip) and the `simulated` large LM serving them,
against the contracts in the docstrings of `lmgcot.data.reasoning` and `lmgcot.llm.simulated_reasoning`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import config_group

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.answers.typed import read_answer
from lmgcot.data.example import Example
from lmgcot.data.reasoning import (
    COIN_PHRASINGS,
    LAST_LETTER_PHRASINGS,
    CoinFlip,
    LastLetter,
    coin_question,
    coin_rationale,
    last_letter_question,
    last_letter_rationale,
)
from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.llm.simulated_reasoning_rationales import read_coin_rationale, stated_letters
from lmgcot.prompts import PromptTemplates
from lmgcot.teacher import few_shot_exemplars, sample_rationales

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
N = 400
LL_RX = re.compile(r'^Take the last letters of the words in "([^"]+)" and concatenate them\.$')
COIN_RX = re.compile(
    r"^A coin is heads up\.((?: [A-Z][a-z]+ (?:flips|does not flip) the coin\.)+) "
    r"Is the coin still heads up\?$"
)


def _templates(path: str) -> PromptTemplates:
    with open(REPO_ROOT / "lmgcot" / "conf" / path) as f:
        return PromptTemplates(**yaml.safe_load(f))


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return _templates("prompt_presets/reasoning.yaml")


@pytest.fixture(scope="module")
def last_letters() -> list[Example]:
    return LastLetter(n_train=0, n_val=0, n_test=N, seed=5).load_splits().test


@pytest.fixture(scope="module")
def coins() -> list[Example]:
    return CoinFlip(n_train=0, n_val=0, n_test=N, seed=5).load_splits().test


@pytest.fixture(scope="module", params=["last_letter", "coin_flip"])
def task(request, last_letters, coins) -> list[Example]:
    return last_letters if request.param == "last_letter" else coins


def words_of(e: Example) -> list[str]:
    return LL_RX.match(e.question).group(1).split()


def moves_of(e: Example) -> tuple[list[str], list[bool]]:
    moves = re.findall(r"([A-Z][a-z]+) (flips|does not flip) the coin\.", e.question)
    return [p for p, _ in moves], [m == "flips" for _, m in moves]


def build_rationale(e: Example, phrasing: int, wrong_step: int | None = None) -> str:
    """A rationale for `e` in one phrasing, with step `wrong_step` (if any) wrong."""
    if e.type == "last_letter":
        words = words_of(e)
        letters = [w[-1].lower() for w in words]
        if wrong_step is not None:
            letters[wrong_step] = words[wrong_step][0].lower()
            if letters[wrong_step] == words[wrong_step][-1]:
                letters[wrong_step] = "x"
        return last_letter_rationale(words, letters, phrasing)
    people, flips = moves_of(e)
    if wrong_step is not None:
        flips[wrong_step] = not flips[wrong_step]
    return coin_rationale(people, flips, phrasing)


# -- the generators -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [LastLetter, CoinFlip])
def test_same_seed_same_examples_other_seed_others(cls) -> None:
    a = cls(n_train=20, n_val=5, n_test=10, seed=3).load_splits()
    b = cls(n_train=20, n_val=5, n_test=10, seed=3).load_splits()
    c = cls(n_train=20, n_val=5, n_test=10, seed=4).load_splits()
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert {e.question for e in a.test}.isdisjoint({e.question for e in c.test})


@pytest.mark.parametrize("cls", [LastLetter, CoinFlip])
def test_sizes_caps_ids_and_disjoint_splits(cls) -> None:
    splits = cls(n_train=300, n_val=40, n_test=60, seed=0).load_splits()
    assert [len(xs) for _, xs in splits.items()] == [300, 40, 60]
    questions = [e.question for _, xs in splits.items() for e in xs]
    assert len(set(questions)) == len(questions)  # no question in two splits, nor twice in one
    for split, xs in splits.items():
        assert all(f"-{split}-" in e.id for e in xs)
    assert len({e.id for _, xs in splits.items() for e in xs}) == 400
    capped = cls(n_train=300, n_val=40, n_test=60, seed=0, max_train=7, max_test=3).load_splits()
    assert capped.train == splits.train[:7] and capped.test == splits.test[:3]
    assert capped.val == splits.val
    # The test split does not move when only the training size changes.
    assert cls(n_train=10, n_val=40, n_test=60, seed=0).load_splits().test == splits.test


def test_last_letter_examples(last_letters) -> None:
    for e in last_letters:
        words = words_of(e)
        assert len(words) == 4 and len(set(words)) == 4
        assert all(len(w) >= 3 and w[0].isupper() and w[1:].islower() for w in words)
        assert e.answer == "".join(w[-1] for w in words).lower()
        assert (e.type, e.answer_type, e.context) == ("last_letter", "string", ())
        assert e.rationale == last_letter_rationale(words, list(e.answer))
    six = LastLetter(n_train=3, n_val=0, n_test=0, n_words=6).load_splits().train
    assert all(len(words_of(e)) == 6 == len(e.answer) for e in six)


def test_coin_flip_examples(coins) -> None:
    answers = set()
    for e in coins:
        assert COIN_RX.match(e.question), e.question
        people, flips = moves_of(e)
        assert len(people) == 4 and len(set(people)) == 4
        assert e.answer == ("yes" if sum(flips) % 2 == 0 else "no")
        assert (e.type, e.answer_type, e.context) == ("coin_flip", "yes_no", ())
        assert e.rationale == coin_rationale(people, flips)
        answers.add(e.answer)
    assert answers == {"yes", "no"}
    assert sum(e.answer == "yes" for e in coins) / N == pytest.approx(0.5, abs=0.08)


def test_hand_checked_last_letter_example() -> None:
    words = ["Bora", "Kethin", "Suth", "Drou"]
    assert last_letter_question(words) == (
        'Take the last letters of the words in "Bora Kethin Suth Drou" and concatenate them.'
    )
    assert last_letter_rationale(words, ["a", "n", "h", "u"]) == (
        'The last letter of "Bora" is "a". The last letter of "Kethin" is "n". '
        'The last letter of "Suth" is "h". The last letter of "Drou" is "u". '
        'Concatenating them gives "anhu".'
    )
    e = LastLetter(n_train=1, n_val=0, n_test=0, seed=1).load_splits().train[0]
    assert e.question == (
        'Take the last letters of the words in "Thur Lor Brir Stoth" and concatenate them.'
    )
    assert e.answer == "rrrh"


def test_hand_checked_coin_example() -> None:
    people, flips = ["Tegou", "Drevei", "Habon"], [True, False, True]
    assert coin_question(people, flips) == (
        "A coin is heads up. Tegou flips the coin. Drevei does not flip the coin. "
        "Habon flips the coin. Is the coin still heads up?"
    )
    assert coin_rationale(people, flips) == (
        "The coin starts heads up. Tegou flips the coin, so it is now tails up. "
        "Drevei does not flip the coin, so it stays tails up. "
        "Habon flips the coin, so it is now heads up."
    )
    e = CoinFlip(n_train=1, n_val=0, n_test=0, seed=1).load_splits().train[0]
    assert e.question == (
        "A coin is heads up. Tegou flips the coin. Drevei flips the coin. Habon flips the coin. "
        "Vaigeir does not flip the coin. Is the coin still heads up?"
    )
    assert e.answer == "no"  # three flips


@pytest.mark.parametrize(
    ("cls", "kwargs", "key"),
    [
        (LastLetter, {"n_train": -1}, "n_train"),
        (LastLetter, {"n_test": -5}, "n_test"),
        (LastLetter, {"n_words": 0}, "n_words"),
        (CoinFlip, {"n_val": -1}, "n_val"),
        (CoinFlip, {"n_people": 0}, "n_people"),
        (CoinFlip, {"context": "bogus"}, "context"),
    ],
)
def test_bad_settings_raise(cls, kwargs, key) -> None:
    with pytest.raises(ConfigError, match=rf"dataset\.{key}"):
        cls(**kwargs)


def test_configs_build_the_datasets_with_the_reasoning_prompts(compose_cfg) -> None:
    from lmgcot.pipeline.builders import build

    for name, cls in (("last_letter", LastLetter), ("coin_flip", CoinFlip)):
        cfg = compose_cfg(
            f"dataset={name}", "dataset.n_train=4", "dataset.n_val=2", "dataset.n_test=3"
        )
        assert cfg.prompt.standard == "Q: {question}\nA: The answer is"
        ds = build(cfg.dataset, "dataset")
        assert isinstance(ds, cls)
        assert [len(xs) for _, xs in ds.load_splits().items()] == [4, 2, 3]


# -- the simulated CoT teacher ------------------------------------------------------------------


def test_gold_rationale_is_the_greedy_error_free_teacher(templates, task) -> None:
    lm = SimulatedLargeLM(error_rate=0.0)
    for e in task:
        reply = lm.respond(templates.cot_prompt(e))
        assert reply == f"{e.rationale} So the answer is {e.answer}."
        assert split_rationale_answer(reply) == (e.rationale, e.answer)
        assert read_answer(e.answer_type, reply) == e.answer


@pytest.mark.parametrize("error_rate", [0.2, 0.4])
def test_teacher_correct_share_is_one_minus_error_rate(templates, task, error_rate) -> None:
    lm = SimulatedLargeLM(error_rate=error_rate)
    replies = [lm.respond(templates.cot_prompt(e), 0.7, 1) for e in task]
    correct = [read_answer(e.answer_type, r) == e.answer for e, r in zip(task, replies)]
    assert abs(sum(correct) / N - (1 - error_rate)) < 0.06
    # Every reply states its steps and ends with the answer it reached.
    for r in replies:
        rationale, answer = split_rationale_answer(r)
        assert r.endswith(f" So the answer is {answer}.") and rationale


def test_corrupted_last_letter_rationale_has_one_plausible_wrong_letter(
    templates, last_letters
) -> None:
    lm = SimulatedLargeLM(error_rate=1.0)
    for e in last_letters:
        words = words_of(e)
        reply = lm.respond(templates.cot_prompt(e))
        rationale, answer = split_rationale_answer(reply)
        stated = stated_letters(rationale, words)
        wrong = [i for i, (w, c) in enumerate(zip(words, stated)) if c != w[-1]]
        assert len(wrong) == 1, reply
        w = words[wrong[0]].lower()
        assert stated[wrong[0]] in (w[-2], w[0])
        assert answer == "".join(stated) != e.answer


def test_corrupted_coin_rationale_misreads_one_flip(templates, coins) -> None:
    lm = SimulatedLargeLM(error_rate=1.0)
    for e in coins:
        people, flips = moves_of(e)
        rationale, answer = split_rationale_answer(lm.respond(templates.cot_prompt(e), 0.5, 2))
        assert answer != e.answer
        states = read_coin_rationale(rationale, people).states
        heads, true_states = True, []
        for f in flips:
            heads = heads != f
            true_states.append(heads)
        first_wrong = next(i for i, (s, t) in enumerate(zip(states, true_states)) if s != t)
        # From the misread flip on, every stated state is wrong: later steps follow it.
        assert all(s != t for s, t in zip(states[first_wrong:], true_states[first_wrong:]))


def _phrasing(reply: str, task_type: str) -> int:
    starts = (
        ['The last letter of "', '"', "The words are"]
        if task_type == "last_letter"
        else [p.start for p in COIN_PHRASINGS]
    )
    return next(i for i, s in enumerate(starts) if reply.startswith(s))


def test_greedy_uses_the_canonical_phrasing_whatever_the_sample_index(templates, task) -> None:
    lm = SimulatedLargeLM(error_rate=0.3)
    for e in task[:100]:
        prompt = templates.cot_prompt(e)
        greedy = lm.respond(prompt)
        assert _phrasing(greedy, e.type) == 0
        assert all(lm.respond(prompt, 0.0, i) == greedy for i in range(1, 5))


def test_samples_vary_in_phrasing_and_correctness(templates, task) -> None:
    n_phrasings = len(LAST_LETTER_PHRASINGS if task[0].type == "last_letter" else COIN_PHRASINGS)
    assert n_phrasings >= 3
    lm = SimulatedLargeLM(error_rate=0.3)
    used, varied_wording, varied_correctness = set(), 0, 0
    for e in task[:100]:
        replies = [lm.respond(templates.cot_prompt(e), 0.8, i) for i in range(6)]
        phrasings = {_phrasing(r, e.type) for r in replies}
        used |= phrasings
        varied_wording += len(phrasings) > 1
        varied_correctness += len({read_answer(e.answer_type, r) == e.answer for r in replies}) > 1
        # Same prompt, same sample: same reply.
        assert lm.respond(templates.cot_prompt(e), 0.8, 3) == replies[3]
    assert used == set(range(n_phrasings))
    assert varied_wording > 90
    assert varied_correctness > 50


def test_few_shot_prompt_is_answered_for_its_last_block(templates, task) -> None:
    lm = SimulatedLargeLM(error_rate=0.0)
    shots = task[-3:]
    for e in task[:50]:
        prompt = templates.few_shot_prompt(e, shots)
        assert prompt.count("Q: ") == 4
        assert lm.respond(prompt) == f"{e.rationale} So the answer is {e.answer}."
        lm.check_prompt(prompt)


# -- the answer step / guided prompt ------------------------------------------------------------

LL_WORDS = ["Bora", "Kethin", "Suth", "Drou"]  # -> "anhu"
LL_HAND = [
    'The last letter of "Bora" is "a". The last letter of "Kethin" is "n". The last letter of '
    '"Suth" is "h". The last letter of "Drou" is "u". Concatenating them gives "anhu".',
    '"Bora" ends with "a". "Kethin" ends with "n". "Suth" ends with "h". "Drou" ends with "u". '
    'Putting the letters together makes "anhu".',
    'The words are "Bora", "Kethin", "Suth" and "Drou". Their last letters are "a", "n", "h" and '
    '"u". Together they spell "anhu".',
]
LL_HAND_WRONG = [  # "Suth" read as ending in "t"; the answers follow the wrong step
    'The last letter of "Bora" is "a". The last letter of "Kethin" is "n". The last letter of '
    '"Suth" is "t". The last letter of "Drou" is "u". Concatenating them gives "antu".',
    '"Bora" ends with "a". "Kethin" ends with "n". "Suth" ends with "t". "Drou" ends with "u". '
    'Putting the letters together makes "antu".',
    'The words are "Bora", "Kethin", "Suth" and "Drou". Their last letters are "a", "n", "t" and '
    '"u". Together they spell "antu".',
]
COIN_PEOPLE, COIN_FLIPS = ["Tegou", "Drevei", "Habon"], [True, False, True]  # heads again: yes
COIN_HAND = [
    "The coin starts heads up. Tegou flips the coin, so it is now tails up. Drevei does not flip "
    "the coin, so it stays tails up. Habon flips the coin, so it is now heads up.",
    "At first the coin is heads up. After Tegou flips it, the coin is tails up. Drevei leaves it "
    "alone, so the coin is still tails up. After Habon flips it, the coin is heads up.",
    "We follow the coin from heads up. Tegou flipped it, which turns it tails up. Drevei did not "
    "flip it; it remains tails up. Habon flipped it, which turns it heads up.",
]
COIN_HAND_WRONG = [  # Drevei's non-flip misread as a flip
    "The coin starts heads up. Tegou flips the coin, so it is now tails up. Drevei flips the "
    "coin, so it is now heads up. Habon flips the coin, so it is now tails up.",
    "At first the coin is heads up. After Tegou flips it, the coin is tails up. After Drevei "
    "flips it, the coin is heads up. After Habon flips it, the coin is tails up.",
    "We follow the coin from heads up. Tegou flipped it, which turns it tails up. Drevei flipped "
    "it, which turns it heads up. Habon flipped it, which turns it tails up.",
]


def _example(kind: str) -> Example:
    if kind == "last_letter":
        return Example("h-ll", last_letter_question(LL_WORDS), "anhu", (), answer_type="string")
    return Example("h-cf", coin_question(COIN_PEOPLE, COIN_FLIPS), "yes", (), answer_type="yes_no")


def test_hand_built_rationales_are_the_module_phrasings() -> None:
    for i in range(3):
        assert LL_HAND[i] == last_letter_rationale(LL_WORDS, list("anhu"), i)
        assert LL_HAND_WRONG[i] == last_letter_rationale(LL_WORDS, list("antu"), i)
        assert COIN_HAND[i] == coin_rationale(COIN_PEOPLE, COIN_FLIPS, i)
        assert COIN_HAND_WRONG[i] == coin_rationale(COIN_PEOPLE, [True, True, True], i)


@pytest.mark.parametrize("kind", ["last_letter", "coin_flip"])
@pytest.mark.parametrize("accuracy", [0.0, 1.0])
def test_hand_rationales_decide_the_answer(templates, kind, accuracy) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=accuracy)
    e = _example(kind)
    right, wrong = (
        (LL_HAND, LL_HAND_WRONG) if kind == "last_letter" else (COIN_HAND, COIN_HAND_WRONG)
    )
    for good, bad in zip(right, wrong):
        for prompt in (templates.guided_prompt(e, good), templates.answer_step_prompt(e, good)):
            reply = lm.respond(prompt)
            assert reply == f" {e.answer}."
            assert read_answer(e.answer_type, reply) == e.answer
        bad_reply = lm.respond(templates.guided_prompt(e, bad))
        assert read_answer(e.answer_type, bad_reply) != e.answer
        assert bad_reply == (" antu." if kind == "last_letter" else " no.")
    # Free wording works as long as the steps are stated.
    free = (
        "Bora's last letter is a, Kethin ends in n. Suth ends in the letter h. Drou: u."
        if kind == "last_letter"
        else "Tegou flips it, so tails. Drevei doesn't flip. Habon flips, so it is heads up again."
    )
    assert lm.respond(templates.guided_prompt(e, free)) == f" {e.answer}."


@pytest.mark.parametrize("phrasing", [0, 1, 2])
def test_rationales_in_every_phrasing_are_trusted(templates, task, phrasing) -> None:
    trusting_right = SimulatedLargeLM(unassisted_accuracy=0.0)
    trusting_wrong = SimulatedLargeLM(unassisted_accuracy=1.0)
    for i, e in enumerate(task[:150]):
        good = build_rationale(e, phrasing)
        assert trusting_right.respond(templates.guided_prompt(e, good)) == f" {e.answer}."
        bad = build_rationale(e, phrasing, wrong_step=i % 4)
        reply = trusting_wrong.respond(templates.guided_prompt(e, bad))
        assert read_answer(e.answer_type, reply) != e.answer, (bad, reply)


def test_zero_shot_cot_answer_step_follows_the_teacher(templates, task) -> None:
    lm = SimulatedLargeLM(error_rate=0.3, unassisted_accuracy=0.5)
    for e in task[:150]:
        for i in range(3):
            completion = lm.respond(templates.cot_prompt(e), 0.7, i)
            step = templates.answer_step_prompt(e, completion)
            lm.check_prompt(step)
            reply = lm.respond(step)
            assert read_answer(e.answer_type, reply) == read_answer(e.answer_type, completion)


@pytest.mark.parametrize("useless", ["", "I do not know.", "Let me think about the words."])
def test_useless_rationale_answers_like_the_standard_prompt(templates, task, useless) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.5)
    for e in task:
        assert lm.respond(templates.guided_prompt(e, useless)) == lm.respond(
            templates.standard_prompt(e)
        )


def test_partial_last_letter_rationale_falls_back_per_word(templates, last_letters) -> None:
    for accuracy in (0.0, 0.5, 1.0):
        lm = SimulatedLargeLM(unassisted_accuracy=accuracy)
        for e in last_letters:
            words = words_of(e)
            own = lm.respond(templates.standard_prompt(e)).strip(" .")
            # The first two words stated, the first one wrongly: those letters are taken as
            # stated, the others are what it would say on its own.
            partial = f'The last letter of "{words[0]}" is "x". "{words[1]}" ends with "q".'
            reply = lm.respond(templates.guided_prompt(e, partial)).strip(" .")
            assert reply == "xq" + own[2:], (e.question, reply, own)
            if accuracy == 1.0:
                assert own == e.answer
    # Incomplete steps and a stated concatenation: it takes the concatenation.
    e = _example("last_letter")
    lm = SimulatedLargeLM(unassisted_accuracy=1.0)
    stated = 'The last letter of "Bora" is "a". Concatenating them gives "abcd".'
    assert lm.respond(templates.guided_prompt(e, stated)) == " abcd."


def test_partial_coin_rationale_replays_from_the_last_stated_state(templates, coins) -> None:
    right = SimulatedLargeLM(unassisted_accuracy=1.0)
    for e in coins:
        people, flips = moves_of(e)
        full = build_rationale(e, 0).split(". ")
        half = ". ".join(full[:3]).rstrip(".") + "."  # start, the first two people
        assert read_coin_rationale(half, people).states[2:] == [None, None]
        assert right.respond(templates.guided_prompt(e, half)) == f" {e.answer}."
        # A wrong state for the second person carries over to the answer.
        flipped = half.replace("heads", "@").replace("tails", "heads").replace("@", "tails")
        flipped = flipped.replace("starts tails", "starts heads")
        assert right.respond(templates.guided_prompt(e, flipped)) != f" {e.answer}."
    # Coverage of the fallback: with only the first two people stated, an unreliable model is
    # right when its own slip falls on a stated person, about half the time.
    lm = SimulatedLargeLM(unassisted_accuracy=0.0)
    hits = 0
    for e in coins:
        half = ". ".join(build_rationale(e, 1).split(". ")[:3]).rstrip(".") + "."
        hits += lm.respond(templates.guided_prompt(e, half)) == f" {e.answer}."
    assert abs(hits / N - 0.5) < 0.08
    # Stated moves without states are replayed; an incomplete rationale's stated answer is used.
    e = _example("coin_flip")
    moves = "Tegou flips the coin. Drevei does not flip the coin. Habon flips the coin."
    assert lm.respond(templates.guided_prompt(e, moves)) == " yes."
    assert lm.respond(templates.guided_prompt(e, "Tegou flips it. So the answer is no.")) == " no."
    assert lm.respond(templates.guided_prompt(e, "Tegou flips it. It ends heads up.")) == " yes."


# -- answering without help ---------------------------------------------------------------------


@pytest.mark.parametrize("accuracy", [0.5, 0.8])
def test_unassisted_accuracy(templates, task, accuracy) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=accuracy)
    replies = [lm.respond(templates.standard_prompt(e)) for e in task]
    answers = [read_answer(e.answer_type, r) for e, r in zip(task, replies)]
    assert all(re.fullmatch(r" [a-z]+\.", r) for r in replies)
    assert abs(sum(a == e.answer for a, e in zip(answers, task)) / N - accuracy) < 0.07
    for a, e in zip(answers, task):
        if e.type == "last_letter":  # wrong answers are one letter off
            assert len(a) == len(e.answer)
            assert sum(x != y for x, y in zip(a, e.answer)) <= 1
        else:
            assert a in ("yes", "no")


def test_unassisted_extremes(templates, task) -> None:
    always, never = (
        SimulatedLargeLM(unassisted_accuracy=1.0),
        SimulatedLargeLM(unassisted_accuracy=0.0),
    )
    for e in task:
        assert read_answer(e.answer_type, always.respond(templates.standard_prompt(e))) == e.answer
        assert read_answer(e.answer_type, never.respond(templates.standard_prompt(e))) != e.answer


def test_seed_changes_the_draws(templates, last_letters) -> None:
    a, b = SimulatedLargeLM(seed=0), SimulatedLargeLM(seed=1)
    prompts = [templates.standard_prompt(e) for e in last_letters]
    assert [a.respond(p) for p in prompts] != [b.respond(p) for p in prompts]


# -- through the teacher ------------------------------------------------------------------------


@pytest.mark.parametrize("prompting", ["zero_shot_cot", "few_shot_cot"])
def test_teacher_promptings_on_the_reasoning_tasks(templates, task, prompting) -> None:
    lm = SimulatedLargeLM(error_rate=0.2)
    examples = task[:200]
    shots = few_shot_exemplars(task[200:], 3, seed=0) if prompting == "few_shot_cot" else None
    out = sample_rationales(
        examples,
        lm,
        templates,
        num_samples=2,
        temperature=0.7,
        prompting=prompting,
        exemplars=shots,
    )
    assert len(out) == 400
    assert abs(sum(r.correct for r in out) / 400 - 0.8) < 0.07
    for r in out:
        assert "So the answer is" not in r.rationale and r.rationale


# -- prompts it cannot read ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        (
            "Q: Natalia sold clips to 48 of her friends. How many clips did she sell?\n"
            "A: Let's think step by step.",
            "last_letter",
        ),
        (
            'Q: Take the first letters of the words in "Bora Suth" and concatenate them.\nA:',
            "coin_flip",
        ),
        (
            "Q: A coin is heads up. Bora spins the coin. Is the coin still heads up?\nA:",
            "last_letter",
        ),
        ('Q: Take the last letters of the words in "Bora Suth" and concatenate them.', "'A:'"),
        (
            'Q: Take the last letters of the words in "Bora Suth" and concatenate them.\n'
            "A: Please explain",
            "expects",
        ),
    ],
)
def test_unreadable_prompts_raise(prompt, match) -> None:
    lm = SimulatedLargeLM()
    with pytest.raises(BackendError, match=match):
        lm.respond(prompt)
    with pytest.raises(BackendError, match=match):
        lm.check_prompt(prompt)
    with pytest.raises(BackendError, match=match):
        lm.generate([prompt], GenerationParams())


# -- zero-shot-CoT's answer step on the synthetic QA --------------------------------------------


@pytest.fixture(scope="module")
def qa_examples() -> list[Example]:
    return SyntheticMultiHop(n_train=0, n_val=0, n_test=200, seed=21).load_splits().test


def test_qa_answer_step_reads_the_completion_as_a_rationale(qa_examples) -> None:
    qa = PromptTemplates(**config_group("prompt"))
    clean = SimulatedLargeLM(error_rate=0.0)
    noisy = SimulatedLargeLM(error_rate=1.0, unassisted_accuracy=0.5)
    helpless = SimulatedLargeLM(unassisted_accuracy=0.0)
    for e in qa_examples:
        completion = clean.respond(qa.cot_prompt(e))
        step = qa.answer_step_prompt(e, completion)
        assert step.endswith(
            "Answer: Let's think step by step. " + completion + "\nTherefore, the answer is"
        )
        helpless.check_prompt(step)
        assert helpless.respond(step) == e.answer, e.id
        # Exactly what the guided prompt gives with that completion as its rationale.
        rationale = split_rationale_answer(completion)[0]
        assert helpless.respond(step) == helpless.respond(qa.guided_prompt(e, rationale))
        corrupted = noisy.respond(qa.cot_prompt(e))
        assert noisy.respond(qa.answer_step_prompt(e, corrupted)) == noisy.respond(
            qa.guided_prompt(e, split_rationale_answer(corrupted)[0])
        )
        # An empty completion helps no more than no rationale.
        assert noisy.respond(qa.answer_step_prompt(e, "")) == noisy.respond(qa.standard_prompt(e))
