"""Rationale distillation: teacher artifacts, batching, the Lightning module learning, and export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import config_group

from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.distill.datamodule import LengthGroupedBatchSampler, RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.student.batching import collate_pairs
from lmgcot.student.generate import generate_rationales as student_rationales
from lmgcot.student.models import build_student
from lmgcot.student.objectives import OBJECTIVES, TrainingPairs
from lmgcot.teacher import kept_rationales, sample_rationales, teacher_stats

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)


def templates() -> PromptTemplates:
    return PromptTemplates(**config_group("prompt"))


@pytest.mark.unit
def test_teacher_rationales_are_filtered_by_their_answers():
    examples = SyntheticMultiHop(n_train=60, n_val=0, n_test=0, seed=1).load_splits().train
    lm = SimulatedLargeLM(error_rate=0.3)
    prompts = templates()
    rationales = sample_rationales(examples, lm, prompts, num_samples=2, temperature=0.7)
    assert len(rationales) == 120 and {r.sample for r in rationales} == {0, 1}
    # The answer sentence is stripped from what the student learns, and kept in the completion.
    assert all("answer is" not in r.rationale and "answer is" in r.completion for r in rationales)
    wrong = [r for r in rationales if not r.correct]
    assert 0 < len(wrong) < len(rationales)
    rationale = OBJECTIVES["rationale"]
    kept = rationale.pairs(examples, kept_rationales(rationales, True), prompts).tasks["target"]
    everything = rationale.pairs(examples, kept_rationales(rationales, False), prompts)
    everything = everything.tasks["target"]
    assert len(kept) == len(rationales) - len(wrong) and len(everything) == len(rationales)
    assert {t for _, t in kept} == {r.rationale for r in rationales if r.correct}
    stats = teacher_stats(rationales, filter_correct=True)
    assert stats["questions"] == 60 and stats["kept_share"] == len(kept) / 120
    covered = {r.id for r in rationales if r.correct}
    assert (
        stats["questions_kept"] == len(covered)
        and stats["questions_kept_share"] == len(covered) / 60
    )
    assert teacher_stats(rationales, filter_correct=False)["kept"] == 120


@pytest.mark.unit
def test_length_grouped_batches_cover_every_item_once_with_little_padding():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=0, mega=10)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(400))
        assert all(len(b) <= 8 for b in epoch)
    assert first != second  # a new order every epoch
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(
        first
    )
    assert spread < 10  # random batches would spread by about 70
    again = LengthGroupedBatchSampler(lengths, batch_size=8, seed=0, mega=10)
    assert list(again) == first


@pytest.mark.unit
def test_collate_pads_inputs_and_masks_labels():
    batch = collate_pairs(
        [
            {"input_ids": [5, 6, 1], "labels": [7, 1]},
            {"input_ids": [5, 1], "labels": [8, 9, 10, 1]},
        ],
        pad_id=0,
    )
    # Padded to the longest member only: nothing in distillation is compiled.
    assert batch["input_ids"].shape == (2, 3) and batch["labels"].shape == (2, 4)
    assert batch["input_ids"][1, :3].tolist() == [5, 1, 0]
    assert batch["attention_mask"][1, :3].tolist() == [1, 1, 0]
    assert batch["labels"][0, :3].tolist() == [7, 1, -100]


def _copy_task(n: int) -> list[tuple[str, str]]:
    words = ["alpha", "bravo", "delta", "kilo", "lima", "sierra", "tango", "zulu"]
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(n):
        idx = torch.randint(0, len(words), (3,), generator=g).tolist()
        phrase = " ".join(words[i] for i in idx)
        pairs.append((f"question: repeat {phrase}", f"{phrase}."))
    return pairs


def _bpe_student(pairs: list[tuple[str, str]], max_target_length: int):
    corpus = [t for p in pairs for t in p]
    return build_student(
        "tiny",
        architecture=TINY,
        tokenizer="bpe",
        vocab_size=300,
        corpus=corpus,
        max_target_length=max_target_length,
    )


@pytest.mark.stage
@pytest.mark.slow
def test_distiller_loss_falls_with_a_real_trainer(tmp_path):
    pl.seed_everything(0, verbose=False)
    pairs = _copy_task(64)
    student = _bpe_student(pairs, max_target_length=16)
    train, val = TrainingPairs({"target": pairs}), TrainingPairs({"target": pairs[:16]})
    dm = RationaleDataModule(student.tokenizer, train, val, 64, 16, batch_size=8)
    module = RationaleDistiller(
        student.model,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
    )
    logger = pl.loggers.CSVLogger(tmp_path, name="csv", version="")
    trainer = pl.Trainer(
        max_epochs=10,
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(train) == 80 and len(val) == 10
    assert sum(train[-8:]) / 8 < 0.6 * sum(train[:8]) / 8
    assert val[-1] < 0.6 * val[0]


@pytest.mark.unit
def test_a_saved_student_reloads_and_generates_the_same(tmp_path):
    pairs = _copy_task(16)
    student = _bpe_student(pairs, max_target_length=12)
    inputs = [s for s, _ in pairs[:4]]
    before = student_rationales(student, inputs)
    student.model.save_pretrained(tmp_path)
    student.tokenizer.save_pretrained(tmp_path)
    reloaded = build_student("tiny", pretrained=str(tmp_path), max_target_length=12)
    assert reloaded.tokenizer(inputs[0])["input_ids"] == student.tokenizer(inputs[0])["input_ids"]
    assert student_rationales(reloaded, inputs) == before


@pytest.mark.unit
def test_student_generation_through_fast_t5_is_the_model_s_own():
    """Greedy rationales are the same whichever decoder writes them (`fast`, the default, or
    the model's own `generate`); beam search is always the model's own."""
    pairs = _copy_task(16)
    student = _bpe_student(pairs, max_target_length=12)
    inputs = [s for s, _ in pairs[:6]]
    fast = student_rationales(student, inputs, batch_size=4)
    assert fast == student_rationales(student, inputs, batch_size=4, fast=False)
    # Beam search (always the model's own `generate`), batched and padded, gives what the model
    # finds for each input alone.
    beams = student_rationales(student, inputs, num_beams=2, batch_size=4)
    model, tok = student.model.eval(), student.tokenizer
    alone = []
    for text in inputs:
        ids = tok([text], return_tensors="pt")["input_ids"]
        seq = model.generate(
            input_ids=ids,
            max_new_tokens=student.max_target_length,
            num_beams=2,
            do_sample=False,
            decoder_start_token_id=model.config.decoder_start_token_id,
        )[0]
        alone.append([tok.decode(seq, skip_special_tokens=True).strip()])
    assert beams == alone


@pytest.mark.unit
def test_student_sampling_is_seeded_and_greedy_copies_are_identical():
    pairs = _copy_task(16)
    student = build_student("tiny", architecture=TINY, tokenizer="byt5", max_target_length=8)
    inputs = [s for s, _ in pairs[:3]]
    a = student_rationales(student, inputs, num_samples=4, temperature=1.0, seed=3)
    b = student_rationales(student, inputs, num_samples=4, temperature=1.0, seed=3)
    assert a == b and all(len(x) == 4 for x in a)
    assert any(len(set(x)) > 1 for x in a)
    greedy = student_rationales(student, inputs, num_samples=3)
    assert all(len(set(x)) == 1 and len(x) == 3 for x in greedy)
