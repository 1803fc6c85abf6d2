"""The seeded synthetic multi-hop generator: determinism, sizes, type mix, gold chains, errors."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from lmgcot.data.example import Example
from lmgcot.data.synthetic import (
    BRIDGES,
    COMPARISONS,
    QUESTION_TYPES,
    RELATIONS,
    YES_NO,
    SyntheticMultiHop,
)
from lmgcot.errors import ConfigError
from lmgcot.llm.simulated_prompt import parse_facts

pytestmark = pytest.mark.unit

# Fixed words the generator puts around invented names ("Night of X", "Y Studios").
FILM_PREFIXES = ("Night of", "Return to", "The", "Song of", "Beyond", "Letters from")
STUDIO_SUFFIXES = ("Pictures", "Studios", "Films")


def _template_rx(template: str) -> re.Pattern:
    rx = re.escape(template).replace(r"\{x\}", "(?P<x>.+?)").replace(r"\{y\}", "(?P<y>.+?)")
    return re.compile("^" + rx + "$")


QUESTION_FORMS = (
    [("bridge", (r1, r2), _template_rx(t)) for t, r1, r2 in BRIDGES]
    + [("comparison", (rel,), _template_rx(t)) for t, rel in COMPARISONS]
    + [("yes_no", (rel,), _template_rx(t)) for t, rel in YES_NO]
)


def read_question(question: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(kind, relations, entities) of a synthetic question, read from its surface form."""
    for kind, rels, rx in QUESTION_FORMS:
        m = rx.match(question)
        if m:
            ents = tuple(v for v in (m.groupdict().get("x"), m.groupdict().get("y")) if v)
            return kind, rels, ents
    raise AssertionError(f"question follows no synthetic template: {question!r}")


def make(seed: int = 0, **kwargs) -> SyntheticMultiHop:
    sizes = {"n_train": 20, "n_val": 5, "n_test": 10}
    sizes.update(kwargs)
    return SyntheticMultiHop(seed=seed, **sizes)


def all_examples(splits) -> list[Example]:
    return [e for _, xs in splits.items() for e in xs]


@pytest.fixture(scope="module")
def default_test_split() -> list[Example]:
    """400 examples with the default type mix and two distractors."""
    return SyntheticMultiHop(n_train=0, n_val=0, n_test=400, seed=3).load_splits().test


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_splits() -> None:
    a = make(seed=7).load_splits()
    b = make(seed=7).load_splits()
    assert a.train == b.train
    assert a.val == b.val
    assert a.test == b.test
    # Loading twice from one object is also stable.
    ds = make(seed=7)
    assert ds.load_splits() == ds.load_splits()


def test_different_seed_gives_different_examples() -> None:
    a = make(seed=1).load_splits()
    b = make(seed=2).load_splits()
    for split in ("train", "val", "test"):
        qa = [e.question for e in getattr(a, split)]
        qb = [e.question for e in getattr(b, split)]
        assert qa != qb, split
        assert not set(qa) & set(qb), split


def test_splits_are_disjoint_and_ids_name_their_split() -> None:
    splits = make(seed=0, n_train=30, n_val=30, n_test=30).load_splits()
    # Pooled names may repeat a question, never a whole example (its facts are drawn afresh).
    examples = Counter((e.question, e.context) for e in all_examples(splits))
    assert max(examples.values()) == 1
    fresh = make(seed=0, n_train=30, n_val=30, n_test=30, names="fresh").load_splits()
    assert max(Counter(e.question for e in all_examples(fresh)).values()) == 1
    for split, xs in splits.items():
        assert [e.id for e in xs] == [f"syn-{split}-{i:05d}" for i in range(len(xs))]


def test_a_split_does_not_depend_on_the_other_split_sizes() -> None:
    small = make(seed=4, n_train=3, n_val=1, n_test=12).load_splits()
    big = make(seed=4, n_train=40, n_val=9, n_test=12).load_splits()
    assert small.test == big.test
    assert big.train[:3] == small.train
    assert big.val[:1] == small.val


# -- sizes and caps -----------------------------------------------------------------------------


def test_sizes_follow_config() -> None:
    splits = make(n_train=13, n_val=0, n_test=4).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (13, 0, 4)
    default = SyntheticMultiHop()
    assert default.sizes == {"train": 800, "val": 100, "test": 200}


def test_caps_take_a_prefix_of_each_split() -> None:
    full = make(seed=5, n_train=20, n_val=6, n_test=10).load_splits()
    capped = make(seed=5, n_train=20, n_val=6, n_test=10, max_train=7, max_val=0, max_test=100)
    got = capped.load_splits()
    assert got.train == full.train[:7]
    assert got.val == []
    assert got.test == full.test  # a cap above the size changes nothing


# -- question types -----------------------------------------------------------------------------


def test_default_mix_gives_roughly_half_bridge_and_a_quarter_of_each_other(
    default_test_split,
) -> None:
    kinds = Counter(read_question(e.question)[0] for e in default_test_split)
    n = len(default_test_split)
    assert set(kinds) == set(QUESTION_TYPES)
    assert abs(kinds["bridge"] / n - 0.5) < 0.08, kinds
    assert abs(kinds["comparison"] / n - 0.25) < 0.07, kinds
    assert abs(kinds["yes_no"] / n - 0.25) < 0.07, kinds


def test_custom_mix_is_followed() -> None:
    ds = SyntheticMultiHop(
        n_train=0, n_val=0, n_test=400, seed=11, type_mix={"bridge": 0.2, "comparison": 0.8}
    )
    kinds = Counter(read_question(e.question)[0] for e in ds.load_splits().test)
    assert kinds["yes_no"] == 0
    assert abs(kinds["bridge"] / 400 - 0.2) < 0.07, kinds
    assert abs(kinds["comparison"] / 400 - 0.8) < 0.07, kinds


@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_single_type_mix_gives_only_that_question_form(kind: str) -> None:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=60, seed=2, type_mix={kind: 1.0})
    examples = ds.load_splits().test
    assert {read_question(e.question)[0] for e in examples} == {kind}
    if kind == "yes_no":
        assert {e.answer for e in examples} == {"yes", "no"}
    else:
        assert not {e.answer for e in examples} & {"yes", "no"}


@pytest.mark.parametrize(
    "kind",
    ["bridge", "comparison", "yes_no"],
)
def test_single_type_mix_labels_examples_with_that_type(kind: str) -> None:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=30, seed=2, type_mix={kind: 1.0})
    assert {e.type for e in ds.load_splits().test} == {kind}


def test_every_example_type_is_a_known_question_type(default_test_split) -> None:
    assert {e.type for e in default_test_split} <= set(QUESTION_TYPES)
    bridge_form = {e.id for e in default_test_split if read_question(e.question)[0] == "bridge"}
    bridge_label = {e.id for e in default_test_split if e.type == "bridge"}
    assert bridge_form == bridge_label


# -- gold paragraphs and answers ----------------------------------------------------------------


def test_supporting_facts_resolve_to_real_sentences(default_test_split) -> None:
    for e in default_test_split:
        titles = [p.title for p in e.context]
        assert len(titles) == len(set(titles)), e.id
        by_title = {p.title: p for p in e.context}
        assert len(e.supporting_facts) == 2, e.id
        for fact in e.supporting_facts:
            assert fact.title in by_title, (e.id, fact)
            assert 0 <= fact.sent_id < len(by_title[fact.title].sentences), (e.id, fact)
        gold = e.supporting_paragraphs()
        assert len(gold) == 2, e.id
        assert {p.title for p in gold} == {f.title for f in e.supporting_facts}
        for p in gold:
            assert len(p.sentences) == 1
            assert p.sentences[0] in by_title[p.title].sentences
            # Each supporting sentence is a fact in the synthetic templates.
            assert len(parse_facts(p.sentences[0])) == 1, p.sentences[0]


def _gold_facts(e: Example) -> dict[tuple[str, str], str]:
    facts = {}
    for p in e.supporting_paragraphs():
        for rel, s, o in parse_facts(p.text):
            facts[(rel, s)] = o
    return facts


def test_gold_answer_follows_from_gold_paragraphs(default_test_split) -> None:
    seen = Counter()
    for e in default_test_split:
        kind, rels, ents = read_question(e.question)
        facts = _gold_facts(e)
        assert len(facts) == 2, e.id
        if kind == "bridge":
            r1, r2 = rels
            (x,) = ents
            bridge = facts[(r1, x)]
            assert facts[(r2, bridge)] == e.answer, e.id
            assert len({x, bridge, e.answer}) == 3, e.id
        elif kind == "comparison":
            x, y = ents
            ya, yb = int(facts[(rels[0], x)]), int(facts[(rels[0], y)])
            assert ya != yb, e.id  # the question has one right answer
            assert e.answer == (x if ya < yb else y), e.id
        else:
            x, y = ents
            same = facts[(rels[0], x)] == facts[(rels[0], y)]
            assert e.answer == ("yes" if same else "no"), e.id
        seen[kind] += 1
    assert set(seen) == set(QUESTION_TYPES)


def test_yes_no_answers_are_balanced(default_test_split) -> None:
    answers = Counter(e.answer for e in default_test_split if e.answer in ("yes", "no"))
    total = sum(answers.values())
    assert total > 50
    assert 0.3 < answers["yes"] / total < 0.7, answers


def test_sentences_use_the_relation_templates(default_test_split) -> None:
    templates = [r.template for r in RELATIONS.values()]
    for e in default_test_split:
        for p in e.context:
            (rel, s, o) = parse_facts(p.text)[0]
            assert RELATIONS[rel].render(s, o) == p.text
            assert RELATIONS[rel].template in templates
            assert p.title == s  # a paragraph is about its subject


def _invented_words(name: str) -> list[str]:
    for prefix in FILM_PREFIXES:
        if name.startswith(prefix + " "):
            name = name[len(prefix) + 1 :]
            break
    for suffix in STUDIO_SUFFIXES:
        if name.endswith(" " + suffix):
            name = name[: -len(suffix) - 1]
            break
    return name.split()


def test_names_are_distinct_within_an_example(default_test_split) -> None:
    for e in default_test_split:
        entities = set()
        for p in e.context:
            for _, s, o in parse_facts(p.text):
                entities.add(s)
                if not o.isdigit():
                    entities.add(o)
        kind, _, ents = read_question(e.question)
        if len(ents) == 2:
            assert ents[0] != ents[1], e.id
        # No invented word is shared by two different entities, so names cannot be confused.
        owner: dict[str, str] = {}
        for name in entities:
            for word in _invented_words(name):
                assert owner.setdefault(word, name) == name, (e.id, word, name, owner[word])


class _RepeatingRng(random.Random):
    """Draws the same first option for `repeat` choices, then behaves like a seeded Random."""

    def __init__(self, repeat: int):
        super().__init__(0)
        self.left = repeat

    def choice(self, seq):
        if self.left > 0:
            self.left -= 1
            return seq[0]
        return super().choice(seq)


def test_name_maker_redraws_a_name_already_used() -> None:
    from lmgcot.data.synthetic import _NameMaker

    names = _NameMaker(_RepeatingRng(repeat=10))  # a two-syllable word takes five choices
    first, second = names.word(2), names.word(2)
    assert first == "Baba"
    assert second != first


def test_names_differ_across_examples() -> None:
    examples = make(seed=0, n_train=0, n_val=0, n_test=50).load_splits().test
    first_entities = [read_question(e.question)[2][0] for e in examples]
    assert len(set(first_entities)) > 45


# -- distractors --------------------------------------------------------------------------------


@pytest.mark.parametrize("n_distractors", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_distractor_count(kind: str, n_distractors: int) -> None:
    ds = SyntheticMultiHop(
        n_train=0, n_val=0, n_test=15, seed=9, n_distractors=n_distractors, type_mix={kind: 1}
    )
    for e in ds.load_splits().test:
        gold_titles = {f.title for f in e.supporting_facts}
        assert len(e.context) == 2 + n_distractors, e.id
        distractors = [p for p in e.context if p.title not in gold_titles]
        assert len(distractors) == n_distractors, e.id


def test_distractors_give_a_lost_reader_a_plausible_answer_but_no_competing_chain() -> None:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=60, seed=6)
    for e in ds.load_splits().test:
        kind, rels, _ = read_question(e.question)
        gold_titles = {f.title for f in e.supporting_facts}
        facts = [parse_facts(p.text)[0] for p in e.context if p.title not in gold_titles]
        if kind == "bridge":
            # Second-hop facts about other entities; never another first hop.
            assert {rel for rel, _, _ in facts} == {rels[1]}, e.id
            assert e.answer not in {o for _, _, o in facts}, e.id
        else:
            assert rels[0] not in {rel for rel, _, _ in facts}, e.id


@pytest.mark.parametrize("kind", QUESTION_TYPES)
def test_context_order_is_shuffled(kind: str) -> None:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=60, seed=0, type_mix={kind: 1})
    examples = ds.load_splits().test
    for fact_index in (0, 1):
        positions = Counter(
            [p.title for p in e.context].index(e.supporting_facts[fact_index].title)
            for e in examples
        )
        assert len(positions) == len(examples[0].context), positions


# -- bad configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["n_train", "n_val", "n_test", "n_distractors"])
def test_negative_size_raises_config_error_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"dataset\.{key}=-1"):
        SyntheticMultiHop(**{key: -1})


@pytest.mark.parametrize(
    "mix",
    [
        {"bridge": 1.0, "multihop": 1.0},
        {"bridge": 0.0, "comparison": 0.0, "yes_no": 0.0},
        {"bridge": 1.0, "comparison": -0.5},
    ],
    ids=["unknown-key", "all-zero", "negative-weight"],
)
def test_bad_type_mix_raises_config_error_naming_the_key(mix: dict) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.type_mix") as info:
        SyntheticMultiHop(type_mix=mix)
    for key in mix:
        assert key in str(info.value)


def test_bad_context_mode_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.context"):
        SyntheticMultiHop(context="gold")
