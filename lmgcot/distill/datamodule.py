"""Tokenised (student input -> target text) pairs with dynamic padding and length-grouped batches."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from transformers import PreTrainedTokenizerBase

from lmgcot.errors import LmgcotError
from lmgcot.student.batching import collate_pairs
from lmgcot.student.objectives import TrainingPairs

# Raised before any training: what the user can change, not where the code failed.
NO_PAIRS = (
    "distill: no training pairs: the teacher stage kept no rationale for the training split "
    "(with teacher.filter_correct=true only rationales reaching the gold answer are kept); "
    "raise teacher.num_samples, set teacher.filter_correct=false, or use a stronger large_lm"
)


class RationaleDataModule(pl.LightningDataModule):
    """Training pairs per task (`TrainingPairs`); a multitask student's batches hold every task of
    the same examples ({"predict": batch, "explain": batch})."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        train_pairs: TrainingPairs,
        val_pairs: TrainingPairs,
        max_source_length: int,
        max_target_length: int,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        group_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if not train_pairs.count:
            raise LmgcotError(NO_PAIRS)
        self.tokenizer = tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.group_by_length, self.num_workers, self.seed = group_by_length, num_workers, seed
        lengths = (max_source_length, max_target_length)
        self.train = _dataset(tokenizer, train_pairs, *lengths)
        self.val = _dataset(tokenizer, val_pairs, *lengths)

    def train_dataloader(self) -> DataLoader:
        # Under a multi-process strategy each process takes its own share of the batches (the
        # trainer is built with use_distributed_sampler=False: Lightning cannot shard these itself).
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.group_by_length:
            sampler = LengthGroupedBatchSampler(
                self.train.lengths, self.batch_size, self.seed, rank=rank, world=world
            )
            return DataLoader(
                self.train,
                batch_sampler=sampler,
                collate_fn=self.collate,
                num_workers=self.num_workers,
            )
        if world > 1:
            shard = DistributedSampler(
                self.train, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
            )
            return DataLoader(
                self.train,
                batch_size=self.batch_size,
                sampler=shard,
                collate_fn=self.collate,
                num_workers=self.num_workers,
            )
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        order = sorted(range(len(self.val)), key=lambda i: -self.val.lengths[i])
        return DataLoader(
            torch.utils.data.Subset(self.val, order),
            batch_size=self.eval_batch_size,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def collate(self, items: list[dict]) -> dict:
        pad = self.tokenizer.pad_token_id
        if items and "input_ids" not in items[0]:
            return {task: collate_pairs([x[task] for x in items], pad) for task in items[0]}
        return collate_pairs(items, pad)


def _dataset(
    tokenizer, pairs: TrainingPairs, max_source_length: int, max_target_length: int
) -> Dataset:
    datasets = {
        task: PairDataset(tokenizer, p, max_source_length, max_target_length)
        for task, p in pairs.tasks.items()
    }
    # A single task's batches are plain (input_ids, labels) batches.
    return TaskPairDataset(datasets) if pairs.multitask else next(iter(datasets.values()))


class PairDataset(Dataset):
    """Tokenised once up front; truncation keeps the first tokens (question first, then context)."""

    def __init__(self, tokenizer, pairs, max_source_length: int, max_target_length: int):
        sources = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_source_length)
        targets = tokenizer([t for _, t in pairs], truncation=True, max_length=max_target_length)
        self.input_ids = sources["input_ids"]
        self.labels = targets["input_ids"]
        self.lengths = [len(a) + len(b) for a, b in zip(self.input_ids, self.labels)]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


class TaskPairDataset(Dataset):
    """Aligned pair datasets, one per task: item i is {task: that task's pair i}."""

    def __init__(self, tasks: dict[str, PairDataset]):
        sizes = {task: len(d) for task, d in tasks.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"multitask pairs must be aligned; sizes per task: {sizes}")
        self.tasks = tasks
        self.lengths = [sum(ls) for ls in zip(*(d.lengths for d in tasks.values()))]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        return {task: d[i] for task, d in self.tasks.items()}


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into mega-batches of 50 batches, sort each by length, then shuffle the batches:
    similar lengths share a batch (little padding) while the order stays random. Seeded per epoch.
    With `world` > 1 processes, process `rank` gets every world-th batch (all get as many)."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int = 0,
        mega: int = 50,
        rank: int = 0,
        world: int = 1,
    ):
        self.lengths, self.batch_size, self.seed, self.mega = lengths, batch_size, seed, mega
        self.rank, self.world = rank, world
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        self.epoch += 1
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        span = self.batch_size * self.mega
        batches = []
        for start in range(0, len(idx), span):
            chunk = sorted(idx[start : start + span], key=lambda i: -self.lengths[i])
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        rng.shuffle(batches)
        if self.world > 1:
            batches = batches[self.rank :: self.world][: len(self)]
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) // self.world
