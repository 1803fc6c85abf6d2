"""Fine-tune-CoT and distilling step-by-step through the pipeline, on the generated reasoning tasks."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lmgcot.errors import ConfigError
from lmgcot.pipeline import run
from lmgcot.pipeline.stages.teacher import teacher_temperature
from lmgcot.utils.io import read_jsonl

pytestmark = [pytest.mark.stage, pytest.mark.slow]

SMALL_TASK = ["dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=8"]


def test_finetune_cot_on_last_letter_answers_without_the_large_lm(compose_cfg, tmp_path):
    cfg = compose_cfg(
        "dataset=last_letter",
        "experiment=finetune_cot",
        *SMALL_TASK,
        "teacher.num_samples=2",
        "teacher.temperature=0.7",
        "student.max_target_length=64",
        "evaluation.methods=[finetune_cot,finetune_cot_sc,lm_guided_kd]",
    )
    results = run(cfg)
    assert list(results["methods"]) == ["lm_guided_kd", "finetune_cot", "finetune_cot_sc"]
    assert all(m["n"] == 8 for m in results["methods"].values())
    assert results["setup"]["objective"] == "rationale_answer"
    train = results["teacher"]["train"]
    # D=2 samples per question, each a rationale call plus an answer-step call.
    assert train["rationales"] == 32 and train["questions"] == 16
    assert 0 < train["kept"] < 32 and train["kept_share"] == train["kept"] / 32
    assert 0 < train["questions_kept"] <= 16
    assert results["distill"]["train_pairs"] == train["kept"]
    by_stage = results["llm"]["by_stage"]
    run_dir = tmp_path / "run"
    rows = [
        r for split in ("train", "val") for r in read_jsonl(run_dir / "teacher" / f"{split}.jsonl")
    ]
    # D=2 rationale calls per question, plus one greedy answer step per distinct completion (two
    # samples that came out the same share their answer step).
    steps = len({(r["id"], r["completion"]) for r in rows})
    assert by_stage["teacher"]["calls"] == 2 * (16 + 4) + steps
    # Only lm_guided_kd asks the large LM at evaluation: one guided answer per test question
    # (the rationale-quality scores read them back from the cache).
    assert by_stage["evaluate"]["calls"] == 8
    # The student was trained on "rationale --> answer" targets.
    pairs = read_jsonl(run_dir / "teacher" / "train.jsonl")
    assert all(p["rationale"] and "So the answer is" not in p["rationale"] for p in pairs)
    preds = read_jsonl(run_dir / "eval" / "finetune_cot.jsonl")
    assert len(preds) == 8 and all(len(p["answers"]) == 1 for p in preds)
    voted = read_jsonl(run_dir / "eval" / "finetune_cot_sc.jsonl")
    assert all(len(p["answers"]) == 2 for p in voted)
    # lm_guided_kd hands the large LM the rationale part only.
    guided = read_jsonl(run_dir / "eval" / "lm_guided_kd.jsonl")
    assert all("-->" not in r for p in guided for r in p["rationales"])


def test_diverse_reasoning_samples_are_distinct_cached_calls(compose_cfg, tmp_path):
    overrides = [
        "dataset=last_letter",
        *SMALL_TASK,
        "stages=[teacher]",
        "teacher.prompting=zero_shot_cot",
        # teacher.temperature stays null: Fine-tune-CoT's 0.7 for more than one sample.
        "teacher.num_samples=4",
    ]
    first = run(compose_cfg(*overrides))
    rows = read_jsonl(tmp_path / "run" / "teacher" / "train.jsonl")
    every = rows + read_jsonl(tmp_path / "run" / "teacher" / "val.jsonl")
    assert sorted({r["sample"] for r in rows}) == [0, 1, 2, 3] and len(every) == 20 * 4
    # 20 questions x D=4 rationales, each a distinct call, and one answer step per distinct one.
    steps = len({(r["id"], r["completion"]) for r in every})
    assert first["llm"]["calls"] == 20 * 4 + steps
    by_question: dict[str, set[str]] = {}
    for r in rows:
        by_question.setdefault(r["id"], set()).add(r["completion"])
    # Samples at temperature 0.7 differ (wording, sometimes correctness).
    assert sum(len(c) > 1 for c in by_question.values()) >= 8
    again = run(compose_cfg(*overrides, "force=true", run_dir=tmp_path / "again"))
    assert again["llm"]["calls"] == 0 and again["llm"]["cache_hits"] >= 20 * 4 + steps
    assert again["teacher"] == first["teacher"]


def test_teacher_temperature_defaults_to_greedy_for_one_sample_and_07_for_several():
    t = OmegaConf.create({"num_samples": 1, "temperature": None})
    assert teacher_temperature(t) == 0.0
    assert teacher_temperature(OmegaConf.merge(t, {"num_samples": 4})) == 0.7
    assert teacher_temperature(OmegaConf.merge(t, {"num_samples": 4, "temperature": 0.3})) == 0.3


def test_vanilla_fine_tuning_needs_no_teacher(compose_cfg):
    results = run(compose_cfg("dataset=coin_flip", "experiment=vanilla_ft", *SMALL_TASK))
    assert list(results["methods"]) == ["vanilla_ft"]
    assert results["llm"]["calls"] == 0 and results["teacher"] == {}
    assert results["distill"]["objective"] == "answer" and results["distill"]["train_pairs"] == 16


def test_step_by_step_trains_both_tasks(compose_cfg, tmp_path):
    results = run(
        compose_cfg(
            "dataset=coin_flip",
            "experiment=step_by_step",
            *SMALL_TASK,
            "distill.alpha=0.3",
            "student.max_target_length=48",
        )
    )
    assert list(results["methods"]) == ["lm_guided_kd", "finetune_cot", "finetune_cot_sc"]
    metrics = (tmp_path / "run" / "csv").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0].split(",")
    assert {"train/loss", "train/loss_predict", "train/loss_explain"} <= set(header)


def test_few_shot_cot_uses_gold_rationale_exemplars(compose_cfg, tmp_path):
    results = run(
        compose_cfg(
            "dataset=last_letter",
            *SMALL_TASK,
            "stages=[teacher]",
            "teacher.prompting=few_shot_cot",
            "teacher.few_shot_k=2",
        )
    )
    shots = results["teacher"]["exemplars"]
    assert len(shots) == 2
    # The exemplars' own questions are not among the teacher's training questions.
    rows = read_jsonl(tmp_path / "run" / "teacher" / "train.jsonl")
    assert len(rows) == 14 and not {r["id"] for r in rows} & set(shots)
    assert results["teacher"]["train"]["correct_share"] > 0.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["experiment=finetune_cot", "distill.objective=rationale"],
            "finetune_cot needs a student",
        ),
        (["experiment=vanilla_ft", "evaluation.methods=[lm_guided_kd]"], "lm_guided_kd needs"),
        (["distill.objective=rationale_answer"], "refine trains a rationale writer"),
        (["distill.objective=teacher"], "distill.objective='teacher'"),
        (["experiment=step_by_step", "distill.alpha=1.5"], "distill.alpha=1.5"),
        (["teacher.prompting=two_shot"], "teacher.prompting='two_shot'"),
    ],
)
def test_objective_mismatches_fail_before_any_work(compose_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(compose_cfg("dataset=last_letter", *SMALL_TASK, *overrides))
    assert not (tmp_path / "run" / "results.json").exists()


def test_few_shot_cot_without_gold_rationales_is_one_clear_error(compose_cfg):
    with pytest.raises(ConfigError, match="no training question with a gold rationale"):
        run(compose_cfg("stages=[teacher]", "teacher.prompting=few_shot_cot"))


def test_results_table_lists_the_student_alone_methods(compose_cfg, capsys):
    run(
        compose_cfg("dataset=coin_flip", "experiment=vanilla_ft", *SMALL_TASK, "print_results=true")
    )
    out = capsys.readouterr().out
    assert "vanilla_ft" in out


def test_templates_without_context_on_a_dataset_with_contexts_warn(compose_cfg, caplog):
    cfg = compose_cfg(
        "stages=[teacher]",
        "prompt.guided='Question: {question}\\nRationale: {rationale}\\nAnswer:'",
    )
    with caplog.at_level("WARNING", logger="lmgcot"):
        run(cfg)
    assert any("prompt.guided: no {context}" in r.message for r in caplog.records)
