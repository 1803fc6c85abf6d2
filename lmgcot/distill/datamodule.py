"""Tokenised (student input -> target text) pairs with dynamic padding and length-grouped batches:
a fixed number of pairs per batch, or a budget of padded tokens per batch (`max_tokens`)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from transformers import PreTrainedTokenizerBase

from lmgcot.errors import LmgcotError
from lmgcot.student.batching import PAIR_PAD_MULTIPLE, collate_pairs, padded_width
from lmgcot.student.objectives import TrainingPairs

# Raised before any training: what the user can change, not where the code failed.
NO_PAIRS = (
    "distill: no training pairs: the teacher stage kept no rationale for the training split "
    "(with teacher.filter_correct=true only rationales reaching the gold answer are kept); "
    "raise teacher.num_samples, set teacher.filter_correct=false, use more training questions, "
    "or use a stronger large_lm"
)
NO_VAL_PAIRS = (
    "distill: no validation pairs: the teacher stage kept no rationale for {questions} "
    "(with teacher.filter_correct=true only rationales reaching the gold answer are "
    "kept; distill keeps its best checkpoint by their loss); set teacher.filter_correct=false, "
    "raise teacher.num_samples, give the val split more questions (dataset.max_val, a larger "
    "dataset.eval_path or dataset.split_fractions), or use a stronger large_lm"
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
        max_tokens: int | None = None,
    ):
        super().__init__()
        if not train_pairs.count:
            raise LmgcotError(NO_PAIRS)
        if not val_pairs.count:
            # The tokenizer cannot encode an empty list (IndexError).
            raise LmgcotError(NO_VAL_PAIRS.format(questions="the val questions"))
        self.tokenizer = tokenizer
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.group_by_length, self.num_workers, self.seed = group_by_length, num_workers, seed
        self.max_tokens = max_tokens
        lengths = (max_source_length, max_target_length)
        self.train = _dataset(tokenizer, train_pairs, *lengths)
        self.val = _dataset(tokenizer, val_pairs, *lengths)

    def train_dataloader(self) -> DataLoader:
        # Under a multi-process strategy each process takes its own share of the batches (the
        # trainer is built with use_distributed_sampler=False: Lightning cannot shard these itself).
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = self.batch_sampler(rank, world)
        if sampler is not None:
            # A resumed run starts its samplers at the epoch it stopped in, so it sees that
            # epoch's order rather than the first epoch's again.
            sampler.epoch = trainer.current_epoch if trainer else 0
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

    def batch_sampler(self, rank: int = 0, world: int = 1) -> Sampler[list[int]] | None:
        """The training batches' sampler; None for plain shuffled batches of `batch_size`. A token
        budget always groups by length: it is what makes the budget hold many short pairs."""
        lengths = (self.train.source_lengths, self.train.target_lengths)
        if self.max_tokens is not None:
            return TokenBudgetBatchSampler(*lengths, self.max_tokens, self.seed, rank, world)
        if self.group_by_length:
            return LengthGroupedBatchSampler(
                lengths[0],
                self.batch_size,
                self.seed,
                rank=rank,
                world=world,
                target_lengths=lengths[1],
            )
        return None

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
        self.source_lengths = [len(a) for a in self.input_ids]
        self.target_lengths = [len(b) for b in self.labels]
        self.lengths = [a + b for a, b in zip(self.source_lengths, self.target_lengths)]

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
        # Batching sees an item's lengths summed over its tasks; each task is padded on its own, so
        # a token budget can be exceeded by the tasks' differing longest members.
        self.source_lengths = [sum(ls) for ls in zip(*(d.source_lengths for d in tasks.values()))]
        self.target_lengths = [sum(ls) for ls in zip(*(d.target_lengths for d in tasks.values()))]
        self.lengths = [a + b for a, b in zip(self.source_lengths, self.target_lengths)]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        return {task: d[i] for task, d in self.tasks.items()}


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffle, cut into mega-batches of 50 batches, order each by length (`lengths` are then the
    source lengths and `encoder_decoder_order` the order when `target_lengths` are given), cut into
    batches of `batch_size`, then shuffle the batches:
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
        target_lengths: list[int] | None = None,
    ):
        self.lengths, self.batch_size, self.seed, self.mega = lengths, batch_size, seed, mega
        self.target_lengths = target_lengths
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
            chunk = idx[start : start + span]
            if self.target_lengths is None:
                chunk = sorted(chunk, key=lambda i: -self.lengths[i])
            else:
                window = WINDOW_BATCHES * self.batch_size
                chunk = encoder_decoder_order(
                    chunk, self.lengths, self.target_lengths, lambda i: 1, window
                )
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        rng.shuffle(batches)
        return iter(_share(batches, self.rank, self.world, len(self)))

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) // self.world


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of as many pairs as fit `max_tokens` padded tokens (rows x (longest source + longest
    target), after padding to `pad_multiple`), fairseq style: all pairs in `encoder_decoder_order`,
    cut greedily; a pair longer than the budget alone is a batch of one. The cuts are planned once
    from the lengths, so every epoch has the same number of batches (`len` is exact, and with it
    Lightning's step estimate for the lr schedule) and none exceeds the budget; each epoch draws
    which of the pairs with the same two lengths fill each slot, and the order of the batches.
    Seeded per epoch; with `world` > 1 processes, process `rank` gets every world-th batch."""

    def __init__(
        self,
        source_lengths: list[int],
        target_lengths: list[int],
        max_tokens: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        pad_multiple: int = PAIR_PAD_MULTIPLE,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0
        src = [padded_width(n, pad_multiple) for n in source_lengths]
        tgt = [padded_width(n, pad_multiple) for n in target_lengths]
        self.order = encoder_decoder_order(
            range(len(src)), src, tgt, lambda i: src[i] + tgt[i], WINDOW_BATCHES * max_tokens
        )
        self.cuts = _budget_cuts([(src[i], tgt[i]) for i in self.order], max_tokens)
        # Positions in `order` of pairs with the same two lengths: they may trade places, and
        # every batch keeps its padded size.
        slots: dict[tuple[int, int], list[int]] = {}
        for pos, i in enumerate(self.order):
            slots.setdefault((source_lengths[i], target_lengths[i]), []).append(pos)
        self.slots = list(slots.values())

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        self.epoch += 1
        order = list(self.order)
        for positions in self.slots:
            members = [order[p] for p in positions]
            rng.shuffle(members)
            for p, i in zip(positions, members):
                order[p] = i
        batches = [order[a:b] for a, b in zip(self.cuts, self.cuts[1:])]
        rng.shuffle(batches)
        return iter(_share(batches, self.rank, self.world, len(self)))

    def __len__(self) -> int:
        return (len(self.cuts) - 1) // self.world


# A window of this many batches' worth of pairs, already close in source length, is ordered by
# target length: measured on the throughput benchmark's pairs, wider windows add source padding
# faster than they save target padding.
WINDOW_BATCHES = 4


def encoder_decoder_order(indices, source_lengths, target_lengths, weight, window: float) -> list:
    """`indices` by source length, then target length (longest first); then each run of pairs
    whose `weight` adds up to `window` is reordered by target length: an encoder-decoder batch
    pays for its longest source and its longest target, and sorting on their sum would leave
    either free to vary."""
    by_source = sorted(indices, key=lambda i: (-source_lengths[i], -target_lengths[i], i))
    out, run, filled = [], [], 0.0
    for i in by_source:
        run.append(i)
        filled += weight(i)
        if filled >= window:
            out += sorted(run, key=lambda i: (-target_lengths[i], -source_lengths[i], i))
            run, filled = [], 0.0
    return out + sorted(run, key=lambda i: (-target_lengths[i], -source_lengths[i], i))


def _budget_cuts(lengths: list[tuple[int, int]], max_tokens: int) -> list[int]:
    """Boundaries [0, ..., n] of consecutive batches whose rows x (longest source + longest
    target) stays within `max_tokens` (a single longer pair is a batch of its own)."""
    cuts, rows, longest_src, longest_tgt = [0], 0, 0, 0
    for pos, (src, tgt) in enumerate(lengths):
        wider_src, wider_tgt = max(longest_src, src), max(longest_tgt, tgt)
        if rows and (rows + 1) * (wider_src + wider_tgt) > max_tokens:
            cuts.append(pos)
            rows, wider_src, wider_tgt = 0, src, tgt
        rows, longest_src, longest_tgt = rows + 1, wider_src, wider_tgt
    if rows:
        cuts.append(len(lengths))
    return cuts


def _share(batches: list[list[int]], rank: int, world: int, count: int) -> list[list[int]]:
    """Process `rank`'s share: every world-th batch, `count` of them (all processes get as many)."""
    return batches[rank::world][:count] if world > 1 else batches
