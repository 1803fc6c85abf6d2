"""A value head on a T5 student's decoder states, and one forward pass giving logits and values."""

from __future__ import annotations

import torch
from torch import nn
from transformers import T5ForConditionalGeneration


class ValueHead(nn.Module):
    """Maps each decoder hidden state to a scalar value: (batch, T, d_model) -> (batch, T)."""

    def __init__(self, hidden_size: int, mlp_size: int | None = None, dropout: float = 0.0):
        """
        Args:
            hidden_size: width of the decoder hidden states (T5's d_model).
            mlp_size: width of one hidden ReLU layer; None gives a single linear layer.
            dropout: dropout probability applied to the hidden states before the head.
        """
        super().__init__()
        if hidden_size <= 0 or (mlp_size is not None and mlp_size <= 0):
            raise ValueError(f"hidden_size={hidden_size} and mlp_size={mlp_size} must be > 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"rl.value_head.dropout={dropout}: must lie in [0, 1)")
        self.dropout = nn.Dropout(dropout)
        if mlp_size is None:
            self.net: nn.Module = nn.Linear(hidden_size, 1)
        else:
            self.net = nn.Sequential(
                nn.Linear(hidden_size, mlp_size), nn.ReLU(), nn.Linear(mlp_size, 1)
            )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # The model may run in bf16 while the head stays in fp32; match the head's dtype.
        dtype = next(self.parameters()).dtype
        return self.net(self.dropout(hidden_states.to(dtype))).squeeze(-1)


def policy_with_value(
    model: T5ForConditionalGeneration,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    decoder_attention_mask: torch.Tensor,
    *,
    value_head: ValueHead,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher-forced pass of the student giving next-token logits and per-token values.

    Args:
        model: the T5 policy.
        input_ids: (batch, S) encoder (question) token ids.
        attention_mask: (batch, S) encoder mask.
        decoder_input_ids: (batch, T) the response shifted right by one, starting with the
            decoder start token (T5's pad id), so position t sees response tokens < t.
        decoder_attention_mask: (batch, T) the response mask works (real positions only ever
            attend to real inputs).
        value_head: maps decoder hidden states to values.

    Returns:
        (logits (batch, T, V), values (batch, T)); position t scores response token t, and its
        value is that of the state before emitting it.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_attention_mask,
        output_hidden_states=True,
        use_cache=False,
    )
    # The last decoder hidden state is taken after the final layer norm but before T5's
    # d_model ** -0.5 rescaling for tied embeddings, which only serves the LM head.
    values = value_head(out.decoder_hidden_states[-1])
    return out.logits, values
