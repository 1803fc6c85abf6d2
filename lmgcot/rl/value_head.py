"""A value head on a T5 student's decoder states: PPO's critic."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """Maps each decoder hidden state to a scalar value: (batch, T, d_model) -> (batch, T)."""

    def __init__(
        self,
        hidden_size: int,
        mlp_size: int | None = None,
        dropout: float = 0.0,
        zero_init: bool = False,
    ):
        """
        Args:
            hidden_size: width of the decoder hidden states (T5's d_model).
            mlp_size: width of one hidden ReLU layer; None gives a single linear layer.
            dropout: dropout probability applied to the hidden states before the head.
            zero_init: start the output layer at 0, so a fresh head predicts 0 everywhere and
                the first advantages are the rewards themselves rather than the rewards minus a
                random head's noise (measured: a default-initialised head's values had std 0.89
                against a score spread of 0.10).
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
        if zero_init:
            last = self.net if isinstance(self.net, nn.Linear) else self.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # The model may run in bf16 while the head stays in fp32; match the head's dtype.
        dtype = next(self.parameters()).dtype
        return self.net(self.dropout(hidden_states.to(dtype))).squeeze(-1)
