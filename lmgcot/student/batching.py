"""Padding token-id lists into batches: shared by distillation, RL rollouts and student generation."""

from __future__ import annotations

import torch

# Generation pads to a multiple of this: few distinct shapes, so `generate`'s per-shape set-up and
# any compiled graph are paid for rarely.
PAD_MULTIPLE = 32
# Training pairs pad to their longest member and no further: nothing in distillation is compiled,
# eager CPU kernels cost no more on a new shape, and every pad token is paid in forward and backward
# (a multiple of 8 still wastes a tenth of the default run's short batches).
PAIR_PAD_MULTIPLE = 1


def collate_pairs(items: list[dict], pad_id: int, multiple: int = PAIR_PAD_MULTIPLE) -> dict:
    """Pad inputs with `pad_id` and labels with -100 (ignored by the loss)."""
    input_ids = pad_to_multiple([x["input_ids"] for x in items], pad_id, multiple)
    labels = pad_to_multiple([x["labels"] for x in items], -100, multiple)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != pad_id).long(),
        "labels": labels,
    }


def pad_to_multiple(
    seqs: list[list[int]], value: int, multiple: int = PAD_MULTIPLE
) -> torch.Tensor:
    width = padded_width(max(len(s) for s in seqs), multiple)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def padded_width(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple`."""
    return -(-length // multiple) * multiple
