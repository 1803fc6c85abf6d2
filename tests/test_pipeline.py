"""End-to-end pipeline runs on tiny configs: the results contract, resuming, and the call cache."""

from __future__ import annotations

import json

import pytest

from lmgcot.errors import BackendError, ConfigError
from lmgcot.eval.methods import PAPER_METHODS
from lmgcot.pipeline import run
from lmgcot.rewards.aspects import ASPECTS

pytestmark = [pytest.mark.stage, pytest.mark.slow]


def test_offline_default_runs_end_to_end_and_writes_results(compose_cfg, tmp_path):
    results = run(compose_cfg())
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["methods"] == results["methods"]
    assert list(results["methods"]) == list(PAPER_METHODS)
    for m in results["methods"].values():
        assert 0.0 <= m["em"] <= m["f1"] + 1e-9 <= 1.0 + 1e-9
        assert m["n"] == 8
    assert 0.0 < results["methods"]["lm_guided_kd_sc"]["vote_share"] <= 1.0
    assert 0.0 < results["methods"]["lm_guided_rl_sc"]["vote_share"] <= 1.0
    llm = results["llm"]
    assert llm["calls"] > 0 and llm["input_tokens"] > 0 and llm["output_tokens"] > 0
    assert set(llm) >= {"calls", "cache_hits", "input_tokens", "output_tokens", "cost_usd"}
    # Eight aspect scores in [0, 1] for each rationale source, and the well-formedness gate.
    quality = results["rationale_quality"]
    assert set(quality) == {"cot", "lm_guided_kd", "lm_guided_rl"}
    for scores in quality.values():
        assert list(scores) == [*ASPECTS, "wellformed"]
        assert all(0.0 <= v <= 1.0 for v in scores.values()), scores
    refine = results["refine"]
    # Rollouts of 4 rationales, 2 per question: minibatches of 2 rationales are one question each,
    # so two optimiser steps per rollout.
    assert refine["rollouts"] == 2 and refine["optimizer_steps"] == 4
    assert refine["selected"] in ("rl", "distilled") and refine["questions"] == 16
    # The export decision: the best of the two evaluations against the distilled student,
    # question by question over the 4 val questions, at 0.05 / 2.
    selection = refine["selection"]
    assert selection["selected"] == refine["selected"] and selection["threshold"] == 0.025
    assert selection["best_rollouts"] in (1, 2)
    test = selection["test"]
    assert test["wins"] + test["losses"] + test["ties"] == refine["val_questions"] == 4
    # Four questions can never reach p < 0.025 (four wins give 1/16): the distilled student.
    assert refine["selected"] == "distilled"
    assert (tmp_path / "run" / "refine" / "student" / "config.json").exists()
    # Four rationales per question: the synthetic/tiny schedule's diverse reasoning.
    assert results["teacher"]["train"]["rationales"] == 16 * 4
    assert results["distill"]["steps"] == 3
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {s["method"] for s in samples} == set(results["methods"])
    assert (tmp_path / "run" / "distill" / "student" / "config.json").exists()


def test_second_run_pays_for_no_call_and_reuses_stages(compose_cfg, tmp_path):
    first = run(compose_cfg("share_artifacts=false"))
    # A new run directory that recomputes every stage: every large-LM call is answered by the cache.
    again = run(compose_cfg("share_artifacts=false", run_dir=tmp_path / "run2"))
    assert again["llm"]["calls"] == 0
    assert again["llm"]["cache_hits"] == first["llm"]["calls"] + first["llm"]["cache_hits"]
    assert again["methods"] == first["methods"]
    # The same run directory with only the evaluate stage reuses the stored predictions; rationale
    # quality asks the (cached) large LM for the answers its consistency aspect compares with.
    evaluated = run(compose_cfg("stages=[evaluate]"))
    assert evaluated["methods"] == first["methods"]
    assert evaluated["rationale_quality"] == first["rationale_quality"]
    assert evaluated["llm"]["calls"] == 0
    bare = run(compose_cfg("stages=[evaluate]", "evaluation.rationale_quality=false"))
    assert bare["llm"]["calls"] == 0 and bare["llm"]["cache_hits"] == 0


def test_changed_evaluation_config_redoes_only_that(compose_cfg):
    run(compose_cfg())
    redone = run(
        compose_cfg(
            "stages=[evaluate]",
            "evaluation.self_consistency.k=3",
            "evaluation.rationale_quality=false",
        )
    )
    assert redone["methods"]["lm_guided_kd_sc"]["n"] == 8
    # Three guided calls per test question for the voted kd method; the others are reused from
    # disk, and lm_guided_rl_sc takes lm_guided_kd_sc's new predictions: this tiny run's refine
    # exported the distilled student unchanged.
    assert redone["refine"]["selected"] == "distilled"
    assert redone["llm"]["calls"] + redone["llm"]["cache_hits"] == 8 * 3
    assert redone["methods"]["lm_guided_rl_sc"] == redone["methods"]["lm_guided_kd_sc"]


def test_evaluate_alone_without_a_student_is_one_clear_error(compose_cfg):
    with pytest.raises(ConfigError, match="distilled student"):
        run(compose_cfg("stages=[evaluate]"))


def test_simulated_large_lm_refuses_a_dataset_it_cannot_read(compose_cfg):
    from lmgcot.data.official import SAMPLES_DIR

    cfg = compose_cfg("dataset=hotpotqa", f"dataset.path={SAMPLES_DIR / 'hotpotqa_sample.json'}")
    with pytest.raises(BackendError, match="synthetic"):
        run(cfg)


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    from lmgcot.llm.tiny_models import save_tiny_seq2seq

    return save_tiny_seq2seq(tmp_path_factory.mktemp("tiny-lm"))


@pytest.mark.parametrize(
    "dataset,sample", [("hotpotqa", "hotpotqa_sample.json"), ("2wiki", "2wiki_sample.json")]
)
def test_official_format_dataset_with_local_hf_large_lm(
    compose_cfg, tmp_path, tiny_lm_dir, dataset, sample
):
    """The real-data path end to end: official JSON file, local transformers large LM."""
    from lmgcot.data.official import SAMPLES_DIR

    cfg = compose_cfg(
        f"dataset={dataset}",
        f"dataset.path={SAMPLES_DIR / sample}",
        "dataset.split_fractions=[0.5,0.2,0.3]",
        "dataset.max_train=12",
        "dataset.max_val=4",
        "dataset.max_test=6",
        "large_lm=hf",
        f"large_lm.model={tiny_lm_dir}",
        "large_lm.device=cpu",
        "large_lm.dtype=float32",
        "teacher.max_new_tokens=16",
        "evaluation.cot_max_new_tokens=16",
        "evaluation.answer_max_new_tokens=8",
        # A random large LM is never right: keep every rationale so the student has data.
        "teacher.filter_correct=false",
        "student.max_source_length=128",
    )
    results = run(cfg)
    assert set(results["methods"]) == set(PAPER_METHODS)
    assert all(m["n"] == 6 for m in results["methods"].values())
    assert results["setup"]["large_lm"].startswith("hf:")
    assert results["setup"]["dataset"] == dataset
    assert results["llm"]["calls"] > 0
    assert results["teacher"]["train"]["kept_share"] == 1.0


def test_a_stage_run_alone_is_reused_by_the_next_invocation(compose_cfg):
    first = run(compose_cfg("stages=[teacher]"))
    assert first["methods"] == {} and first["teacher"]["train"]["rationales"] == 16 * 4
    rest = run(compose_cfg())
    # The teacher's rationales come from the run directory, not from the large LM or its cache.
    assert "teacher" not in rest["llm"]["by_stage"]
    assert rest["teacher"] == first["teacher"]
    assert set(rest["methods"]) == set(PAPER_METHODS)


def test_the_same_seed_reproduces_a_run_and_another_seed_does_not(tmp_path):
    from conftest import FAST, SMALL_SYNTHETIC, TINY_STUDENT
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lmgcot.cli import CONFIG_DIR

    def run_in(root, seed):
        # Separate output roots: nothing is shared, not even the call cache.
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    f"paths.output_dir={root}",
                    f"paths.run_dir={root}/run",
                    f"seed={seed}",
                    *TINY_STUDENT,
                    *FAST,
                    *SMALL_SYNTHETIC,
                ],
            )
        GlobalHydra.instance().clear()
        results = run(cfg)
        preds = (root / "run" / "eval" / "lm_guided_kd_sc.jsonl").read_text()
        return results, preds

    a, preds_a = run_in(tmp_path / "a", 0)
    b, preds_b = run_in(tmp_path / "b", 0)
    c, preds_c = run_in(tmp_path / "c", 1)
    assert a["methods"] == b["methods"] and preds_a == preds_b
    assert a["distill"]["best_val_loss"] == b["distill"]["best_val_loss"]
    assert preds_c != preds_a


def test_evaluating_a_student_trained_under_another_config_warns(compose_cfg, caplog):
    run(compose_cfg())
    with caplog.at_level("WARNING", logger="lmgcot"):
        run(compose_cfg("stages=[evaluate]", "teacher.filter_correct=false"))
    assert any("trained under another config" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmgcot"):
        run(compose_cfg("stages=[evaluate]"))
    assert not any("another config" in r.getMessage() for r in caplog.records)
