"""PPO `RationaleRefiner`: a tiny T5 learns a toy reward; EOS-only responses; KL state checkpoints."""

from __future__ import annotations

import csv
import functools
import math
import string
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import config_group
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader
from transformers import ByT5Tokenizer

from lmgcot.rl.kl import AdaptiveKLController, FixedKLController
from lmgcot.rl.module import RationaleRefiner
from lmgcot.student.models import build_tiny_t5

TINY = {
    "d_model": 32,
    "d_ff": 64,
    "d_kv": 8,
    "num_heads": 2,
    "num_layers": 1,
    "num_decoder_layers": 1,
}
# The random student samples near-uniformly over ByT5's 384 ids, so one target character would
# score ~1/384 (almost always 0). Lowercase ASCII letters score 0.15-0.28 at the start (measured
# over seeds 0-5; decoding drops extra ids and broken bytes, so the share beats 26/384), a
# reward with signal from the first batch.
TARGET = set(string.ascii_lowercase)
BATCH, N_UPDATES, PPO_EPOCHS, MINIBATCH = 16, 40, 4, 8
MAX_NEW_TOKENS = 8
KL_COEF = 0.05
# Sanity bound on the sequence KL (k1, nats per rationale): a policy spreading its mass evenly over
# the 26 letters, against the near-uniform reference over 384 ids, sits at 8 * log(384 / 26) ~ 21.5;
# the reward needs no more. Measured over seeds 0-5: max 7.5-10.9 (and 12.6 with coef 0.01).
KL_BOUND = MAX_NEW_TOKENS * math.log(384 / len(TARGET))


def lowercase_share(
    batch: dict, rationales: list[str], token_logprobs=None
) -> dict[str, list[float]]:
    share = [sum(c in TARGET for c in r) / max(len(r), 1) for r in rationales]
    length = [float(len(r)) for r in rationales]
    return {"lowercase": share, "length": length, "total": share}


def make_refiner(lr: float, reward_fn=lowercase_share, kl_controller=None) -> RationaleRefiner:
    tok = ByT5Tokenizer()
    model = build_tiny_t5(TINY, tok, seed=0)
    return RationaleRefiner(
        model,
        tok,
        reward_fn,
        optimizer=functools.partial(torch.optim.Adam, lr=lr),
        kl_controller=kl_controller or FixedKLController(KL_COEF),
        ppo_epochs=PPO_EPOCHS,
        minibatch_size=MINIBATCH,
        max_new_tokens=MAX_NEW_TOKENS,
    )


def fit(refiner: RationaleRefiner, tmp_path: Path, n_updates: int) -> list[dict[str, str]]:
    prompts = [f"question {i}: why?" for i in range(n_updates * BATCH)]
    return fit_questions(refiner, tmp_path, prompts, per_rollout=BATCH)


@pytest.mark.stage
@pytest.mark.slow
def test_ppo_learns_toy_reward(tmp_path: Path) -> None:
    rows = fit(make_refiner(lr=3e-3), tmp_path, N_UPDATES)
    assert len(rows) == N_UPDATES
    totals = [float(r["rewards/total/mean"]) for r in rows]
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last > first + 0.2 and last > 2 * first, f"no learning: {first:.3f} -> {last:.3f}"
    for row in rows:
        kl = float(row["rl/kl"])
        assert math.isfinite(kl) and kl < KL_BOUND, row
        for key in (
            "rl/kl_coef",
            "rl/entropy",
            "rl/clipfrac",
            "rl/approx_kl",
            "rl/policy_loss",
            "rl/value_loss",
            "rl/response_length",
            "rewards/lowercase/mean",
            "rewards/length/mean",
        ):
            assert math.isfinite(float(row[key])), (key, row)


@pytest.mark.unit
def test_eos_only_responses_do_not_crash(tmp_path: Path) -> None:
    refiner = make_refiner(lr=1e-3)
    eos = refiner.tokenizer.eos_token_id
    seen: list[list[str]] = []

    def reward(batch: dict, rationales: list[str], token_logprobs) -> dict[str, list[float]]:
        seen.append(rationales)
        assert [len(t) for t in token_logprobs] == [len(r) + 1 for r in rationales]
        return lowercase_share(batch, rationales)

    refiner.reward_fn = reward
    # Half the batch answers with EOS alone, the other half with a letter and EOS.
    refiner.generate = lambda ids, mask, num_samples=1: [
        [eos] if i % 2 else [ord("a") + 3, eos] for i in range(ids.shape[0])
    ]
    rows = fit(refiner, tmp_path, n_updates=1)
    assert seen[0][:2] == ["a", ""]
    assert float(rows[0]["rl/response_length"]) == 1.5
    assert math.isfinite(float(rows[0]["rl/policy_loss"]))


@pytest.mark.unit
def test_kl_controller_round_trips_through_checkpoint() -> None:
    refiner = make_refiner(lr=1e-3, kl_controller=AdaptiveKLController(0.2, 1.0, 10))
    refiner.kl_controller.update(5.0, n_steps=10)
    checkpoint: dict = {}
    refiner.on_save_checkpoint(checkpoint)
    restored = make_refiner(lr=1e-3, kl_controller=AdaptiveKLController(0.2, 1.0, 10))
    restored.on_load_checkpoint(checkpoint)
    assert restored.kl_controller.value == refiner.kl_controller.value != 0.2
    fixed = make_refiner(lr=1e-3, kl_controller=FixedKLController(0.05))
    fixed.on_save_checkpoint(checkpoint := {})
    assert checkpoint["kl_controller"] == {"value": 0.05}


# --- critic-free estimators and the shared encoder pass -----------------------------------------


def default_rl(**overrides) -> dict:
    """The `rl` group's default as a dict, with the student-dependent length and `overrides` set."""
    cfg = config_group("rl")
    cfg["max_new_tokens"] = MAX_NEW_TOKENS
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def refiner_from_config(reward_fn=lowercase_share, lr: float = 3e-3, **overrides):
    tok = ByT5Tokenizer()
    model = build_tiny_t5(TINY, tok, seed=0)
    rl = default_rl(**overrides)
    return RationaleRefiner.from_config(
        rl, model, tok, reward_fn, optimizer=functools.partial(torch.optim.Adam, lr=lr)
    )


def fit_questions(
    refiner: RationaleRefiner, tmp_path: Path, questions: list[str], per_rollout: int
):
    """Train on `questions` (each once per rollout batch); the logged rows of each rollout."""
    pl.seed_everything(0)
    n_rollouts = len(questions) // per_rollout
    trainer = pl.Trainer(
        max_steps=n_rollouts * refiner.steps_per_rollout(per_rollout),
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    loader = DataLoader(
        questions, batch_size=per_rollout, collate_fn=lambda xs: {"inputs": list(xs)}
    )
    trainer.fit(refiner, loader)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("rewards/total/mean")]


def greedy_lowercase(refiner: RationaleRefiner, prompts: list[str]) -> float:
    refiner.eval()
    ids, mask = refiner.encode(prompts)
    texts = refiner._decode(refiner.generate(ids, mask, greedy=True))
    return sum(lowercase_share({}, texts)["total"]) / len(texts)


@pytest.mark.stage
@pytest.mark.slow
def test_default_estimator_raises_a_held_out_toy_reward(tmp_path: Path) -> None:
    """The default algorithm (lmgcot/conf/rl/default.yaml: its estimator, k, aggregation and KL placement)
    raises the greedy lowercase share on prompts it never trained on."""
    refiner = refiner_from_config(rollout_batch_size=16, minibatch_size=16)
    assert refiner.algorithm != "ppo" and refiner.samples_per_question >= 2
    per_rollout = 16 // refiner.samples_per_question
    train = [f"question {i}: why?" for i in range(30 * per_rollout)]
    held_out = [f"other {i}: how so?" for i in range(32)]
    before = greedy_lowercase(refiner, held_out)
    rows = fit_questions(refiner, tmp_path, train, per_rollout)
    after = greedy_lowercase(refiner, held_out)
    assert after > before + 0.3, f"held-out greedy lowercase share {before:.3f} -> {after:.3f}"
    corr = [float(r["rl/adv_score_corr"]) for r in rows]
    # The signal reaches the update: advantages follow the scores from the first rollout.
    assert corr[0] > 0.8, corr[:5]
    assert all(float(r["rl/adv_within_corr"]) > 0.8 for r in rows[:5]), rows[0]
    for key in ("rl/kl", "rl/entropy", "rl/clipfrac", "rewards/total/spread"):
        assert all(math.isfinite(float(r[key])) for r in rows), key


@pytest.mark.unit
def test_k_samples_per_question_share_one_encoder_pass_and_repeat_the_batch() -> None:
    seen: list[dict] = []

    def reward(batch, rationales, token_logprobs):
        seen.append(batch)
        return lowercase_share(batch, rationales)

    refiner = refiner_from_config(reward, samples_per_question=3)
    batch = {"inputs": ["a?", "bb?"], "index": [7, 9], "split": "train"}
    ids, mask = refiner.encode(batch["inputs"])
    responses = refiner.generate(ids, mask, num_samples=3)
    assert len(responses) == 6
    # The encoder-once pass gives what running every sample's own encoder would.
    _, response_ids, rmask, dec = refiner._rollout_tensors(responses)
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    refiner.eval()
    logits, states = refiner._forward(refiner.model, ids, mask, groups, dec, rmask, hidden=True)
    plain = refiner.model(
        input_ids=ids[groups],
        attention_mask=mask[groups],
        decoder_input_ids=dec,
        decoder_attention_mask=rmask.long(),
        output_hidden_states=True,
    )
    torch.testing.assert_close(logits, plain.logits)
    torch.testing.assert_close(states, plain.decoder_hidden_states[-1])
    from lmgcot.rl.rollout import _repeat_per_sample

    assert _repeat_per_sample(batch, 2, 3) == {
        "inputs": ["a?"] * 3 + ["bb?"] * 3,
        "index": [7, 7, 7, 9, 9, 9],
        "split": "train",
    }


@pytest.mark.unit
def test_ppo_value_warmup_moves_the_critic_only(tmp_path: Path) -> None:
    refiner = refiner_from_config(
        algorithm="ppo",
        samples_per_question=1,
        value_warmup=2,
        rollout_batch_size=8,
        minibatch_size=4,
    )
    policy = {k: v.clone() for k, v in refiner.model.state_dict().items()}
    head = {k: v.clone() for k, v in refiner.value_head.state_dict().items()}
    rows = fit_questions(refiner, tmp_path, [f"q{i}?" for i in range(16)], per_rollout=8)
    assert len(rows) == 2
    assert all(torch.equal(policy[k], v) for k, v in refiner.model.state_dict().items())
    assert not all(torch.equal(head[k], v) for k, v in refiner.value_head.state_dict().items())
    assert all(math.isfinite(float(r["rl/explained_variance"])) for r in rows)


@pytest.mark.unit
@pytest.mark.parametrize("critic", ["detached", "separate"])
def test_ppo_critic_options_train_the_critic_and_leave_the_body_to_the_policy(
    tmp_path: Path, critic: str
) -> None:
    refiner = refiner_from_config(
        algorithm="ppo",
        samples_per_question=1,
        critic=critic,
        rollout_batch_size=8,
        minibatch_size=8,
    )
    policy_before = {k: v.clone() for k, v in refiner.model.state_dict().items()}
    head_before = {k: v.clone() for k, v in refiner.value_head.state_dict().items()}
    body_before = (
        {k: v.clone() for k, v in refiner.critic_model.state_dict().items()}
        if critic == "separate"
        else {}
    )
    # With the policy loss switched off, only the value loss acts: a detached or separate critic
    # must leave the policy's weights alone, and the policy's samples stay those of one
    # distribution, so the critic has one target to fit.
    refiner.value_warmup = 10**6
    refiner.critic = critic
    rows = fit_questions(refiner, tmp_path, [f"q{i}?" for i in range(48)], per_rollout=8)
    assert all(torch.equal(policy_before[k], v) for k, v in refiner.model.state_dict().items())
    assert not all(
        torch.equal(head_before[k], v) for k, v in refiner.value_head.state_dict().items()
    )
    if critic == "separate":
        # The separate critic's own student is trained too, not only the head on top of it.
        changed = [
            k
            for k, v in refiner.critic_model.state_dict().items()
            if not torch.equal(body_before[k], v)
        ]
        assert len(changed) > len(body_before) // 2, changed
    # The value loss falls: the zero-initialised critic starts at the mean squared score
    # (0.11-0.12 measured) and ends near a quarter of it (0.03 over the last three rollouts).
    losses = [float(r["rl/value_loss"]) for r in rows]
    assert len(losses) == 6
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


@pytest.mark.unit
def test_kl_as_a_loss_term_and_the_no_spread_warning(tmp_path: Path, caplog) -> None:
    def reward(batch, rationales, token_logprobs):
        out = lowercase_share(batch, rationales)
        return {**out, "flat": [0.5] * len(rationales)}

    refiner = refiner_from_config(
        reward,
        **{"kl.in_reward": False, "kl.coef": 0.1, "rollout_batch_size": 8, "minibatch_size": 8},
    )
    refiner.weighted_components = ("lowercase", "flat")
    with caplog.at_level("WARNING", logger="lmgcot"):
        rows = fit_questions(refiner, tmp_path, [f"q{i}?" for i in range(6)], per_rollout=2)
    assert all(float(r["rl/kl_loss"]) >= 0 for r in rows)
    assert all(float(r["rewards/flat/spread"]) == 0 for r in rows)
    warnings = [r.getMessage() for r in caplog.records if "no spread" in r.getMessage()]
    assert len(warnings) == 1 and "'flat'" in warnings[0], warnings


def policy_kl_to_reference(refiner: RationaleRefiner) -> float:
    """The exact mean per-token KL(policy || reference) over the full vocabulary, on samples
    drawn with a fixed seed: the same prefixes for every policy compared."""
    pl.seed_everything(1)
    refiner.eval()
    rollout = refiner._sample_rollout(["question 1: why?", "q 2: how so?", "other 3", "abc"])
    with torch.no_grad():
        policy, _ = refiner._forward(refiner.model, *rollout.model_inputs)
        ref, _ = refiner._forward(refiner.ref_model, *rollout.model_inputs)
    p, q = policy.log_softmax(-1), ref.log_softmax(-1)
    per_token = (p.exp() * (p - q)).sum(-1)
    return float((per_token * rollout.mask).sum() / rollout.mask.sum())


@pytest.mark.unit
def test_the_kl_loss_term_keeps_the_policy_near_the_reference(tmp_path: Path) -> None:
    """The default placement (`rl.kl.in_reward=false`): the k3 term in the loss pulls the policy
    back. The same seed, prompts and first rollout with coefficient 0 and 10: the KL term
    (zero gradient at the reference itself) acts from the second step on."""
    kl = {}
    for coef in (0.0, 10.0):
        refiner = refiner_from_config(
            **{
                "kl.in_reward": False,
                "kl.coef": coef,
                "rollout_batch_size": 8,
                "minibatch_size": 4,
                "ppo_epochs": 4,
            }
        )
        rows = fit_questions(refiner, tmp_path / str(coef), [f"q{i}?" for i in range(8)], 4)
        assert len(rows) == 2
        kl[coef] = policy_kl_to_reference(refiner)
        if coef:
            assert all(float(r["rl/kl_loss"]) >= 0 for r in rows)
    # Measured: 0.097 nats per token without the term, 0.020 with it.
    assert kl[0.0] > 0.02, kl
    assert kl[10.0] < 0.5 * kl[0.0], kl


@pytest.mark.unit
def test_the_fast_forward_gives_the_model_s_own_logits_states_and_gradients() -> None:
    """`rl.fast_forward` (the default) changes how the update's forward is computed, not what."""
    refiner = refiner_from_config(algorithm="ppo", samples_per_question=3)
    assert refiner.fast_forward
    pl.seed_everything(0)
    refiner.eval()
    rollout = refiner._sample_rollout(["question 1: why?", "q 2: how so, then?"])
    real = rollout.mask.bool()
    out = {}
    for fast in (True, False):
        refiner.fast_forward = fast
        refiner.model.zero_grad()
        logits, states = refiner._forward(refiner.model, *rollout.model_inputs, hidden=True)
        (logits[real].logsumexp(-1).sum() + states[real].square().sum()).backward()
        grads = {n: p.grad.clone() for n, p in refiner.model.named_parameters()}
        out[fast] = logits[real], states[real], grads
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)
    for name, grad in out[False][2].items():
        torch.testing.assert_close(out[True][2][name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.unit
def test_the_fast_forward_decodes_the_model_s_own_greedy_responses() -> None:
    refiner = refiner_from_config()
    refiner.eval()
    inputs = refiner.encode(["question 1: why?", "q 2: how so, then?", "q3"])
    fast = refiner.generate(*inputs, greedy=True)
    refiner.fast_forward = False
    assert fast == refiner.generate(*inputs, greedy=True)
    assert len(fast) == 3 and all(0 < len(r) <= refiner.max_new_tokens for r in fast)


@pytest.mark.unit
def test_log_probs_use_the_sampling_temperature() -> None:
    refiner = refiner_from_config(samples_per_question=2)
    pl.seed_everything(0)
    refiner.eval()
    rollout = refiner._sample_rollout(["question 1: why?"])
    with torch.no_grad():
        plain, _ = refiner._forward(refiner.model, *rollout.model_inputs)
        refiner.temperature = 2.0
        tempered, _ = refiner._forward(refiner.model, *rollout.model_inputs)
    torch.testing.assert_close(tempered, plain / 2.0)
    assert not torch.allclose(tempered, plain)
