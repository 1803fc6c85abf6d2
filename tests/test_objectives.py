"""Student objectives: `-->` parsing, the training targets per objective, the multitask loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import config_group

from lmgcot.data.example import Example
from lmgcot.distill.datamodule import RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.eval.predict import student_answers
from lmgcot.prompts import PromptTemplates
from lmgcot.student.models import build_student
from lmgcot.student.objectives import (
    OBJECTIVES,
    TARGET,
    parse_rationale_answer,
    rationale_answer_target,
    rationale_of,
)
from lmgcot.teacher import TeacherRationale, kept_rationales

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)


def reasoning_templates() -> PromptTemplates:
    raw = config_group("prompt")
    raw.update(yaml.safe_load((ROOT / "lmgcot/conf/prompt_presets/reasoning.yaml").read_text()))
    return PromptTemplates(**raw)


# -- `rationale --> answer` parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "rationale", "answer"),
    [
        # The rationale precedes the first separator, the answer follows the last one.
        ("Ends in e. Ends in b. --> eb", "string", "Ends in e. Ends in b.", "eb"),
        ("a --> b --> c", "string", "a", "c"),
        ("She has 3 + 4 = 7 apples. --> 7", "number", "She has 3 + 4 = 7 apples.", "7"),
        # Typed answers are read from after the separator, not from the rationale.
        ("12 eggs, minus 5. --> 1,200 eggs", "number", "12 eggs, minus 5.", "1200"),
        ("It flips twice. --> Yes.", "yes_no", "It flips twice.", "yes"),
        ("Banks hold money. --> (C)", "choice", "Banks hold money.", "C"),
        # Nothing of its type after the separator: the last candidate in the whole text.
        ("So 3 then 9. --> nine", "number", "So 3 then 9.", "9"),
        # No separator (a truncated output): the last candidate, the text is the rationale.
        ("First 4, then 4 * 2 = 8", "number", "First 4, then 4 * 2 = 8", "8"),
        ("It was flipped, so no", "yes_no", "It was flipped, so no", "no"),
        ("It was flipped", "yes_no", "It was flipped", ""),
        ("", "number", "", ""),
    ],
)
def test_rationale_answer_parsing(text, kind, rationale, answer):
    assert parse_rationale_answer(text, kind) == (rationale, answer)


def test_targets_round_trip_and_rationale_of_strips_the_answer():
    target = rationale_answer_target(" Ends in e. ", "eb ")
    assert target == "Ends in e. --> eb"
    assert parse_rationale_answer(target) == ("Ends in e.", "eb")
    assert rationale_of("rationale_answer", target) == "Ends in e."
    assert rationale_of("rationale", target) == target


def test_student_answers_vote_over_parsed_outputs():
    ex = Example("q1", "Take ...", "eb", (), answer_type="string")
    preds = student_answers(
        [ex], [["x --> eb", "y --> ab", "z --> EB."]], OBJECTIVES["rationale_answer"]
    )
    assert preds[0].prediction == "eb" and preds[0].em == 1.0
    assert preds[0].vote_share == pytest.approx(2 / 3)
    assert preds[0].rationales == ["x", "y", "z"]
    number = Example("q2", "How many?", "1250", (), answer_type="number")
    assert student_answers([number], [["1,250"]], OBJECTIVES["answer"])[0].em == 1.0
    assert student_answers([number], [["about twelve"]], OBJECTIVES["answer"])[0].em == 0.0


# -- training targets per objective ------------------------------------------------------------


def _examples_and_rationales():
    examples = [
        Example(
            "a", 'Take the last letters of the words in "Ab Cd" and concatenate them.', "bd", ()
        ),
        Example(
            "b", 'Take the last letters of the words in "Ef Gh" and concatenate them.', "fh", ()
        ),
    ]
    rationales = [
        TeacherRationale("a", 0, 'The last letter of "Ab" is "b".', "bd", True, "..."),
        TeacherRationale("a", 1, 'The last letter of "Ab" is "a".', "ad", False, "..."),
        TeacherRationale("b", 0, 'The last letter of "Ef" is "f".', "fh", True, "..."),
        TeacherRationale("b", 1, "   ", "fh", True, "..."),
    ]
    return examples, rationales


def training_pairs(examples, rationales, prompts, filter_correct=True, objective="rationale"):
    """One objective's pairs over the kept rationales, as the distill stage makes them."""
    kept = kept_rationales(rationales, filter_correct)
    return OBJECTIVES[objective].pairs(examples, kept, prompts)


def test_training_pairs_per_objective():
    examples, rationales = _examples_and_rationales()
    prompts = reasoning_templates()
    plain = training_pairs(examples, rationales, prompts, objective="rationale")
    # Wrong and empty rationales are dropped; the input is the question alone (no context).
    assert not plain.multitask and plain.count == 2
    assert plain.tasks[TARGET] == [
        (examples[0].question, 'The last letter of "Ab" is "b".'),
        (examples[1].question, 'The last letter of "Ef" is "f".'),
    ]
    with_answer = training_pairs(examples, rationales, prompts, objective="rationale_answer")
    assert [t for _, t in with_answer.tasks[TARGET]] == [
        'The last letter of "Ab" is "b". --> bd',
        'The last letter of "Ef" is "f". --> fh',
    ]
    unfiltered = training_pairs(
        examples, rationales, prompts, filter_correct=False, objective="rationale_answer"
    )
    assert 'The last letter of "Ab" is "a". --> ad' in [t for _, t in unfiltered.tasks[TARGET]]
    multi = training_pairs(examples, rationales, prompts, objective="multitask")
    assert multi.multitask and multi.tasks["predict"] == [
        (f"predict: {examples[0].question}", "bd"),
        (f"predict: {examples[1].question}", "fh"),
    ]
    assert [s for s, _ in multi.tasks["explain"]] == [
        f"explain: {examples[0].question}",
        f"explain: {examples[1].question}",
    ]
    assert multi.count == 2
    # Vanilla fine-tuning: gold answers for every question, no teacher needed.
    assert training_pairs(examples, [], prompts, objective="answer").tasks[TARGET] == [
        (examples[0].question, "bd"),
        (examples[1].question, "fh"),
    ]


# -- the multitask loss ------------------------------------------------------------------------


def test_multitask_loss_is_alpha_weighted_sum_of_task_means():
    torch.manual_seed(0)
    student = build_student("tiny", None, 64, 24, architecture=TINY, tokenizer="byt5", seed=0)
    examples, rationales = _examples_and_rationales()
    pairs = training_pairs(examples, rationales, reasoning_templates(), objective="multitask")
    dm = RationaleDataModule(
        student.tokenizer, pairs, pairs, 64, 24, batch_size=2, eval_batch_size=2
    )
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"predict", "explain"}
    assert batch["predict"]["input_ids"].shape[0] == batch["explain"]["input_ids"].shape[0] == 2
    model = student.model.eval()
    with torch.no_grad():
        pred = model(**batch["predict"]).loss
        expl = model(**batch["explain"]).loss
        for alpha in (0.5, 0.2, 1.0):
            module = RationaleDistiller(
                model,
                optimizer=torch.optim.SGD,
                task_weights={"predict": alpha, "explain": 1 - alpha},
            )
            losses = module.task_losses(batch)
            assert losses["predict"] == pytest.approx(pred.item())
            assert losses["explain"] == pytest.approx(expl.item())
            assert losses["loss"] == pytest.approx(alpha * pred.item() + (1 - alpha) * expl.item())
    # The two task losses differ, so the weighting is visible.
    assert abs(pred.item() - expl.item()) > 1e-3
    with pytest.raises(ValueError, match="no weight"):
        RationaleDistiller(model, optimizer=torch.optim.SGD).task_losses(batch)
