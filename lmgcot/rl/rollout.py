"""One rollout of `RationaleRefiner`'s training step, up to the update: k rationales sampled per
question, their log-probs under the policy and the frozen reference, their rewards, and the
advantages the update follows."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lmgcot.rl.kl import kl_estimate
from lmgcot.rl.masked import entropy_from_logits, logprobs_from_logits, masked_mean, masked_whiten
from lmgcot.rl.policy_gradient import (
    correlation,
    explained_variance,
    group_means,
    sequence_advantages,
)
from lmgcot.rl.ppo_math import gae, token_rewards
from lmgcot.rl.scores import clip_scores, normalize_scores


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The sampled responses of one rollout: n = questions * k, a question's samples adjacent."""

    input_ids: torch.Tensor  # (questions, S)
    attention_mask: torch.Tensor  # (questions, S)
    groups: torch.Tensor  # (n,): each sample's question
    decoder_input_ids: torch.Tensor  # (n, T)
    mask: torch.Tensor  # (n, T): 1 on the responses' tokens (EOS included)
    response_ids: torch.Tensor  # (n, T)
    lengths: torch.Tensor  # (n,)
    responses: list[list[int]]

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """What `_forward` and `_values` take after the model (or the policy's states)."""
        return self.input_ids, self.attention_mask, self.groups, self.decoder_input_ids, self.mask


@dataclasses.dataclass(frozen=True)
class RolloutLogprobs:
    """(n, T) tensors of the rollout as sampled, before any update."""

    old_logprobs: torch.Tensor  # the policy's (tempered)
    entropy: torch.Tensor  # the policy's mean token entropy (a scalar)
    old_values: torch.Tensor | None  # PPO's critic; None without one
    ref_logprobs: torch.Tensor  # the frozen reference's (tempered)
    plain_ref_logprobs: torch.Tensor  # the reference's untempered ones, for the reward


@dataclasses.dataclass(frozen=True)
class Advantages:
    """What the update fits, and the KL that the controller and the logs see."""

    advantages: torch.Tensor  # (n, T)
    returns: torch.Tensor | None  # (n, T), PPO's value targets; None without a critic
    sequence_kl: torch.Tensor  # (n,): each rationale's summed per-token KL to the reference
    kl_coef: float
    diagnostics: dict[str, Any]


class RolloutMixin:
    """The rollout steps of `RationaleRefiner.training_step`; the host provides `SamplingMixin`'s
    methods and the settings they read (`samples_per_question`, `kl_estimator`, ...)."""

    def _sample_rollout(self, prompts: list[str]) -> Rollout:
        """k sampled rationales per question, drawn in one call that runs the encoder once per
        question."""
        k = self.samples_per_question
        groups = torch.arange(len(prompts), device=self.device).repeat_interleave(k)
        input_ids, attention_mask = self.encode(prompts)
        responses = self.generate(input_ids, attention_mask, num_samples=k)
        lengths, response_ids, mask, decoder_input_ids = self._rollout_tensors(responses)
        return Rollout(
            input_ids=input_ids,
            attention_mask=attention_mask,
            groups=groups,
            decoder_input_ids=decoder_input_ids,
            mask=mask,
            response_ids=response_ids,
            lengths=lengths,
            responses=responses,
        )

    @torch.no_grad()
    def _rollout_logprobs(self, rollout: Rollout) -> RolloutLogprobs:
        """The rollout's log-probs (and PPO's values), and those of the frozen reference."""
        logits, states = self._forward(self.model, *rollout.model_inputs, hidden=self.uses_critic)
        old_logprobs = logprobs_from_logits(logits, rollout.response_ids)
        entropy = entropy_from_logits(logits, rollout.mask)
        old_values = self._values(states, *rollout.model_inputs) if self.uses_critic else None
        ref_logits, _ = self._forward(self.ref_model, *rollout.model_inputs)
        ref_logprobs = logprobs_from_logits(ref_logits, rollout.response_ids)
        plain_ref = (
            ref_logprobs
            if self.temperature == 1.0
            else logprobs_from_logits(ref_logits * self.temperature, rollout.response_ids)
        )
        return RolloutLogprobs(old_logprobs, entropy, old_values, ref_logprobs, plain_ref)

    def _rewards(
        self, batch: dict[str, Any], rollout: Rollout, plain_ref_logprobs: torch.Tensor
    ) -> tuple[dict[str, Any], list[str], dict[str, list]]:
        """(the batch repeated per sample, the decoded rationales, their reward components)."""
        rationales = self._decode(rollout.responses)
        samples = _repeat_per_sample(batch, len(batch["inputs"]), self.samples_per_question)
        token_logprobs = self._per_row(plain_ref_logprobs, rollout.mask)
        rewards = self.reward_fn(samples, rationales, token_logprobs)
        if "total" not in rewards:
            raise KeyError(f"reward_fn must return a 'total' entry (got {sorted(rewards)})")
        return samples, rationales, rewards

    @torch.no_grad()
    def _advantages(
        self, rollout: Rollout, logprobs: RolloutLogprobs, totals: list[float]
    ) -> Advantages:
        """The scores normalised and clipped, the KL to the reference, and the advantages: GAE
        over the critic's values (PPO) or each rationale's score against its baseline."""
        raw_scores = torch.tensor(totals, dtype=torch.float32, device=self.device)
        groups, mask = rollout.groups, rollout.mask
        scores = clip_scores(self._normalise(raw_scores, groups), self.score_clip)
        kl = kl_estimate(logprobs.old_logprobs, logprobs.ref_logprobs, self.kl_estimator) * mask
        sequence_kl = kl.sum(dim=1)
        kl_coef = self.kl_controller.value
        penalty = kl_coef if self.kl_in_reward else 0.0
        diagnostics: dict[str, Any] = {}
        if self.uses_critic:
            per_token_rewards = token_rewards(scores, kl, mask, penalty)
            old_values = logprobs.old_values
            advantages, returns = gae(per_token_rewards, old_values, mask, self.gamma, self.lam)
            if self.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
            diagnostics["rl/explained_variance"] = explained_variance(old_values, returns, mask)
            sequence_advantage = masked_mean(advantages, mask, dim=1)
        else:
            sequence_advantage = sequence_advantages(
                self.algorithm, scores - penalty * sequence_kl, groups, self.grpo_scale
            )
            advantages, returns = sequence_advantage[:, None] * mask, None
        diagnostics["rl/adv_score_corr"] = correlation(raw_scores, sequence_advantage)
        if self.samples_per_question > 1:
            # The part of the score a policy can change: its deviation within the question.
            within = raw_scores - group_means(raw_scores, groups)[groups]
            diagnostics["rl/adv_within_corr"] = correlation(within, sequence_advantage)
        return Advantages(advantages, returns, sequence_kl, kl_coef, diagnostics)

    def _normalise(self, scores: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if self.score_norm == "running":
            self.score_stats.update(scores)
            return normalize_scores(scores, self.score_stats)
        if self.score_norm == "group":
            return scores - group_means(scores, groups)[groups]
        return scores


def _repeat_per_sample(batch: dict[str, Any], n_questions: int, k: int) -> dict[str, Any]:
    """The batch with every per-question list repeated for the question's k samples."""
    if k == 1:
        return batch
    return {
        key: [x for x in value for _ in range(k)]
        if isinstance(value, (list, tuple)) and len(value) == n_questions
        else value
        for key, value in batch.items()
    }
