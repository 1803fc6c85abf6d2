"""`RewardScorer`: the mix's components with the `auto` and `judge` scorers, and the judge through
the real OpenAI client against a local server (malformed replies included)."""

from __future__ import annotations

import json

import pytest
from conftest import config_group
from fake_api_server import FakeApiServer
from test_rewards import EXAMPLE

from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import Completion, GenerationParams, LargeLM, Request
from lmgcot.llm.cache import CallCache
from lmgcot.llm.openai import OpenAILargeLM
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import JUDGE_PREFIX, PromptTemplates
from lmgcot.rewards import ASPECTS, RewardMix, build_judge_prompt
from lmgcot.rewards.scorer import WELLFORMED, RewardScorer, mean_scores

pytestmark = pytest.mark.unit

PROMPTS = PromptTemplates(**config_group("prompt"))


@pytest.fixture(scope="module")
def bridge_examples():
    splits = SyntheticMultiHop(n_train=0, n_val=0, n_test=60, seed=3).load_splits()
    return [x for x in splits.test if x.type == "bridge"][:4]


def teacher_rationale(lm: SimulatedLargeLM, prompts: PromptTemplates, example) -> str:
    return lm.respond(prompts.cot_prompt(example)).rsplit(" So the answer is", 1)[0]


def make(weights: dict, lm=None, **kw) -> RewardScorer:
    lm = lm or SimulatedLargeLM(error_rate=0.0)
    return RewardScorer(RewardMix(weights), lm, PROMPTS, **kw)


def test_task_reward_follows_the_rationale_and_only_active_components_run(bridge_examples):
    scorer = make({"task": 1.0})
    good = [teacher_rationale(scorer.large_lm, scorer.prompts, x) for x in bridge_examples]
    totals, comps, failures = scorer(bridge_examples, good)
    assert totals == [1.0] * len(good) and set(comps) == {"task"} and failures == []
    # Empty rationales fall back to the unaided answer, right only for some questions.
    unaided = [scorer.large_lm.respond(scorer.prompts.standard_prompt(x)) for x in bridge_examples]
    expected = [float(a == x.answer) for a, x in zip(unaided, bridge_examples)]
    totals_empty, _, _ = scorer(bridge_examples, [""] * len(bridge_examples))
    assert totals_empty == expected


def test_mixed_total_is_the_normalised_weighted_sum(bridge_examples):
    scorer = make({"task": 1.0, "readability": 1.0, "naturalness": 2.0})
    rationales = [teacher_rationale(scorer.large_lm, scorer.prompts, x) for x in bridge_examples]
    totals, comps, _ = scorer(bridge_examples, rationales)
    # The gate's score comes back too, but only the mix's components are summed.
    assert set(comps) == {"task", "readability", "naturalness", WELLFORMED}
    for i, total in enumerate(totals):
        expected = (comps["task"][i] + comps["readability"][i] + 2 * comps["naturalness"][i]) / 4
        assert total == pytest.approx(expected)


def test_fluency_needs_token_logprobs_and_uses_them(bridge_examples):
    scorer = make({"fluency": 1.0})
    rationales = [teacher_rationale(scorer.large_lm, scorer.prompts, x) for x in bridge_examples]
    with pytest.raises(ValueError, match="token log-probs"):
        scorer(bridge_examples, rationales)
    totals, comps, _ = scorer(bridge_examples, rationales, [[-0.5, -0.5]] * len(rationales))
    assert comps[WELLFORMED] == [1.0] * len(rationales)  # so the gate leaves fluency as it is
    assert totals == pytest.approx([0.6065306597] * len(rationales))
    # Quality scoring without log-probs leaves fluency out rather than guessing it.
    all_aspects, _ = scorer.components(bridge_examples, rationales, names=list(ASPECTS))
    assert set(all_aspects) == set(ASPECTS) - {"fluency"} | {WELLFORMED}


def test_consistency_compares_with_the_large_lms_answer(bridge_examples):
    scorer = make({"consistency": 1.0})
    x = bridge_examples[0]
    stated = (
        teacher_rationale(scorer.large_lm, scorer.prompts, x) + f" So the answer is {x.answer}."
    )
    contrary = teacher_rationale(scorer.large_lm, scorer.prompts, x) + " So the answer is Nowhere."
    totals, _, _ = scorer([x, x], [stated, contrary])
    assert totals == [1.0, 0.0]


JUNK = ["bral was", "TheTheThe in in in in", "Paris Paris Paris Paris.", "was born in"]


def test_the_gate_holds_junk_down_on_every_aspect_but_leaves_task_alone(bridge_examples):
    examples = [bridge_examples[0]] * len(JUNK)
    names = ["task", *ASPECTS]
    logprobs = [[-0.1]] * len(JUNK)  # junk the reference model finds likely
    gated, _ = make({"task": 1.0}).components(examples, JUNK, names, logprobs)
    plain, _ = make({"task": 1.0}, gate=False).components(examples, JUNK, names, logprobs)
    # Without the gate junk maxes out the surface measures ...
    assert plain["coherence"] == [1.0] * len(JUNK) and plain["readability"][:2] == [1.0, 1.0]
    assert plain["fluency"] == pytest.approx([0.905] * len(JUNK), abs=1e-3)
    # ... with it no aspect scores above the gate, which junk fails.
    assert all(w <= 0.3 for w in gated[WELLFORMED])
    for name in ASPECTS:
        assert all(g <= w + 1e-12 for g, w in zip(gated[name], gated[WELLFORMED])), name
    assert gated["task"] == plain["task"]
    # The gate is scored whether or not it is applied, when asked for.
    assert WELLFORMED not in plain
    shown, _ = make({"task": 1.0}, gate=False).components(examples, JUNK, ["task", WELLFORMED])
    assert shown[WELLFORMED] == gated[WELLFORMED] and shown["task"] == plain["task"]


def test_the_gate_changes_nothing_for_well_formed_rationales(bridge_examples):
    scorer = make({"task": 1.0})
    rationales = [teacher_rationale(scorer.large_lm, scorer.prompts, x) for x in bridge_examples]
    names = ["task", *ASPECTS]
    gated, _ = scorer.components(bridge_examples, rationales, names)
    plain, _ = make({"task": 1.0}, gate=False).components(bridge_examples, rationales, names)
    assert gated.pop(WELLFORMED) == [1.0] * len(rationales)
    assert gated == plain
    # Only the task asked for: nothing to gate, no gate column.
    task_only, _ = scorer.components(bridge_examples, rationales)
    assert set(task_only) == {"task"}


def test_the_gate_is_read_from_the_config():
    lm = SimulatedLargeLM()
    base = {"weights": {"task": 1.0}}
    assert RewardScorer.from_config(base, lm, PROMPTS).gate is True
    assert RewardScorer.from_config({**base, "gate": False}, lm, PROMPTS).gate is False
    vocab = RewardScorer.from_config(base, lm, PROMPTS, vocabulary={"hence"})
    assert vocab.vocabulary == {"hence"}
    with pytest.raises(ConfigError, match=r"reward.gate='yes': must be true or false"):
        RewardScorer.from_config({**base, "gate": "yes"}, lm, PROMPTS)


class PraisingJudge(LargeLM):
    """Rates every rationale 5 on every aspect: a judge that junk has fooled."""

    backend = "praising"

    def _complete(self, requests: list[Request]) -> list[Completion]:
        return [Completion("\n".join(f"{n}: 5" for n in ASPECTS)) for _ in requests]


def test_the_gate_applies_to_the_judge_scorer(bridge_examples):
    x = bridge_examples[0]
    good = teacher_rationale(SimulatedLargeLM(error_rate=0.0), PROMPTS, x)
    rationales = [good, *JUNK]
    examples = [x] * len(rationales)
    judge = make({"factuality": 1.0, "coherence": 1.0}, lm=PraisingJudge("j"), scorer="judge")
    totals, comps, failures = judge(examples, rationales)
    assert failures == [] and comps[WELLFORMED][0] == 1.0
    assert totals[0] == 1.0 and all(t <= 0.3 for t in totals[1:])


def test_bad_scorer_settings_are_config_errors():
    with pytest.raises(ConfigError, match="reward.scorer='oracle'"):
        make({"task": 1.0}, scorer="oracle")
    with pytest.raises(ConfigError, match="reward.task_metric='bleu'"):
        make({"task": 1.0}, task_metric="bleu")


def test_the_simulated_large_lm_refuses_to_judge(bridge_examples):
    lm = SimulatedLargeLM()
    with pytest.raises(BackendError, match="reward.scorer=auto"):
        lm.check_prompt(build_judge_prompt(bridge_examples[0], "A rationale."))


def judge_replier(prompt: str) -> str | None:
    """Rates every aspect 5 when the rationale mentions 'born', 1 otherwise; a rationale that
    says 'garble' gets a reply missing two aspects."""
    if not prompt.startswith(JUDGE_PREFIX):
        return None
    rationale = prompt.split("\nRationale: ", 1)[1].split("\n", 1)[0]
    if "garble" in rationale:
        return "Factuality: 4\nRelevance: 4\nI am not sure about the rest."
    score = 5 if "born" in rationale else 1
    return "\n".join(f"**{name.title()}**: {score}/5" for name in ASPECTS)


def test_judge_scorer_through_the_openai_client(bridge_examples, tmp_path):
    with FakeApiServer(replier=judge_replier) as server:
        lm = OpenAILargeLM(
            "judge-model", cache=CallCache(tmp_path / "c.sqlite"), base_url=f"{server.url}/v1"
        )
        # Ungated: this test is about the judge's replies (the gate has its own tests).
        scorer = make({"factuality": 1.0, "fluency": 1.0}, lm=lm, scorer="judge", gate=False)
        rationales = ["X was born in Y.", "Nothing useful.", "garble garble", "Z was born in W."]
        totals, comps, failures = scorer(bridge_examples, rationales)
        assert comps["factuality"] == [1.0, 0.0, None, 1.0]
        assert comps["fluency"] == [1.0, 0.0, None, 1.0]
        # An unusable reply scores 0 in the total and is reported, not guessed at.
        assert totals == [1.0, 0.0, 0.0, 1.0]
        assert [f["index"] for f in failures] == [2]
        assert failures[0]["id"] == bridge_examples[2].id
        assert "relevance" not in failures[0]["problem"] and "logicality" in failures[0]["problem"]
        # One call per rationale rates every aspect; a repeat is answered by the cache.
        assert len(server.ok_requests()) == 4
        bodies = [json.dumps(r.body) for r in server.ok_requests()]
        assert all("Question:" in b for b in bodies)
        assert sum("X was born in Y." in b for b in bodies) == 1
        scorer(bridge_examples, rationales)
        assert len(server.ok_requests()) == 4


def test_mean_scores_leave_out_missing_values():
    assert mean_scores({"a": [1.0, None, 0.0], "b": [None, None]}) == {"a": 0.5}


# -- what a scorer asks the large LM, and with which settings --------------------------------------


class Recorder(LargeLM):
    """Answers every guided prompt "Paris France" and rates every rationale 4 on every aspect
    (one that says `unreadable`: `reply`, which cannot be read); records each request, so a test
    can see which calls a scorer makes and with what."""

    backend = "recorder"

    def __init__(self, unreadable: str = "garble", reply: str = "no idea"):
        super().__init__("recorder")
        self.requests: list[Request] = []
        self.unreadable, self.reply = unreadable, reply

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.requests += requests
        rating = "\n".join(f"{name}: 4" for name in ASPECTS)
        return [
            Completion(
                (self.reply if f"Rationale: {self.unreadable}" in r.prompt else rating)
                if r.prompt.startswith(JUDGE_PREFIX)
                else "Paris France"
            )
            for r in requests
        ]

    def kinds(self) -> list[str]:
        return ["judge" if r.prompt.startswith(JUDGE_PREFIX) else "guided" for r in self.requests]


RATIONALE = "Alice Smith was born in Paris."


def test_the_task_reward_uses_the_scorer_s_metric_and_answer_token_budget():
    lm = Recorder()
    comps, _ = RewardScorer(RewardMix({"task": 1.0}), lm, PROMPTS).components(
        [EXAMPLE], [RATIONALE]
    )
    # The defaults: exact match (0 for "Paris France" against "Paris") and 32 answer tokens.
    assert comps == {"task": [0.0]}
    assert [r.params for r in lm.requests] == [GenerationParams(max_new_tokens=32)]
    lm = Recorder()
    scorer = RewardScorer(
        RewardMix({"task": 1.0}), lm, PROMPTS, task_metric="f1", answer_max_new_tokens=7
    )
    comps, _ = scorer.components([EXAMPLE], [RATIONALE])
    assert comps == {"task": [pytest.approx(2 / 3)]}
    assert [r.params for r in lm.requests] == [GenerationParams(max_new_tokens=7)]


def test_the_judge_gets_the_scorer_s_token_budget_and_context_limit():
    mix = RewardMix({"factuality": 1.0})
    lm = Recorder()
    comps, _ = RewardScorer(mix, lm, PROMPTS, scorer="judge").components([EXAMPLE], [RATIONALE])
    assert comps == {"factuality": [0.75], WELLFORMED: [1.0]}
    assert [(r.prompt, r.params) for r in lm.requests] == [
        (build_judge_prompt(EXAMPLE, RATIONALE), GenerationParams(max_new_tokens=64))
    ]
    lm = Recorder()
    scorer = RewardScorer(
        mix, lm, PROMPTS, scorer="judge", judge_max_new_tokens=9, judge_max_context_chars=12
    )
    scorer.components([EXAMPLE], [RATIONALE])
    assert [(r.prompt, r.params) for r in lm.requests] == [
        (build_judge_prompt(EXAMPLE, RATIONALE, 12), GenerationParams(max_new_tokens=9))
    ]


@pytest.mark.parametrize(
    ("scorer", "names", "kinds"),
    [
        # Measured aspects other than consistency need no large-LM call at all.
        ("auto", ["readability", "coherence"], []),
        ("auto", ["consistency"], ["guided"]),
        ("auto", ["task", "consistency"], ["guided"]),
        # The judge rates consistency itself: no guided answer is asked for.
        ("judge", ["consistency"], ["judge"]),
        ("judge", ["task"], ["guided"]),
        ("judge", ["task", "readability"], ["guided", "judge"]),
    ],
)
def test_a_scorer_makes_only_the_calls_its_components_need(scorer, names, kinds):
    lm = Recorder()
    comps, failures = RewardScorer(RewardMix({"task": 1.0}), lm, PROMPTS, scorer=scorer).components(
        [EXAMPLE], [RATIONALE + " So the answer is Paris."], names
    )
    assert lm.kinds() == kinds and failures == []
    assert set(comps) == set(names) | ({WELLFORMED} if set(names) - {"task"} else set())


def test_the_gate_counts_the_scorer_s_vocabulary_as_known():
    # whereupon, became, famous are in neither the context, the question nor the stop words.
    text = "Alice Smith was born in Paris, whereupon Paris became famous."
    vocabulary = {"whereupon", "became", "famous"}
    for vocab, gate in ((None, 0.5), (vocabulary, 1.0)):
        scorer = RewardScorer(
            RewardMix({"readability": 1.0}), Recorder(), PROMPTS, vocabulary=vocab
        )
        comps, _ = scorer.components([EXAMPLE], [text])
        assert comps[WELLFORMED] == [pytest.approx(gate)]


def test_a_judge_reply_that_cannot_be_read_stays_none_through_the_gate():
    scorer = RewardScorer(RewardMix({"factuality": 1.0}), Recorder(), PROMPTS, scorer="judge")
    comps, failures = scorer.components([EXAMPLE, EXAMPLE], ["garble garble.", RATIONALE])
    assert comps["factuality"] == [None, 0.75]
    assert [f["index"] for f in failures] == [0]


def test_without_the_gate_the_wellformed_column_asked_for_leaves_aspects_as_they_are():
    scorer = RewardScorer(RewardMix({"coherence": 1.0}), Recorder(), PROMPTS, gate=False)
    comps, _ = scorer.components([EXAMPLE], ["Paris Paris Paris Paris."], ["coherence", WELLFORMED])
    # One sentence is perfectly coherent; the gate, shown but not applied, says it is junk.
    assert comps == {"coherence": [1.0], WELLFORMED: [0.0]}


def test_a_scorer_s_errors_word_for_word():
    lm = Recorder()
    with pytest.raises(
        ConfigError, match=r"^reward\.scorer='oracle': allowed values are \['auto', 'judge'\]$"
    ):
        RewardScorer(RewardMix({"task": 1.0}), lm, PROMPTS, scorer="oracle")
    with pytest.raises(
        ConfigError, match=r"^reward\.task_metric='bleu': allowed values are \['em', 'f1'\]$"
    ):
        RewardScorer(RewardMix({"task": 1.0}), lm, PROMPTS, task_metric="bleu")
    scorer = RewardScorer(RewardMix({"fluency": 1.0}), lm, PROMPTS)
    with pytest.raises(ValueError, match=r"^unknown reward components \['bogus', 'gate'\]$"):
        scorer.components([EXAMPLE], [RATIONALE], ["task", "bogus", "gate"])
    with pytest.raises(
        ValueError, match="^the fluency reward needs the reference model's token log-probs$"
    ):
        scorer([EXAMPLE], [RATIONALE])
    assert lm.requests == []
