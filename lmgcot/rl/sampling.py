"""The student side of a rollout: prompts encoded, rationales sampled, and the forward pass that
gives their log-probs (and the critic's values) with the encoder run once per question."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from lmgcot.student import fast_t5
from lmgcot.student.batching import pad_to_multiple
from lmgcot.student.generate import decode_tokens

# Responses are right-padded to a multiple of this, so few distinct shapes reach the model.
RESPONSE_PAD_MULTIPLE = 8


class SamplingMixin:
    """Encoding, sampling and scoring forward passes of `RationaleRefiner`; the host provides
    `model`, `tokenizer`, `device`, `temperature`, `max_new_tokens`, `max_source_length`, and for
    `_values` `critic`, `critic_model`, `value_head`, `value_warmup` and `rollouts_done`, and
    `fast_forward`."""

    def encode(self, inputs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise the prompts: (input_ids, attention_mask), each (batch, S) on this device."""
        enc = self.tokenizer(
            inputs,
            padding=True,
            truncation=self.max_source_length is not None,
            max_length=self.max_source_length,
            return_tensors="pt",
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        greedy: bool = False,
        num_samples: int = 1,
    ) -> list[list[int]]:
        """`num_samples` responses per prompt (a prompt's samples next to each other), sampled
        from the untruncated (tempered) policy distribution in one call (the encoder runs once
        per prompt), or one greedy response per prompt (for validation).

        Returns each response's tokens without the decoder start token, cut after its first EOS
        (kept); a response without EOS was truncated at `max_new_tokens`.
        """
        eos = self.tokenizer.eos_token_id
        rows = decode_tokens(
            self.model,
            input_ids,
            attention_mask,
            self.max_new_tokens,
            num_samples=num_samples,
            temperature=0.0 if greedy else self.temperature,
            fast=self.fast_forward,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
        ).tolist()
        return [row[: row.index(eos) + 1] if eos in row else row for row in rows]

    def _forward(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        response_mask: torch.Tensor,
        hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tempered logits (n, T, V) of n responses to the prompts `groups` indexes into, and with
        `hidden` the last decoder states (n, T, d_model).

        The encoder runs once per prompt and its states are repeated for the prompt's responses;
        gradients flow back through the repeat.
        """
        if self.fast_forward and fast_t5.supports(model):
            encoded = fast_t5.encode(model, input_ids, attention_mask)
            states = fast_t5.decode(
                model, encoded[groups], attention_mask[groups], decoder_input_ids, response_mask
            )
            logits = fast_t5.lm_logits(model, states)
            return self._tempered(logits), states if hidden else None
        encoded = model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        out = model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded[groups]),
            attention_mask=attention_mask[groups],
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=response_mask.long(),
            output_hidden_states=hidden,
            use_cache=False,
        )
        # The last decoder state is taken after the final layer norm but before T5's
        # d_model ** -0.5 rescaling for tied embeddings, which only serves the LM head.
        states = out.decoder_hidden_states[-1] if hidden else None
        return self._tempered(out.logits), states

    def _tempered(self, logits: torch.Tensor) -> torch.Tensor:
        # At temperature 1 (the default) dividing would copy the (n, T, V) logits for nothing.
        return logits if self.temperature == 1.0 else logits / self.temperature

    def _values(
        self,
        policy_states: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        response_mask: torch.Tensor,
    ) -> torch.Tensor:
        """The critic's (n, T) values: of the policy's states (`shared`, `detached`), or of a
        separate student's."""
        if self.critic == "separate":
            _, states = self._forward(
                self.critic_model,
                input_ids,
                attention_mask,
                groups,
                decoder_input_ids,
                response_mask,
                hidden=True,
            )
        elif self.critic == "detached" or self.rollouts_done < self.value_warmup:
            # During warm-up the value loss must not move the policy's body either.
            states = policy_states.detach()
        else:
            states = policy_states
        return self.value_head(states)

    def _rollout_tensors(
        self, responses: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lengths, response_ids, mask, decoder_input_ids) for a batch of sampled responses."""
        n = len(responses)
        lengths = torch.tensor([len(r) for r in responses], device=self.device)
        pad = self.tokenizer.pad_token_id
        response_ids = pad_to_multiple(responses, pad, RESPONSE_PAD_MULTIPLE).to(self.device)
        width = response_ids.shape[1]
        mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).float()
        start = torch.full((n, 1), self.model.config.decoder_start_token_id, device=self.device)
        decoder_input_ids = torch.cat([start, response_ids[:, :-1]], dim=1)
        return lengths, response_ids, mask, decoder_input_ids

    def _decode(self, responses: list[list[int]]) -> list[str]:
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return [t.strip() for t in texts]

    @staticmethod
    def _per_row(values: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
        return [row[: int(m.sum())].tolist() for row, m in zip(values, mask)]
