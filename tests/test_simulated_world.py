"""The offline world's forms and effects: the simulated teacher writes in the forms `large_lm.style`
gives it, and each `large_lm.reader` effect moves the answers the way its YAML comment says."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

import pytest
from conftest import config_group
from test_simulated import bridge_chain, gold_rationale

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.data.example import Example
from lmgcot.data.synthetic import RELATION_TYPES, RELATIONS, SyntheticMultiHop
from lmgcot.errors import BackendError
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.llm.simulated_prompt import parse_facts, read_statements
from lmgcot.llm.simulated_writer import RationaleStyle
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.text import sentences

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
STYLE_KEYS = list(RationaleStyle.__dataclass_fields__)


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return PromptTemplates(**config_group("prompt"))


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return SyntheticMultiHop(n_train=0, n_val=0, n_test=400, seed=31).load_splits().test


@pytest.fixture(scope="module")
def bridges() -> list[Example]:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=300, seed=32, type_mix={"bridge": 1})
    return ds.load_splits().test


def default_world(**overrides) -> SimulatedLargeLM:
    """The large LM as conf/large_lm/simulated.yaml sets it up."""
    cfg = {k: v for k, v in config_group("large_lm").items() if not k.startswith("_")}
    return SimulatedLargeLM(**cfg | overrides)


def reader(unassisted: float = 0.0, **effects) -> SimulatedLargeLM:
    return SimulatedLargeLM(unassisted_accuracy=unassisted, reader=effects)


def teacher(**style) -> SimulatedLargeLM:
    return SimulatedLargeLM(error_rate=0.0, style=style)


def share(flags) -> float:
    return statistics.fmean(float(f) for f in flags)


def second_hops_of_others(e: Example) -> list[tuple[str, str, str]]:
    """Context facts of the second hop's relation about entities off the gold chain."""
    rel, start, bridge = bridge_chain(e)
    return [
        (r, s, o)
        for p in e.context
        for r, s, o in parse_facts(p.text)
        if r != rel and s not in (start, bridge)
    ]


# -- reading the text ----------------------------------------------------------------------------


@pytest.mark.parametrize("relation", list(RELATIONS))
def test_every_phrasing_reads_back_as_its_fact(relation: str) -> None:
    s_type, o_type = RELATION_TYPES[relation]
    names = {"film": "Letters from Kaido", "person": "Brai Tosh", "studio": "Dou Films"}
    names |= {"city": "Falem", "country": "Drakou", "year": "1957"}
    s, o = names[s_type], names[o_type]
    for i, _ in enumerate(RELATIONS[relation].phrasings):
        text = RELATIONS[relation].render(s, o, i)
        assert parse_facts(text) == [(relation, s, o)], text
        assert parse_facts("First, " + text[0].lower() + text[1:]) == [(relation, s, o)]


def test_hedges_are_read_as_hedged_and_clauses_as_two_facts() -> None:
    text = (
        "I think Night of Bro is a film directed by Kai Tam, who was born in Falem. "
        "Then, Sou Films was founded by Ra Ko, and Ra Ko is from Tul. Nonsense here."
    )
    got = [(s.triple, s.hedged) for s in read_statements(text)]
    assert got == [
        (("directed_by", "Night of Bro", "Kai Tam"), True),
        (("born_in", "Kai Tam", "Falem"), True),
        (("founded_by", "Sou Films", "Ra Ko"), False),
        (("born_in", "Ra Ko", "Tul"), False),
    ]


# -- the teacher's forms --------------------------------------------------------------------------


@pytest.mark.parametrize("key", STYLE_KEYS)
def test_each_form_appears_at_probability_one_and_never_at_zero(templates, examples, key) -> None:
    never, always = teacher(), teacher(**{key: 1.0})
    changed = [
        never.respond(templates.cot_prompt(e)) != always.respond(templates.cot_prompt(e))
        for e in examples
    ]
    # A form changes the text wherever it applies (a missing hop needs two chain facts, a
    # distractor an off-chain fact, which every example has).
    assert share(changed) > 0.9, key


def test_form_probabilities_set_how_often_each_form_is_written(templates, examples) -> None:
    lm = teacher(restate_question=0.3, compressed=0.5, connectives=0.4)
    texts = [split_rationale_answer(lm.respond(templates.cot_prompt(e)))[0] for e in examples]
    assert abs(share(t.startswith(("The question", "We need")) for t in texts) - 0.3) < 0.07
    plain = [t for t in texts if not t.startswith(("The question", "We need"))]
    assert abs(share(len(sentences(t)) == 1 for t in plain) - 0.5) < 0.08
    # Connectives only where there are two sentences or more.
    multi = [t for t in plain if len(sentences(t)) > 1]
    assert abs(share(t.startswith("First,") for t in multi) - 0.4) < 0.1


def test_forms_keep_the_facts_and_the_conclusion(templates, examples) -> None:
    # Form changes that add or remove no fact leave the chain and the answer as they were.
    style = dict(paraphrase=1.0, reverse_order=1.0, restate_question=1.0, connectives=0.5)
    style |= dict(compressed=0.5, hedge=0.5, other_conclusion=1.0)
    plain, styled = teacher(), teacher(**style)
    for e in examples:
        a = split_rationale_answer(plain.respond(templates.cot_prompt(e)))
        b = split_rationale_answer(styled.respond(templates.cot_prompt(e)))
        assert b[1] == a[1] == e.answer, e.id
        assert set(parse_facts(b[0])) == set(parse_facts(a[0])), (e.id, b[0])
        assert b[0] != a[0]


def test_greedy_gives_one_form_and_samples_vary_in_form(templates, examples) -> None:
    lm = default_world()
    prompt = templates.cot_prompt(examples[0])
    assert len({lm.respond(prompt, 0.0, i) for i in range(5)}) == 1
    distinct = []
    for e in examples[:100]:
        samples = [lm.respond(templates.cot_prompt(e), 0.7, i) for i in range(4)]
        distinct.append(len({len(sentences(s)) for s in samples}) > 1)
    # Samples differ in their number of sentences, not only in names.
    assert share(distinct) > 0.5


def test_missing_hop_states_one_fact_and_contradiction_two_values(templates, bridges) -> None:
    missing, contradicting = teacher(missing_hop=1.0), teacher(contradiction=1.0)
    for e in bridges[:50]:
        r = split_rationale_answer(missing.respond(templates.cot_prompt(e)))[0]
        assert len(parse_facts(r)) == 1
        r = split_rationale_answer(contradicting.respond(templates.cot_prompt(e)))[0]
        facts = parse_facts(r)
        keys = [(rel, s) for rel, s, _ in facts]
        assert len(facts) == 3 and len(set(keys)) == 2, r


# -- the reader's effects -------------------------------------------------------------------------


def test_stated_distractors_pull_the_reader_away_more_often_the_more_there_are(
    templates, bridges
) -> None:
    def wrong_share(pull: float, n_distractors: int) -> float:
        lm = reader(distractor_pull=pull)
        out = []
        for e in bridges:
            extras = " ".join(RELATIONS[r].render(s, o) for r, s, o in second_hops_of_others(e))
            extras = " ".join(sentences(extras)[:n_distractors])
            out.append(
                lm.respond(templates.guided_prompt(e, f"{gold_rationale(templates, e)} {extras}"))
                != e.answer
            )
        return share(out)

    assert wrong_share(0.0, 2) == 0.0
    one, two = wrong_share(0.4, 1), wrong_share(0.4, 2)
    assert abs(one - 0.4) < 0.09 and abs(two - (1 - 0.6**2)) < 0.09
    assert two > one + 0.1


def test_conflict_with_the_context_makes_the_reader_answer_on_its_own(templates, bridges) -> None:
    def followed_and_alone(fallback: float) -> tuple[float, float]:
        lm = reader(unassisted=1.0, context_conflict_fallback=fallback)
        followed, alone = [], []
        for e in bridges:
            rel, start, _ = bridge_chain(e)
            wrong_bridge = second_hops_of_others(e)[0][1]
            answer = lm.respond(
                templates.guided_prompt(e, RELATIONS[rel].render(start, wrong_bridge))
            )
            followed.append(answer != e.answer)
            alone.append(answer == e.answer)  # the unassisted reader is always right here
        return share(followed), share(alone)

    assert followed_and_alone(0.0) == (1.0, 0.0)
    assert followed_and_alone(1.0) == (0.0, 1.0)
    followed, alone = followed_and_alone(0.5)
    assert abs(alone - 0.5) < 0.1 and followed + alone == pytest.approx(1.0)


def test_a_self_contradicting_rationale_makes_the_reader_answer_on_its_own(
    templates, bridges
) -> None:
    def right(fallback: float) -> float:
        lm = reader(unassisted=0.0, self_contradiction_fallback=fallback)
        out = []
        for e in bridges:
            rel, start, bridge = bridge_chain(e)
            other = second_hops_of_others(e)[0][1]
            # Right bridge first: read as it stands, the rationale gives the right answer; the
            # unassisted reader is always wrong here.
            text = f"{RELATIONS[rel].render(start, bridge)} {RELATIONS[rel].render(start, other)}"
            out.append(lm.respond(templates.guided_prompt(e, text)) == e.answer)
        return share(out)

    assert right(0.0) == 1.0 and right(1.0) == 0.0
    assert abs(right(0.8) - 0.2) < 0.08


def test_hedged_facts_are_trusted_less(templates, bridges) -> None:
    def right(trust: float) -> float:
        lm = reader(unassisted=0.0, hedge_trust=trust)
        out = []
        for e in bridges:
            rel, start, bridge = bridge_chain(e)
            text = "I think " + RELATIONS[rel].render(start, bridge)
            out.append(lm.respond(templates.guided_prompt(e, text)) == e.answer)
        return share(out)

    assert right(1.0) == 1.0 and right(0.0) == 0.0
    assert abs(right(0.6) - 0.6) < 0.09


def test_long_rationales_lose_a_hop(templates, bridges) -> None:
    def texts(padding: int) -> list[str]:
        filler = " ".join(["We look at the context carefully."] * padding)
        return [f"{filler} {gold_rationale(templates, e)}".strip() for e in bridges]

    def right(free_words: int, loss: float, padding: int) -> float:
        lm = reader(unassisted=0.0, length_free_words=free_words, length_hop_loss=loss)
        return share(
            lm.respond(templates.guided_prompt(e, t)) == e.answer
            for e, t in zip(bridges, texts(padding))
        )

    def expected_loss(free_words: int, loss: float, padding: int) -> float:
        return statistics.fmean(
            min(1.0, max(0, len(t.split()) - free_words) * loss) for t in texts(padding)
        )

    # Within the words it reads without losing track, nothing is lost.
    assert right(10_000, 0.01, 8) == 1.0
    # Beyond them, the first hop is lost at the per-word rate: a short rationale seldom, one
    # padded to ~60 words more often than not.
    for free_words, padding in ((0, 0), (0, 8), (20, 8)):
        lost = 1.0 - right(free_words, 0.01, padding)
        assert abs(lost - expected_loss(free_words, 0.01, padding)) < 0.08
    assert 1.0 - right(0, 0.01, 8) > 1.0 - right(0, 0.01, 0) + 0.3
    assert right(0, 1.0, 0) == 0.0


def test_text_it_cannot_read_is_ignored(templates, examples) -> None:
    lm = default_world(unassisted_accuracy=0.0)
    for e in examples[:100]:
        text = f"{gold_rationale(templates, e)} Zorp blik the mumble."
        assert lm.respond(templates.guided_prompt(e, text)) == e.answer, e.id


def test_the_reader_reads_no_quality_measure() -> None:
    """Quality and accuracy must meet in the data, not by construction."""
    for module in ("simulated", "simulated_prompt", "simulated_reader", "simulated_writer"):
        tree = ast.parse((REPO_ROOT / "lmgcot" / "llm" / f"{module}.py").read_text())
        imported = [
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        ] + [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("lmgcot.rewards")], module


# -- the calibrated regime and bad settings -------------------------------------------------------


def test_default_world_is_in_the_papers_regime(templates) -> None:
    test = SyntheticMultiHop(n_train=0, n_val=0, n_test=600, seed=0).load_splits().test
    lm = default_world()
    standard = share(lm.respond(templates.standard_prompt(e)) == e.answer for e in test)
    cot = []
    for e in test:
        rationale = split_rationale_answer(lm.respond(templates.cot_prompt(e)))[0]
        cot.append(lm.respond(templates.guided_prompt(e, rationale)) == e.answer)
    assert abs(standard - 0.5) < 0.05
    assert share(cot) <= standard + 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"style": {"hedge": 1.5}}, "large_lm.style.hedge=1.5: must be within [0, 1]"),
        ({"style": {"colour": 0.1}}, "large_lm.style: unknown key(s) ['colour']"),
        ({"reader": {"distractor_pull": -0.1}}, "large_lm.reader.distractor_pull=-0.1"),
        ({"reader": {"length_free_words": -2}}, "large_lm.reader.length_free_words=-2"),
        ({"reader": {"length_free_words": 2.5}}, "must be an integer >= 0"),
    ],
)
def test_bad_world_settings_are_refused_in_one_line(kwargs, message) -> None:
    with pytest.raises(BackendError) as err:
        SimulatedLargeLM(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
