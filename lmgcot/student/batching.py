"""Padding token-id lists into batches: shared by distillation, RL rollouts and student generation."""

from __future__ import annotations

import torch

# Padding to a multiple of this keeps the number of distinct tensor shapes small; on CPU each new
# shape pays a one-off kernel set-up that otherwise dominates small-model step time.
PAD_MULTIPLE = 32


def collate_pairs(items: list[dict], pad_id: int) -> dict:
    """Pad inputs with `pad_id` and labels with -100 (ignored by the loss)."""
    input_ids = pad_to_multiple([x["input_ids"] for x in items], pad_id)
    labels = pad_to_multiple([x["labels"] for x in items], -100)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != pad_id).long(),
        "labels": labels,
    }


def pad_to_multiple(
    seqs: list[list[int]], value: int, multiple: int = PAD_MULTIPLE
) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    width = -(-width // multiple) * multiple
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
