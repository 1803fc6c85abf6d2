"""The update of `RationaleRefiner`'s training step: `ppo_epochs` passes of clipped policy
(+ value, + KL) steps over shuffled minibatches of whole questions."""

from __future__ import annotations

import torch

from lmgcot.rl.kl import kl_estimate
from lmgcot.rl.masked import logprobs_from_logits
from lmgcot.rl.ppo_math import aggregate, policy_loss, value_loss
from lmgcot.rl.rollout import Advantages, Rollout, RolloutLogprobs

GRADIENT_CLIP = 1.0


class UpdateMixin:
    """The optimisation of `RationaleRefiner`; the host is a LightningModule under manual
    optimisation with `SamplingMixin`'s methods and the loss settings (`clip_range`, ...)."""

    def _update(
        self, rollout: Rollout, logprobs: RolloutLogprobs, targets: Advantages
    ) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes of clipped policy (+ value, + KL) updates; mean losses per rollout."""
        optimizer = self.optimizers()
        n_questions = rollout.input_ids.shape[0]
        per_step = self.questions_per_step()
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("policy_loss", "clipfrac", "approx_kl")
        }
        for _ in range(self.ppo_epochs):
            order = torch.randperm(n_questions, device=self.device)
            for questions in order.split(per_step):
                loss, step_stats = self._minibatch_loss(rollout, logprobs, targets, questions)
                optimizer.zero_grad()
                self.manual_backward(loss)
                self.clip_gradients(
                    optimizer, gradient_clip_val=GRADIENT_CLIP, gradient_clip_algorithm="norm"
                )
                optimizer.step()
                for key, value in step_stats.items():
                    stats.setdefault(key, []).append(value)
        return {f"rl/{k}": torch.stack(v).mean() for k, v in stats.items()}

    def _minibatch_loss(
        self,
        rollout: Rollout,
        logprobs: RolloutLogprobs,
        targets: Advantages,
        questions: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss over all samples of `questions`, and its parts (detached)."""
        # The minibatch's samples, and their questions renumbered 0..q-1.
        rows = (rollout.groups[:, None] == questions[None, :]).nonzero()
        idx, local = rows[:, 0], rows[:, 1]
        mb_mask = rollout.mask[idx]
        mb_inputs = (
            rollout.input_ids[questions],
            rollout.attention_mask[questions],
            local,
            rollout.decoder_input_ids[idx],
            mb_mask,
        )
        mb_logits, mb_states = self._forward(self.model, *mb_inputs, hidden=self.uses_critic)
        mb_logprobs = logprobs_from_logits(mb_logits, rollout.response_ids[idx])
        p_loss, clipfrac, approx_kl = policy_loss(
            mb_logprobs,
            logprobs.old_logprobs[idx],
            targets.advantages[idx],
            mb_mask,
            self.clip_range,
            agg=self.loss_agg,
            max_new_tokens=self.max_new_tokens,
        )
        stats = {"policy_loss": p_loss, "clipfrac": clipfrac, "approx_kl": approx_kl}
        warming_up = self.uses_critic and self.rollouts_done < self.value_warmup
        loss = torch.zeros_like(p_loss) if warming_up else p_loss
        if not warming_up and not self.kl_in_reward and targets.kl_coef > 0:
            kl_term = kl_estimate(mb_logprobs, logprobs.ref_logprobs[idx], "k3")
            kl_loss = aggregate(kl_term, mb_mask, self.loss_agg, self.max_new_tokens)
            loss = loss + targets.kl_coef * kl_loss
            stats["kl_loss"] = kl_loss
        if self.uses_critic:
            mb_values = self._values(mb_states, *mb_inputs)
            v_loss, _ = value_loss(
                mb_values,
                logprobs.old_values[idx],
                targets.returns[idx],
                mb_mask,
                self.clip_range_value,
            )
            loss = loss + self.vf_coef * v_loss
            stats["value_loss"] = v_loss
        return loss, {key: value.detach() for key, value in stats.items()}
