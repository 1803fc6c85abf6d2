"""Rewards: hand-computed aspect measures, the judge parser, the reward mix and the task reward."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import config_group
from omegaconf import OmegaConf

from lmgcot.answers.extract import extract_answer, split_rationale_answer
from lmgcot.answers.metrics import best_over_golds, normalize_answer
from lmgcot.data.example import Example, Paragraph
from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.errors import ConfigError
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.llm.cache import CallCache
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards import (
    ASPECTS,
    COMPONENTS,
    JudgeParseError,
    RewardMix,
    build_judge_prompt,
    judge_components,
    judge_scores,
    parse_judge_reply,
    task_reward,
)
from lmgcot.rewards.aspects import (
    coherence,
    consistency,
    factuality,
    fluency,
    logicality,
    naturalness,
    readability,
    relevance,
)
from lmgcot.rewards.text import count_syllables

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
ASPECT_NAMES = [
    "factuality",
    "relevance",
    "logicality",
    "consistency",
    "coherence",
    "fluency",
    "naturalness",
    "readability",
]

EXAMPLE = Example(
    id="hand-1",
    question="Where was Alice Smith born?",
    answer="Paris",
    context=(
        Paragraph("Alice Smith", ("Alice Smith was born in Paris.", "She studied physics.")),
        Paragraph("Paris", ("Paris is the capital of France.",)),
    ),
)


def score(fn, rationale: str, **extra) -> float:
    return fn([EXAMPLE], [rationale], **extra)[0]


# -- aspects ---------------------------------------------------------------------------------------


def test_aspects_registry_has_exactly_the_eight_names():
    assert list(ASPECTS) == ASPECT_NAMES
    assert COMPONENTS == ("task", *ASPECT_NAMES)


def test_factuality_counts_supported_sentences():
    # {alice, smith, born, paris} all in one context sentence; {won, ten, medals} in none.
    assert score(factuality, "Alice Smith was born in Paris. She won ten medals.") == 0.5
    # 3 of {alice, studied, physics, hard} are in "She studied physics." read with its title
    # "Alice Smith" (3/4 > 0.5); {paris, museums} shares exactly half, which is not most.
    assert score(factuality, "Alice studied physics hard. Paris has museums.") == 0.5
    # {paris, large, city}: 1/3 with the Paris sentence.
    assert score(factuality, "Paris is a large city.") == 0.0
    assert score(factuality, "So.") == 0.0


def test_relevance_is_recall_of_question_content_words():
    # Question content words {alice, smith, born}; the rationale covers alice and born.
    assert score(relevance, "Alice was born in Paris.") == pytest.approx(2 / 3)
    assert score(relevance, "Alice Smith was born in Paris.") == 1.0
    assert score(relevance, "Bob likes tea.") == 0.0
    no_content = Example(id="q", question="Who is it?", answer="x", context=EXAMPLE.context)
    assert relevance([no_content], ["Alice was born."])[0] == 0.5


def test_logicality_rewards_chained_sentences():
    chained = "Alice Smith was born in Paris. Paris is in France."
    assert score(logicality, chained) == 1.0
    # The third sentence shares nothing with the first two: 1 of 2 later sentences link.
    assert score(logicality, chained + " Bob likes tea.") == 0.5
    # A later sentence may link to any earlier one, not only the one before it.
    # "Paris is in France." links to the first sentence through "paris".
    assert score(logicality, "Alice was born in Paris. Alice likes tea. Paris is in France.") == 1.0
    assert score(logicality, "Alice was born in Paris.") == 1.0


def test_coherence_is_mean_adjacent_jaccard():
    # {alice, smith, born, paris} vs {paris, france}: 1/5.
    two = "Alice Smith was born in Paris. Paris is in France."
    assert score(coherence, two) == pytest.approx(1 / 5)
    # ... then {paris, france} vs {france, europe}: 1/3.
    assert score(coherence, two + " France is in Europe.") == pytest.approx((1 / 5 + 1 / 3) / 2)
    assert score(coherence, "Alice was born in Paris.") == 1.0


@pytest.mark.parametrize(
    ("rationale", "answer", "expected"),
    [
        # A stated answer is compared with the large LM's, after normalisation ...
        ("Alice was born in Paris. So the answer is Paris.", "Paris", 1.0),
        ("Alice was born in Paris. So the answer is Paris.", "the paris", 1.0),
        # ... and wins over what the rationale merely names.
        ("Alice was born in Paris, not London. So the answer is Paris.", "London", 0.0),
        ("Alice and Bob were born in Paris. So the answer is no.", "yes", 0.0),
        # No stated answer: naming the answer anywhere, as whole words, agrees ...
        ("Alice Smith was born in Paris.", "Paris", 1.0),
        ("Alice Smith was born in Paris. She studied physics.", "Paris", 1.0),
        ("Alice Smith was born in New York City.", "new york city", 1.0),
        # Known failure mode: a comparison names both candidates, so either answer agrees.
        ("Alpha came out in 1970. Beta came out in 1953.", "Alpha", 1.0),
        # ... not naming it disagrees: the large LM answered something the rationale lacks.
        ("Alice Smith was born in Paris.", "London", 0.0),
        ("Alice Smith was born in Parisville.", "Paris", 0.0),
        ("Alice Smith was born in New York.", "New York City", 0.0),
        # Yes/no answers are never named by the facts: neither, even when "no" occurs as a word.
        ("Alice Smith was born in Paris. Bob was born in Paris.", "yes", 0.5),
        ("There is no record of where Alice was born.", "no", 0.5),
        # No large-LM answer to agree with; an empty rationale supports nothing.
        ("Alice was born in Paris. So the answer is Paris.", None, 0.5),
        ("Alice was born in Paris. So the answer is Paris.", "", 0.5),
        ("", "Paris", 0.0),
        (" ", "yes", 0.0),
    ],
)
def test_consistency(rationale, answer, expected):
    assert score(consistency, rationale, answers=[answer]) == expected


def test_consistency_and_fluency_name_their_missing_inputs():
    with pytest.raises(ValueError, match="answers"):
        consistency([EXAMPLE], ["x."])
    with pytest.raises(ValueError, match="token_logprobs"):
        fluency([EXAMPLE], ["x."])
    with pytest.raises(ValueError, match="token_logprobs"):
        fluency([EXAMPLE], ["x."], token_logprobs=[])


def test_fluency_is_inverse_perplexity():
    out = fluency(
        [EXAMPLE] * 3, ["a b.", "", "c d."], token_logprobs=[[-1.0, -3.0], [], [0.0, 0.0]]
    )
    assert out == pytest.approx([math.exp(-2.0), 0.0, 1.0])


@pytest.mark.parametrize(
    ("rationale", "expected"),
    [
        ("The cat sat.", 1.0),
        # Bigrams: (the cat) (cat the) (the cat) (cat the) (the cat): 2 distinct of 5.
        ("The cat the cat the cat.", 0.4),
        ("The cat sat", 0.5),
        # 4 of the 7 non-space characters sit in the run "!!!!".
        ("Wow!!!!", 3 / 7),
        ("It cost 10000 dollars.", 1.0),
        ('He said "yes."', 1.0),
    ],
)
def test_naturalness(rationale, expected):
    assert score(naturalness, rationale) == pytest.approx(expected)


def test_readability_is_scaled_flesch_reading_ease():
    assert [count_syllables(w) for w in ("the", "made", "table", "university", "1956")] == [
        1,
        1,
        2,
        5,
        4,
    ]
    # 4 words, 1 sentence, 1 + 5 + 1 + 1 syllables.
    fre = 206.835 - 1.015 * 4 / 1 - 84.6 * 8 / 4
    assert score(readability, "The university is big.") == pytest.approx(fre / 100)
    assert score(readability, "The cat sat.") == 1.0  # FRE 119.2, clipped
    assert score(readability, "Biology is fascinating.") == 0.0  # FRE below 0, clipped


@pytest.mark.parametrize("name", ASPECT_NAMES)
def test_empty_rationale_scores_zero(name):
    extra = {"answers": ["Paris"], "token_logprobs": [[]]}
    assert ASPECTS[name]([EXAMPLE], ["  "], **extra) == [0.0]


def test_aspects_stay_in_unit_interval_on_real_and_degenerate_text(synthetic, templates):
    teacher = SimulatedLargeLM(error_rate=0.0)
    rationales = [teacher.respond(templates.cot_prompt(e)) for e in synthetic]
    rationales[:4] = ["aaaaaaaaaa", "the the the the", "?!", "Extraordinarily incomprehensible."]
    extra = {
        "answers": [e.answer for e in synthetic],
        "token_logprobs": [[-0.5] * 3 for _ in synthetic],
    }
    for name, fn in ASPECTS.items():
        values = fn(synthetic, rationales, **extra)
        assert len(values) == len(synthetic)
        assert all(0.0 <= v <= 1.0 for v in values), name
    # The error-free teacher's rationales restate context facts and end in the right answer.
    assert factuality(synthetic[4:], rationales[4:]) == [1.0] * (len(synthetic) - 4)
    assert consistency(synthetic[4:], rationales[4:], answers=extra["answers"][4:]) == [1.0] * (
        len(synthetic) - 4
    )


def test_aspects_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="need one each"):
        relevance([EXAMPLE, EXAMPLE], ["x."])


# -- judge -----------------------------------------------------------------------------------------

GOOD_REPLY = "\n".join(f"{name}: {i % 5 + 1}" for i, name in enumerate(ASPECT_NAMES))
GOOD_SCORES = {name: i % 5 + 1 for i, name in enumerate(ASPECT_NAMES)}


def test_judge_prompt_names_every_aspect_and_the_format():
    prompt = build_judge_prompt(EXAMPLE, "Alice Smith was born in\n Paris.")
    for name in ASPECT_NAMES:
        assert f"\n{name}: N" in prompt
    assert "Question: Where was Alice Smith born?" in prompt
    assert "Rationale: Alice Smith was born in Paris." in prompt
    assert "[Paris] Paris is the capital of France." in prompt


def test_parse_judge_reply_accepts_the_strict_format():
    assert parse_judge_reply(GOOD_REPLY) == GOOD_SCORES


def test_parse_judge_reply_tolerates_common_deviations():
    reply = (
        "Here are my ratings:\n\n"
        "1. **Factuality**: 1\n"
        "- Relevance - 2\n"
        "* LOGICALITY: 3/5\n"
        "Consistency = **4**\n"
        "coherence: 5 (the steps connect well)\n"
        "  __Fluency__ \u2013 1\n"
        "Naturalness is 2\n"
        "readability: 3\n"
        "readability: 3\n"  # a repeat with the same score is harmless
        "Overall this is a decent rationale."
    )
    assert parse_judge_reply(reply) == GOOD_SCORES


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (GOOD_REPLY.replace("readability: 3", ""), "no score for readability"),
        (
            GOOD_REPLY.replace("factuality: 1", "factuality: 0"),
            "factuality: score 0 is outside 1-5",
        ),
        (GOOD_REPLY.replace("relevance: 2", "relevance: 6"), "relevance: score 6 is outside 1-5"),
        ("I cannot rate this rationale.", "no score for factuality, relevance"),
        ("", "no score for factuality"),
        (GOOD_REPLY + "\nfactuality: 4", "factuality: given twice with different scores (1 and 4)"),
        (GOOD_REPLY.replace("fluency: 1", "fluency: 4.5"), "fluency: score 4.5 is not a whole"),
        (GOOD_REPLY.replace("fluency: 1", "fluency: 4/10"), "fluency: score 4/10 is not out of 5"),
    ],
)
def test_parse_judge_reply_rejects_malformed_replies(reply, problem):
    with pytest.raises(JudgeParseError, match="judge reply could not be parsed") as info:
        parse_judge_reply(reply)
    assert info.value.problem.startswith(problem)
    assert info.value.reply == reply


class CannedJudge(LargeLM):
    """Replies GOOD_REPLY when the rationale says "good", else garbage."""

    backend = "canned"

    def _complete(self, requests: list[Request]) -> list[Completion]:
        return [
            Completion(GOOD_REPLY if "Rationale: good" in r.prompt else "no idea") for r in requests
        ]


def test_judge_scores_scales_and_reports_unparsable_replies():
    lm = CannedJudge("canned")
    scores, failures = judge_scores([EXAMPLE, EXAMPLE], ["good one.", "bad one."], lm)
    assert scores[0] == {name: (v - 1) / 4 for name, v in GOOD_SCORES.items()}
    assert scores[1] is None
    assert len(failures) == 1
    assert failures[0]["index"] == 1 and failures[0]["id"] == "hand-1"
    assert failures[0]["reply"] == "no idea"
    assert failures[0]["problem"].startswith("no score for factuality")
    columns = judge_components(scores)
    assert list(columns) == ASPECT_NAMES
    assert columns["factuality"] == [0.0, None] and columns["consistency"] == [0.75, None]


# -- mix -------------------------------------------------------------------------------------------


def test_mix_normalises_weights_and_sums():
    mix = RewardMix({"task": 1.0, "factuality": 3})
    assert mix.active == ("task", "factuality")
    assert mix.normalized["task"] == 0.25 and mix.normalized["factuality"] == 0.75
    totals, logs = mix.combine({"task": [1.0, 0.0, 1.0], "factuality": [0.0, 1.0, 0.5]})
    assert totals == pytest.approx([0.25, 0.75, 0.625])
    assert logs == pytest.approx(
        {
            "rewards/task/mean": 2 / 3,
            "rewards/factuality/mean": 0.5,
            "rewards/total/mean": (0.25 + 0.75 + 0.625) / 3,
        }
    )


def test_mix_treats_none_as_zero_and_reports_it():
    mix = RewardMix({"task": 1.0, "coherence": 1.0, "fluency": 0.0})
    totals, logs = mix.combine(
        # fluency is inactive: logged, not summed.
        {"task": [None, 1.0], "coherence": [1.0, 1.0], "fluency": [0.2, 0.4]}
    )
    assert totals == pytest.approx([0.5, 1.0])
    assert logs["rewards/task/mean"] == 1.0 and logs["rewards/task/missing"] == 1.0
    assert "rewards/coherence/missing" not in logs
    assert logs["rewards/fluency/mean"] == pytest.approx(0.3)
    _, logs = mix.combine({"task": [None], "coherence": [0.0]})
    assert "rewards/task/mean" not in logs and logs["rewards/total/mean"] == 0.0


def test_mix_requires_active_components_of_equal_length():
    mix = RewardMix({"task": 1.0, "relevance": 1.0})
    with pytest.raises(ValueError, match="not computed: relevance"):
        mix.combine({"task": [1.0]})
    with pytest.raises(ValueError, match="differ in length"):
        mix.combine({"task": [1.0], "relevance": [1.0, 0.0]})


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            {"task": 1.0, "bogus": 1.0},
            r"reward\.weights\.bogus: unknown .*allowed: task, factuality",
        ),
        ({"task": 1.0, "fluency": -0.5}, r"reward\.weights\.fluency=-0\.5: must be >= 0"),
        ({"task": 0.0, "fluency": 0}, r"reward\.weights: all weights are 0"),
        ({}, r"reward\.weights: all weights are 0"),
        ({"task": "high"}, r"reward\.weights\.task='high': must be a number"),
        ({"task": True}, r"reward\.weights\.task=True: must be a number"),
        ({"task": float("nan")}, r"reward\.weights\.task=nan: must be finite"),
    ],
)
def test_mix_rejects_bad_weights(weights, message):
    with pytest.raises(ConfigError, match=message):
        RewardMix(weights)


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "lmgcot" / "conf" / "reward").glob("*.yaml")), ids=str
)
def test_every_reward_config_builds_a_valid_mix(path):
    cfg = OmegaConf.create(config_group("reward", path.stem))
    assert cfg.name == path.stem
    assert set(cfg.weights) == set(COMPONENTS)
    mix = RewardMix.from_config(cfg)
    assert mix.active and set(mix.active) <= set(COMPONENTS)
    assert sum(mix.normalized.values()) == pytest.approx(1.0)


# -- task reward -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return PromptTemplates(**config_group("prompt"))


@pytest.fixture(scope="module")
def synthetic() -> list[Example]:
    return SyntheticMultiHop(n_train=16, n_val=0, n_test=0, seed=0).load_splits().train


def teacher_rationale(templates: PromptTemplates, example: Example) -> str:
    reply = SimulatedLargeLM(error_rate=0.0).respond(templates.cot_prompt(example))
    return split_rationale_answer(reply)[0]


@pytest.mark.parametrize("metric", ["em", "f1"])
def test_teacher_rationale_earns_full_task_reward(synthetic, templates, metric):
    rationales = [teacher_rationale(templates, e) for e in synthetic]
    assert all("answer" not in r for r in rationales)
    rewards, answers = task_reward(synthetic, rationales, SimulatedLargeLM(), templates, metric)
    assert rewards == [1.0] * len(synthetic)
    assert [normalize_answer(a) for a in answers] == [normalize_answer(e.answer) for e in synthetic]


def test_empty_rationale_earns_the_unassisted_result(synthetic, templates):
    lm = SimulatedLargeLM()
    rewards, answers = task_reward(synthetic, [""] * len(synthetic), lm, templates)
    params = GenerationParams(max_new_tokens=32)
    standard = lm.generate([templates.standard_prompt(e) for e in synthetic], params)
    unassisted = [extract_answer(c[0].text) for c in standard]
    assert answers == unassisted
    assert rewards == [best_over_golds(a, e.gold_answers)[0] for a, e in zip(answers, synthetic)]
    assert 0 < sum(rewards) < len(synthetic)  # the unassisted reader is right only sometimes


def test_task_reward_goes_through_the_cache(synthetic, templates, tmp_path):
    lm = SimulatedLargeLM(cache=CallCache(tmp_path / "cache.sqlite"))
    first = task_reward(synthetic[:4], ["x."] * 4, lm, templates, "f1")
    second = task_reward(synthetic[:4], ["x."] * 4, lm, templates, "f1")
    assert first == second
    assert lm.usage.calls == 4 and lm.usage.cache_hits == 4
    lm.close()


def test_unknown_task_metric_fails_before_any_call(synthetic, templates):
    lm = SimulatedLargeLM()
    with pytest.raises(ValueError, match=r"reward\.task_metric='acc'.*allowed: em, f1"):
        task_reward(synthetic, [""] * len(synthetic), lm, templates, metric="acc")
    assert lm.usage.calls == 0
