"""Distillation batches: token budgets, encoder-decoder length grouping, and the padding they leave
on the throughput benchmark's pairs and on the default run's distillation data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import config_group, quiet_trainer
from omegaconf import OmegaConf

from lmgcot.data.synthetic import SyntheticMultiHop
from lmgcot.distill.datamodule import (
    LengthGroupedBatchSampler,
    RationaleDataModule,
    TokenBudgetBatchSampler,
)
from lmgcot.distill.module import RationaleDistiller
from lmgcot.llm.simulated import SimulatedLargeLM
from lmgcot.pipeline.stages.teacher import teacher_temperature
from lmgcot.prompts import PromptTemplates
from lmgcot.student.models import build_student
from lmgcot.student.objectives import OBJECTIVES, TrainingPairs
from lmgcot.teacher import kept_rationales, sample_rationales

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _lengths(n: int, seed: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(5, 120, (n,), generator=g).tolist(),
        torch.randint(2, 40, (n,), generator=g).tolist(),
    )


def padding_efficiency(datamodule: RationaleDataModule) -> float:
    """Real / padded tokens over one epoch of the training batches as the trainer gets them."""
    real = padded = 0
    for batch in datamodule.train_dataloader():
        labels = batch["labels"]
        real += int(batch["attention_mask"].sum()) + int((labels != -100).sum())
        padded += batch["input_ids"].numel() + labels.numel()
    return real / padded


@pytest.mark.unit
def test_token_budget_batches_hold_every_pair_once_within_the_budget():
    src, tgt = _lengths(300, seed=0)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=400, seed=1, pad_multiple=8)
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        assert len(batches) == len(sampler)  # the same count every epoch: len is exact
        assert sorted(i for b in batches for i in b) == list(range(300))
        for b in batches:
            width = -(-max(src[i] for i in b) // 8) * 8 + -(-max(tgt[i] for i in b) // 8) * 8
            assert len(b) * width <= 400
    assert epochs[0] != epochs[1]  # a new order every epoch
    assert list(TokenBudgetBatchSampler(src, tgt, 400, seed=1, pad_multiple=8)) == epochs[0]
    # Short pairs share a batch: more rows where the pairs are short.
    rows = {len(b): max(src[i] + tgt[i] for i in b) for b in epochs[0]}
    assert max(rows) > 2 * min(rows) and rows[max(rows)] < rows[min(rows)]


@pytest.mark.unit
def test_a_pair_longer_than_the_budget_is_a_batch_of_its_own():
    sampler = TokenBudgetBatchSampler([50, 3, 4, 60], [10, 2, 2, 1], max_tokens=40)
    batches = sorted(sorted(b) for b in sampler)
    assert batches == [[0], [1, 2], [3]] and len(sampler) == 3


@pytest.mark.unit
def test_each_process_gets_an_equal_disjoint_share_of_the_token_budget_batches():
    src, tgt = _lengths(203, seed=2)
    whole = TokenBudgetBatchSampler(src, tgt, 300, seed=3)
    shares = [list(TokenBudgetBatchSampler(src, tgt, 300, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole) // 2
    seen = [i for share in shares for b in share for i in b]
    assert len(seen) == len(set(seen))
    assert {tuple(b) for s in shares for b in s} <= {tuple(b) for b in list(whole)}


@pytest.mark.unit
def test_encoder_decoder_grouping_pads_less_than_grouping_on_the_summed_length():
    src, tgt = _lengths(800, seed=4)
    total = [a + b for a, b in zip(src, tgt)]

    def efficiency(batches) -> float:
        padded = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)
        return sum(total) / padded

    by_sum = list(LengthGroupedBatchSampler(total, 8, seed=0))
    by_pair = list(LengthGroupedBatchSampler(src, 8, seed=0, target_lengths=tgt))
    assert sorted(i for b in by_pair for i in b) == list(range(800))
    assert len(by_pair) == len(LengthGroupedBatchSampler(src, 8, target_lengths=tgt)) == 100
    assert efficiency(by_pair) > efficiency(by_sum) + 0.05


@pytest.mark.unit
def test_the_throughput_benchmark_batches_are_at_least_95_percent_real_tokens():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from workload import make_pairs, tiny_t5
    finally:
        sys.path.remove(str(BENCHMARKS))
    _, tokenizer = tiny_t5()
    pairs = TrainingPairs({"target": make_pairs()})
    # The budget benchmarks/throughput.py gives ours: about four of these pairs.
    dm = RationaleDataModule(tokenizer, pairs, pairs, 1024, 256, max_tokens=2048)
    assert padding_efficiency(dm) >= 0.95


@pytest.mark.stage
@pytest.mark.slow
def test_the_default_runs_distillation_batches_are_at_least_92_percent_real_tokens():
    """The default run's training pairs (synthetic data, the simulated teacher, the BPE student)
    under the default distill options. The teacher writes one to six sentences, so targets vary
    more in length than sources: 0.930 of the batch tokens are real (0.98 when every rationale had
    two sentences)."""
    dataset = config_group("dataset")
    dataset.pop("_target_")
    examples = SyntheticMultiHop(**dataset).load_splits().train
    large_lm = config_group("large_lm")
    large_lm.pop("_target_")
    teacher, student_cfg = config_group("teacher"), config_group("student")
    prompts = PromptTemplates(**config_group("prompt"), context_mode=dataset["context"])
    rationales = sample_rationales(
        examples,
        SimulatedLargeLM(**large_lm),
        prompts,
        num_samples=teacher["num_samples"],
        temperature=teacher_temperature(OmegaConf.create(teacher)),
        top_p=teacher["top_p"],
        max_new_tokens=teacher["max_new_tokens"],
        strip_answer=teacher["strip_answer"],
    )
    kept = kept_rationales(rationales, teacher["filter_correct"])
    pairs = OBJECTIVES["rationale"].pairs(examples, kept, prompts)
    student = build_student(
        "tiny",
        max_source_length=student_cfg["max_source_length"],
        max_target_length=student_cfg["max_target_length"],
        architecture=student_cfg["architecture"],
        tokenizer=student_cfg["tokenizer"],
        vocab_size=student_cfg["vocab_size"],
        corpus=pairs.texts(),
    )
    d = config_group("distill")
    dm = RationaleDataModule(
        student.tokenizer,
        pairs,
        pairs,
        student_cfg["max_source_length"],
        student_cfg["max_target_length"],
        batch_size=d["batch_size"],
        group_by_length=d["group_by_length"],
        max_tokens=d["max_tokens"],
    )
    assert pairs.count > 4000 and padding_efficiency(dm) >= 0.92


@pytest.mark.stage
def test_lightning_steps_and_the_schedule_length_match_the_token_budget_batches(tmp_path):
    pl.seed_everything(0, verbose=False)
    texts = [("x" * (5 + 7 * i % 60), "y" * (3 + 5 * i % 20)) for i in range(40)]
    student = build_student(
        "tiny",
        architecture=dict(d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1),
        tokenizer="byt5",
        max_source_length=80,
        max_target_length=30,
    )
    pairs = TrainingPairs({"target": texts})
    dm = RationaleDataModule(student.tokenizer, pairs, pairs, 80, 30, max_tokens=200)
    seen = {}

    def scheduler(optimizer, num_training_steps):
        seen["steps"] = num_training_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    module = RationaleDistiller(
        student.model, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3), scheduler=scheduler
    )
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, limit_val_batches=0, use_distributed_sampler=False
    )
    trainer.fit(module, datamodule=dm)
    per_epoch = len(dm.batch_sampler())
    assert per_epoch > len(texts) // 16  # more than one pair per batch, fewer than all
    assert seen["steps"] == trainer.global_step == 2 * per_epoch


@pytest.mark.unit
@pytest.mark.parametrize("max_tokens", [None, 300])
def test_a_resumed_epoch_draws_that_epochs_batches_not_the_firsts(max_tokens):
    from transformers import ByT5Tokenizer

    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    pairs = TrainingPairs(
        {
            "target": [
                (" ".join(words[: 1 + i % 8]) * 3, words[i % 8] * (1 + i % 5)) for i in range(64)
            ]
        }
    )
    dm = RationaleDataModule(
        ByT5Tokenizer(), pairs, pairs, 200, 60, batch_size=4, max_tokens=max_tokens
    )
    fresh = dm.batch_sampler()
    epochs = [list(fresh) for _ in range(3)]
    assert epochs[2] != epochs[0]

    class Resumed:  # what the datamodule reads of a trainer restored into its third epoch
        global_rank, world_size, current_epoch = 0, 1, 2

    dm.trainer = Resumed()
    assert list(dm.train_dataloader().batch_sampler) == epochs[2]
