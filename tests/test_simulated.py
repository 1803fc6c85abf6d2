"""The `simulated` large LM against the contract in its module docstring."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import config_group

from lmgcot.answers.extract import extract_answer, split_rationale_answer
from lmgcot.data.example import Example
from lmgcot.data.synthetic import RELATIONS, SyntheticMultiHop
from lmgcot.errors import BackendError
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.cache import CallCache
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.llm.simulated_prompt import parse_facts
from lmgcot.prompts import COT_TRIGGER, PromptTemplates

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
N = 400


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return PromptTemplates(**config_group("prompt"))


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return SyntheticMultiHop(n_train=0, n_val=0, n_test=N, seed=21).load_splits().test


@pytest.fixture(scope="module")
def bridges() -> list[Example]:
    ds = SyntheticMultiHop(n_train=0, n_val=0, n_test=150, seed=22, type_mix={"bridge": 1})
    return ds.load_splits().test


def kind_of(e: Example) -> str:
    if e.type == "bridge":
        return "bridge"
    return "yes_no" if e.answer in ("yes", "no") else "comparison"


def gold_rationale(templates: PromptTemplates, e: Example) -> str:
    """The error-free teacher rationale without its answer sentence."""
    reply = SimulatedLargeLM(error_rate=0.0).respond(templates.cot_prompt(e))
    rationale, answer = split_rationale_answer(reply)
    assert answer == e.answer
    return rationale


def bridge_chain(e: Example) -> tuple[str, str, str]:
    """(first relation, start entity, bridge entity) of a bridge example's gold chain."""
    gold = [f for p in e.supporting_paragraphs() for f in parse_facts(p.text)]
    for rel, s, o in gold:
        if any(o == s2 for _, s2, _ in gold):
            return rel, s, o
    raise AssertionError(f"no two-hop chain in {e.id}")


# -- CoT teacher --------------------------------------------------------------------------------


def test_cot_restates_the_supporting_facts_and_ends_with_the_answer(templates, examples) -> None:
    lm = SimulatedLargeLM(error_rate=0.0)
    for e in examples:
        reply = lm.respond(templates.cot_prompt(e))
        assert reply.endswith(f" So the answer is {e.answer}."), reply
        rationale, answer = split_rationale_answer(reply)
        assert answer == e.answer
        supporting = {s for p in e.supporting_paragraphs() for s in p.sentences}
        assert set(parse_facts(rationale)) == set(parse_facts(" ".join(supporting))), e.id
        assert {RELATIONS[r].render(s, o) for r, s, o in parse_facts(rationale)} == supporting


def test_cot_with_no_errors_is_always_correct(templates, examples) -> None:
    lm = SimulatedLargeLM(error_rate=0.0)
    assert all(extract_answer(lm.respond(templates.cot_prompt(e))) == e.answer for e in examples)


def test_cot_error_rate_sets_the_share_of_corrupted_and_correct_rationales(
    templates, examples
) -> None:
    clean = SimulatedLargeLM(error_rate=0.0)
    noisy = SimulatedLargeLM(error_rate=0.2)
    corrupted, correct = [], []
    for e in examples:
        reply = noisy.respond(templates.cot_prompt(e))
        assert reply.rstrip().endswith(".") and "So the answer is " in reply
        corrupted.append(reply != clean.respond(templates.cot_prompt(e)))
        correct.append(extract_answer(reply) == e.answer)
    assert abs(sum(corrupted) / N - 0.2) < 0.05
    # Corrupted comparisons sometimes keep the year order, so accuracy sits a little above 0.8.
    assert 0.75 <= sum(correct) / N <= 0.9
    # "Such rationales usually end in a wrong answer."
    wrong_when_corrupted = [not ok for bad, ok in zip(corrupted, correct, strict=True) if bad]
    assert sum(wrong_when_corrupted) / len(wrong_when_corrupted) > 0.5
    # A rationale that matches the error-free one is never wrong.
    assert all(ok for bad, ok in zip(corrupted, correct, strict=True) if not bad)


def test_corrupted_bridge_rationale_follows_a_distractor(templates, bridges) -> None:
    lm = SimulatedLargeLM(error_rate=1.0)
    for e in bridges:
        rel, start, bridge = bridge_chain(e)
        rationale, answer = split_rationale_answer(lm.respond(templates.cot_prompt(e)))
        assert answer != e.answer, e.id
        stated = dict(((r, s), o) for r, s, o in parse_facts(rationale))
        assert stated[(rel, start)] != bridge
        assert stated[(rel, start)] in {p.title for p in e.context}


def test_cot_accuracy_on_bridge_questions_matches_error_rate(templates, bridges) -> None:
    lm = SimulatedLargeLM(error_rate=0.3)
    acc = sum(extract_answer(lm.respond(templates.cot_prompt(e))) == e.answer for e in bridges)
    assert abs(acc / len(bridges) - 0.7) < 0.1


# -- answering without help ---------------------------------------------------------------------


@pytest.mark.parametrize("accuracy", [0.5, 0.9])
def test_standard_prompting_accuracy_is_close_to_unassisted_accuracy(
    templates, examples, accuracy: float
) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=accuracy)
    answers = [lm.respond(templates.standard_prompt(e)) for e in examples]
    acc = sum(a == e.answer for a, e in zip(answers, examples, strict=True)) / N
    assert abs(acc - accuracy) < 0.07
    # Wrong answers are plausible: an entity of the context or the other option, never "unknown".
    for a, e in zip(answers, examples, strict=True):
        if a != e.answer:
            options = {"yes", "no"} | {p.title for p in e.context}
            options |= {o for p in e.context for _, _, o in parse_facts(p.text)}
            assert a in options, (e.id, a)


def test_unassisted_extremes(templates, examples) -> None:
    always = SimulatedLargeLM(unassisted_accuracy=1.0)
    never = SimulatedLargeLM(unassisted_accuracy=0.0)
    assert all(always.respond(templates.standard_prompt(e)) == e.answer for e in examples)
    assert not any(never.respond(templates.standard_prompt(e)) == e.answer for e in examples)


# -- answering with a rationale -----------------------------------------------------------------


def test_gold_rationale_gives_every_answer(templates, examples) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.0)
    for e in examples:
        prompt = templates.guided_prompt(e, gold_rationale(templates, e))
        assert "Rationale:" in prompt and COT_TRIGGER not in prompt
        assert lm.respond(prompt) == e.answer, e.id


def test_distractor_bridge_in_rationale_gives_wrong_answer(templates, bridges) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=1.0)
    for e in bridges:
        rel, start, bridge = bridge_chain(e)
        # Another entity whose second hop the context states: a wrong but readable bridge.
        others = [
            s for p in e.context for r, s, _ in parse_facts(p.text) if r != rel and s != bridge
        ]
        assert others, e.id
        rationale = RELATIONS[rel].render(start, others[0])
        assert lm.respond(templates.guided_prompt(e, rationale)) != e.answer, e.id


def test_rationale_facts_are_trusted_over_the_context(templates, examples) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=1.0)
    comparisons = [e for e in examples if kind_of(e) == "comparison"]
    assert len(comparisons) > 30
    for e in comparisons:
        facts = parse_facts(gold_rationale(templates, e))
        # Swap the two years: the rationale now contradicts the context.
        (r, s1, y1), (_, s2, y2) = facts
        swapped = f"{RELATIONS[r].render(s1, y2)} {RELATIONS[r].render(s2, y1)}"
        assert lm.respond(templates.guided_prompt(e, swapped)) != e.answer, e.id


def _misspell(name: str) -> str:
    """Change one letter in the middle of the last word ('x' never occurs in invented names)."""
    start = name.rfind(" ") + 1
    i = start + (len(name) - start) // 2
    return name[:i] + "x" + name[i + 1 :]


def test_misspelled_bridge_name_still_answers_right(templates, bridges) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.0)
    for e in bridges:
        _, _, bridge = bridge_chain(e)
        typo = _misspell(bridge)
        assert typo != bridge and len(typo) == len(bridge)
        context_entities = {p.title for p in e.context}
        assert typo not in context_entities
        rationale = gold_rationale(templates, e).replace(bridge, typo)
        assert bridge not in rationale
        assert lm.respond(templates.guided_prompt(e, rationale)) == e.answer, (e.id, typo)


def test_name_too_far_from_any_entity_is_not_matched(templates, bridges) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.0)
    e = bridges[0]
    rel, start, _ = bridge_chain(e)
    rationale = RELATIONS[rel].render(start, "Qwyjibo Zzxq")
    # Nothing usable: it falls back to answering without help, which is always wrong here.
    assert lm.respond(templates.guided_prompt(e, rationale)) != e.answer


@pytest.mark.parametrize("useless", ["I do not know.", "", "The question is hard. Let me see."])
def test_useless_rationale_answers_like_standard_prompting(templates, examples, useless) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.5)
    for e in examples:
        standard = lm.respond(templates.standard_prompt(e))
        assert lm.respond(templates.guided_prompt(e, useless)) == standard, e.id


def test_partial_comparison_rationale_falls_back_to_unassisted(templates, examples) -> None:
    lm = SimulatedLargeLM(unassisted_accuracy=0.5)
    for e in examples:
        if kind_of(e) == "bridge":
            continue
        first_fact = gold_rationale(templates, e).split(". ")[0] + "."
        assert len(parse_facts(first_fact)) == 1
        guided = lm.respond(templates.guided_prompt(e, first_fact))
        assert guided == lm.respond(templates.standard_prompt(e)), e.id


# -- determinism and sampling -------------------------------------------------------------------


def test_same_prompt_gives_same_reply(templates, examples) -> None:
    a, b = SimulatedLargeLM(error_rate=0.5), SimulatedLargeLM(error_rate=0.5)
    for e in examples[:100]:
        for prompt in (templates.cot_prompt(e), templates.standard_prompt(e)):
            assert a.respond(prompt) == a.respond(prompt) == b.respond(prompt)
            assert a.respond(prompt, 0.7, 3) == b.respond(prompt, 0.7, 3)


def test_temperature_zero_ignores_sample_index(templates, examples) -> None:
    lm = SimulatedLargeLM(error_rate=0.5)
    for e in examples[:100]:
        prompt = templates.cot_prompt(e)
        greedy = lm.respond(prompt, 0.0, 0)
        assert all(lm.respond(prompt, 0.0, i) == greedy for i in range(1, 5))


def test_samples_at_temperature_differ(templates, examples) -> None:
    lm = SimulatedLargeLM(error_rate=0.5)
    varied = 0
    for e in examples[:100]:
        prompt = templates.cot_prompt(e)
        samples = {lm.respond(prompt, 0.7, i) for i in range(6)}
        varied += len(samples) > 1
    assert varied > 50


def test_seed_changes_the_draws(templates, examples) -> None:
    a, b = (
        SimulatedLargeLM(unassisted_accuracy=0.5, seed=0),
        SimulatedLargeLM(unassisted_accuracy=0.5, seed=1),
    )
    prompts = [templates.standard_prompt(e) for e in examples]
    assert [a.respond(p) for p in prompts] != [b.respond(p) for p in prompts]


# -- through the LargeLM interface --------------------------------------------------------------


def test_generate_with_samples_and_cache_counts_calls(tmp_path, templates, examples) -> None:
    prompts = [templates.cot_prompt(e) for e in examples[:10]]
    params = GenerationParams(temperature=0.7, max_new_tokens=64)
    lm = SimulatedLargeLM(error_rate=0.5, cache=CallCache(tmp_path / "calls.sqlite"))
    out = lm.generate(prompts, params, n=3)
    assert [len(row) for row in out] == [3] * 10
    assert lm.usage.calls == 30 and lm.usage.cache_hits == 0
    for prompt, row in zip(prompts, out, strict=True):
        for i, c in enumerate(row):
            assert not c.cached
            assert c.text == lm.respond(prompt, 0.7, i)
            assert c.input_tokens == len(prompt.split())
            assert c.output_tokens == len(c.text.split())
    assert lm.usage.input_tokens == sum(c.input_tokens for row in out for c in row)

    again = lm.generate(prompts, params, n=3)
    assert lm.usage.calls == 30 and lm.usage.cache_hits == 30
    assert all(c.cached for row in again for c in row)
    assert [[c.text for c in row] for row in again] == [[c.text for c in row] for row in out]
    lm.close()

    # Another process with the same settings reuses the file; other settings miss it.
    same = SimulatedLargeLM(error_rate=0.5, cache=CallCache(tmp_path / "calls.sqlite"))
    same.generate(prompts, params, n=3)
    assert same.usage.calls == 0 and same.usage.cache_hits == 30
    same.close()
    other = SimulatedLargeLM(error_rate=0.1, cache=CallCache(tmp_path / "calls.sqlite"))
    other.generate(prompts, params, n=3)
    assert other.usage.calls == 30 and other.usage.cache_hits == 0
    other.close()


def test_generate_without_cache(templates, examples) -> None:
    lm = SimulatedLargeLM()
    prompts = [templates.standard_prompt(e) for e in examples[:5]]
    out = lm.generate(prompts, GenerationParams(), n=2)
    assert lm.usage.calls == 10
    for e, row in zip(examples[:5], out, strict=True):
        assert row[0].text == row[1].text == lm.respond(templates.standard_prompt(e))


# -- prompts and settings it refuses ------------------------------------------------------------

HOTPOT_PROMPT = (
    "Answer the question using the context. Reply with a short answer only.\n\n"
    "Context:\n"
    "[The Beatles] The Beatles were an English rock band formed in Liverpool in 1960.\n"
    "[Queen] Queen are a British rock band formed in London in 1970.\n\n"
    "Question: Which band formed first, The Beatles or Queen?\nAnswer:"
)


def test_prompt_from_another_dataset_raises(templates) -> None:
    lm = SimulatedLargeLM()
    with pytest.raises(BackendError, match="synthetic"):
        lm.respond(HOTPOT_PROMPT)
    with pytest.raises(BackendError, match="synthetic"):
        lm.check_prompt(HOTPOT_PROMPT)
    with pytest.raises(BackendError, match="synthetic"):
        lm.generate([HOTPOT_PROMPT], GenerationParams())


def test_synthetic_question_over_free_text_context_raises(templates, examples) -> None:
    e = next(x for x in examples if x.type == "bridge")
    prompt = (
        "Context:\n[Somewhere] A town with a long history and many films.\n\n"
        f"Question: {e.question}\nAnswer:"
    )
    with pytest.raises(BackendError, match="synthetic"):
        SimulatedLargeLM().respond(prompt)


def test_unknown_question_over_synthetic_context_raises(templates, examples) -> None:
    prompt = templates.standard_prompt(examples[0]).replace(
        examples[0].question, "Who is the tallest person mentioned?"
    )
    with pytest.raises(BackendError, match="synthetic"):
        SimulatedLargeLM().respond(prompt)


def test_prompt_without_context_section_raises(templates, examples) -> None:
    prompt = templates.standard_prompt(examples[0]).replace("Context:", "Passages:")
    with pytest.raises(BackendError, match="'Context:'"):
        SimulatedLargeLM().respond(prompt)
    with pytest.raises(BackendError, match="'Question:'"):
        SimulatedLargeLM().respond("Context:\n[A] A was born in B.\n")


@pytest.mark.parametrize(
    "setting",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"unassisted_accuracy": 2.0},
        {"name_match_cutoff": -1.0},
    ],
)
def test_invalid_settings_raise(setting: dict) -> None:
    (key,) = setting
    with pytest.raises(BackendError, match=rf"large_lm\.{key}"):
        SimulatedLargeLM(**setting)
