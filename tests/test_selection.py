"""Choosing among sampled rationales (lmgcot.eval.selection): best-of-k by a rationale reward,
quality-weighted self-consistency and the oracle bound; their fingerprints and checks, the samples
and large-LM calls they share with `_sc`, and the analysis written from their predictions."""

from __future__ import annotations

import random
import re

import pytest
import yaml
from conftest import config_group
from omegaconf import OmegaConf

from lmgcot.answers.extract import majority_vote
from lmgcot.artifacts import RunDir
from lmgcot.config.validate import check
from lmgcot.data.example import Example
from lmgcot.errors import ConfigError
from lmgcot.eval.methods import METHODS, ORACLES, MethodContext
from lmgcot.eval.samples import SampleStore
from lmgcot.eval.selection import (
    Quality,
    best_index,
    oracle_index,
    selection_rewards,
    vote_index,
)
from lmgcot.llm.base import Completion, LargeLM, Request
from lmgcot.pipeline import run
from lmgcot.pipeline.output import format_results_table
from lmgcot.pipeline.stages.evaluate import method_fingerprint
from lmgcot.prompts import PromptTemplates
from lmgcot.report.compare import main as compare_main
from lmgcot.report.runs import load_runs
from lmgcot.report.selection import curve_values, selection_report, write_selection
from lmgcot.student.objectives import OBJECTIVES
from lmgcot.utils.io import read_jsonl


class PickingLM(LargeLM):
    """Answers with what follows "pick:" in the rationale it is shown; records every prompt.
    (Names, not letters: "A" normalises away as an article.)"""

    backend = "picking"

    def __init__(self):
        super().__init__("picking")
        self.prompts: list[str] = []

    def _complete(self, requests: list[Request]) -> list[Completion]:
        self.prompts += [r.prompt for r in requests]
        return [Completion(_picked(r.prompt)) for r in requests]


def _picked(prompt: str) -> str:
    found = re.findall(r"pick:(\w+)", prompt)
    return found[-1] if found else ""


def _example(i: int, gold: str) -> Example:
    return Example(id=f"q{i}", question=f"Question {i}?", answer=gold, context=())


@pytest.fixture(scope="module")
def prompts() -> PromptTemplates:
    return PromptTemplates(**config_group("prompt"), context_mode="all")


def _context(lm, prompts, samples: list[list[str]], scores: list[list[float | None]], k: int):
    """A MethodContext whose student 'samples' `samples` and whose rater gives `scores`."""
    store = SampleStore(None, "fixed")
    inputs_seen: list[list[str]] = []

    def rate(examples, rationales):
        inputs_seen.append(rationales)
        return Quality([list(s) for s in scores], [{"readability": list(s)} for s in scores])

    # Seeded into the store under the key the methods will ask for: no student is needed.
    original_get = store.get

    def get(inputs, settings, generate):
        return original_get(inputs, settings, lambda: [list(s) for s in samples])

    store.get = get  # type: ignore[method-assign]
    settings = {
        "answer_max_new_tokens": 8,
        "self_consistency": {"k": k, "temperature": 0.7, "top_p": 1.0},
        "student_batch_size": 4,
        "select_reward": "readability",
    }
    ctx = MethodContext(
        large_lm=lm,
        prompts=prompts,
        settings=settings,
        objective=OBJECTIVES["rationale"],
        seed=0,
        batch_size=4,
        samples=store,
        rate=rate,
    )
    return ctx, store


# -- the choices ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_best_of_k_gives_the_large_lm_only_the_highest_scoring_rationale(prompts):
    lm = PickingLM()
    examples = [_example(0, "Bo"), _example(1, "Ann")]
    samples = [["pick:Ann", "pick:Bo", "pick:Cy"], ["pick:Ann", "pick:Bo", "pick:Cy"]]
    # Known scores: the argmax is the 2nd sample, then a tie (to the earliest) behind a missing one.
    scores = [[0.2, 0.9, 0.5], [None, 0.4, 0.4]]
    ctx, _ = _context(lm, prompts, samples, scores, k=3)
    preds = METHODS["lm_guided_kd_best"].predict(ctx, examples, None)
    assert [p.chosen for p in preds] == [1, 1]
    assert [p.prediction for p in preds] == ["Bo", "Bo"]
    assert [p.em for p in preds] == [1.0, 0.0]
    # One large-LM call per question, with the chosen rationale.
    assert [_picked(p) for p in lm.prompts] == ["Bo", "Bo"]
    assert preds[0].scores == [0.2, 0.9, 0.5] and preds[0].rationales == samples[0]


@pytest.mark.unit
def test_weighted_self_consistency_can_overturn_the_plain_vote(prompts):
    lm = PickingLM()
    examples = [_example(0, "Bo")]
    samples = [["pick:Ann", "pick:Ann", "pick:Bo"]]
    scores = [[0.1, 0.1, 0.9]]  # two poor rationales for A, one good one for B
    ctx, _ = _context(lm, prompts, samples, scores, k=3)
    plain = METHODS["lm_guided_kd_sc"].predict(ctx, examples, None)
    weighted = METHODS["lm_guided_kd_wsc"].predict(ctx, examples, None)
    assert plain[0].prediction == "Ann" and plain[0].em == 0.0
    assert weighted[0].prediction == "Bo" and weighted[0].em == 1.0
    assert weighted[0].answers == plain[0].answers == ["Ann", "Ann", "Bo"]
    assert weighted[0].answer_em == [0.0, 0.0, 1.0]
    assert weighted[0].vote_share == pytest.approx(0.9 / 1.1)


@pytest.mark.unit
def test_equal_weights_vote_as_self_consistency_does():
    rng = random.Random(0)
    for _ in range(300):
        answers = [
            rng.choice(["Ann", "ann.", "Bo", "", "the Cy"]) for _ in range(rng.randint(1, 6))
        ]
        i, share = vote_index(answers)
        expected, expected_share = majority_vote(answers)
        assert (answers[i] if i >= 0 else "") == expected and share == expected_share
        same, _ = vote_index(answers, [0.5] * len(answers))
        assert same == i


@pytest.mark.unit
def test_ties_are_broken_the_same_way_every_time():
    assert best_index([0.3, 0.7, 0.7]) == 1
    assert best_index([None, None]) == 0
    # Equal weight: more votes win; equal votes too: the answer seen first.
    assert vote_index(["Ann", "Bo", "Bo"], [0.5, 0.25, 0.25]) == (1, 0.5)
    assert vote_index(["Ann", "Bo"], [0.5, 0.5])[0] == 0
    assert vote_index(["", ""], [1.0, 1.0]) == (-1, 0.0)
    assert oracle_index([0.0, 1.0, 1.0], [0.5, 1.0, 1.0]) == 1
    assert oracle_index([0.0, 0.0], [0.2, 0.6]) == 1


@pytest.mark.unit
def test_the_oracle_takes_a_right_answer_whenever_a_sample_has_one(prompts):
    lm = PickingLM()
    examples = [_example(0, "Cy"), _example(1, "Z")]
    samples = [["pick:Ann", "pick:Cy", "pick:Cy"], ["pick:Ann", "pick:Bo", "pick:Ann"]]
    ctx, _ = _context(lm, prompts, samples, [[0.0] * 3] * 2, k=3)
    preds = METHODS["oracle_best_of_k"].predict(ctx, examples, None)
    assert [p.em for p in preds] == [1.0, 0.0]
    assert preds[0].chosen == 1
    assert METHODS["oracle_best_of_k"].oracle and ORACLES == ("oracle_best_of_k",)


@pytest.mark.unit
def test_the_selection_rewards_are_the_reward_options_without_the_gold_answer():
    rewards = selection_rewards()
    assert "rationale" in rewards and "readability" in rewards
    assert "task" not in rewards and "all" not in rewards
    assert set(rewards["readability"]) == {"readability"}


@pytest.mark.unit
def test_the_results_table_shows_the_oracle_apart():
    row = {"em": 0.5, "f1": 0.5, "n": 4}
    results = {
        "methods": {"lm_guided_kd": row, "oracle_best_of_k": row, "lm_guided_kd_best": row},
        "llm": {"calls": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0},
    }
    lines = format_results_table(results).splitlines()
    names = [line.split()[0] for line in lines]
    bound = next(i for i, line in enumerate(lines) if "bound" in line)
    assert names.index("lm_guided_kd_best") < bound < names.index("oracle_best_of_k")


# -- fingerprints and checks -----------------------------------------------------------------------


@pytest.mark.unit
def test_fingerprints_change_with_k_and_the_selection_reward(compose_cfg, tmp_path):
    layout = RunDir(tmp_path / "run")
    cfg = compose_cfg()

    def fp(method, *overrides):
        # One composed config, changed key by key: composing each would take seconds.
        changed = cfg.copy()
        for override in overrides:
            key, _, value = override.partition("=")
            OmegaConf.update(changed, key, yaml.safe_load(value))
        return method_fingerprint(changed, layout, method)

    for method in ("lm_guided_kd_best", "lm_guided_kd_wsc", "lm_guided_rl_best"):
        base = fp(method)
        assert fp(method, "evaluation.self_consistency.k=4") != base
        assert fp(method, "evaluation.self_consistency.temperature=0.9") != base
        assert fp(method, "evaluation.select_reward=readability") != base
        assert fp(method, "reward.scorer=judge") != base
    oracle = fp("oracle_best_of_k")
    assert fp("oracle_best_of_k", "evaluation.self_consistency.k=4") != oracle
    # Neither the oracle nor the methods that choose nothing read the selection reward.
    for method in ("oracle_best_of_k", "lm_guided_kd_sc", "lm_guided_kd"):
        assert fp(method, "evaluation.select_reward=readability") == fp(method)


@pytest.mark.unit
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["evaluation.self_consistency.k=0"], "evaluation.self_consistency.k=0: must be >= 1"),
        (["evaluation.select_reward=task"], "evaluation.select_reward='task': allowed values"),
        (["evaluation.select_reward=nope"], "evaluation.select_reward='nope': allowed values"),
        (
            ["stages=[teacher,distill,evaluate]", "evaluation.methods=[lm_guided_rl_best]"],
            "lm_guided_rl_best need an RL-refined student and the refine stage does not run",
        ),
        (["objective=methods.oracle_best_of_k.em"], "oracle_best_of_k chooses with the gold"),
    ],
    ids=["k", "task", "unknown", "refine", "objective"],
)
def test_bad_selection_settings_are_refused_in_one_line_before_any_work(
    compose_cfg, tmp_path, overrides, message
):
    (tmp_path / "run").mkdir()  # the run directory Hydra would have made, with no student in it
    with pytest.raises(ConfigError) as info:
        check(compose_cfg(*overrides))
    assert str(info.value).count("\n") == 0
    assert message in str(info.value)


# -- sharing with _sc, end to end ------------------------------------------------------------------


CHOOSERS = ["lm_guided_kd_sc", "lm_guided_kd_best", "lm_guided_kd_wsc", "oracle_best_of_k"]


@pytest.fixture
def generations(monkeypatch):
    """Counts the student's sampled generations (temperature > 0)."""
    import lmgcot.student.generate as generate

    calls = []
    real = generate.generate_rationales

    def counting(*args, **kwargs):
        if kwargs.get("temperature", 0) > 0:
            calls.append(kwargs.get("num_samples"))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_rationales", counting)
    return calls


def _evaluate_calls(results: dict) -> int:
    return results["llm"]["by_stage"].get("evaluate", {}).get("calls", 0)


@pytest.mark.stage
def test_choosing_methods_share_the_samples_and_the_calls_of_sc(compose_cfg, generations, tmp_path):
    common = ["stages=[teacher,distill,evaluate]", "evaluation.rationale_quality=false"]
    alone = run(compose_cfg(*common, "evaluation.methods=[lm_guided_kd_sc]"))
    assert generations == [2]
    # Re-evaluating with the choosing methods: no sample generated again, no large-LM call paid
    # again (the selection reward's consistency asks the very questions _sc asked).
    both = run(
        compose_cfg(*common[1:], "stages=[evaluate]", f"evaluation.methods=[{','.join(CHOOSERS)}]")
    )
    assert generations == [2]
    assert _evaluate_calls(both) == 0
    assert both["methods"]["lm_guided_kd_sc"] == alone["methods"]["lm_guided_kd_sc"]
    preds = {m: read_jsonl(tmp_path / "run" / "eval" / f"{m}.jsonl") for m in CHOOSERS}
    for method in CHOOSERS[1:]:
        assert [p["rationales"] for p in preds[method]] == [
            p["rationales"] for p in preds["lm_guided_kd_sc"]
        ]
    assert [p["answers"] for p in preds["lm_guided_kd_wsc"]] == [
        p["answers"] for p in preds["lm_guided_kd_sc"]
    ]
    assert both["methods"]["oracle_best_of_k"]["em"] >= max(
        both["methods"][m]["em"] for m in CHOOSERS[:-1]
    )

    # All at once in a fresh run directory on a fresh call cache: sampled once, and best-of-k
    # alone pays one large-LM call per question (readability needs no large LM).
    fresh = [f"paths.cache_dir={tmp_path / 'cache2'}", "evaluation.select_reward=readability"]
    generations.clear()
    best = run(
        compose_cfg(
            *common, *fresh, "evaluation.methods=[lm_guided_kd_best]", run_dir=tmp_path / "r2"
        )
    )
    assert generations == [2]
    assert _evaluate_calls(best) == best["methods"]["lm_guided_kd_best"]["n"]
    generations.clear()
    run(
        compose_cfg(
            *common, *fresh, f"evaluation.methods=[{','.join(CHOOSERS)}]", run_dir=tmp_path / "r3"
        )
    )
    assert generations == [2]

    # The analysis reads these predictions: at the run's k, the curve is the methods' own EM.
    runs = load_runs(tmp_path / "run")
    report = selection_report(runs, n_boot=200, seed=0)
    curve = {(p["selector"], p["k"]): p["mean"] for p in report["configs"][0]["k_curve"]}
    assert curve[("self-consistency", 2)] == pytest.approx(both["methods"]["lm_guided_kd_sc"]["em"])
    assert curve[("weighted SC", 2)] == pytest.approx(both["methods"]["lm_guided_kd_wsc"]["em"])
    assert curve[("oracle", 2)] == pytest.approx(both["methods"]["oracle_best_of_k"]["em"])
    written = write_selection(runs, tmp_path, n_boot=200, seed=0)
    assert written == ["selection.md", "selection_k.png", "selection_deciles.png"]
    table = (tmp_path / "selection.md").read_text()
    assert table.index("bound: chooses with the gold answer") < table.index("| oracle_best_of_k |")
    assert all((tmp_path / name).stat().st_size > 0 for name in written)
    # lmgcot-compare writes the same analysis beside its comparison.
    assert (
        compare_main([str(tmp_path / "run"), "--n-boot", "200", "--out", str(tmp_path / "c")]) == 0
    )
    assert (tmp_path / "c" / "selection.md").read_text() == table


@pytest.mark.unit
def test_the_k_curve_reads_disjoint_blocks_of_the_samples():
    record = {
        "answers": ["Ann", "Ann", "Bo", "Bo"],
        "answer_em": [0.0, 0.0, 1.0, 1.0],
        "scores": [0.1, 0.2, 0.9, 0.3],
    }
    # k=4: best is the 3rd (right); the plain vote ties and takes Ann; the weights pick Bo.
    assert curve_values(record, 4) == {
        "best-of-k": 1.0,
        "self-consistency": 0.0,
        "weighted SC": 1.0,
        "oracle": 1.0,
    }
    # k=2: blocks (Ann, Ann) and (Bo, Bo); k=1: each sample alone.
    assert set(curve_values(record, 2).values()) == {0.5}
    assert set(curve_values(record, 1).values()) == {0.5}
