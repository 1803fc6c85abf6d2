"""`lmgcot.student.fast_t5`: the same loss, hidden states and gradients as Hugging Face's T5
forward (relu and gated-gelu, tied and untied), dropout that keeps the configured share and the
expectation, and the distiller using it where it can."""

from __future__ import annotations

import random

import pytest
import pytorch_lightning as pl
import torch
from conftest import config_group, quiet_trainer
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from lmgcot.distill.datamodule import RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.student import fast_t5, fast_t5_generation
from lmgcot.student.models import build_student, build_tiny_t5
from lmgcot.student.objectives import TrainingPairs

VOCAB = 384  # ByT5's ids, as build_tiny_t5 sizes the model

# T5 v1.0 (relu, LM head tied to the embeddings and rescaled) and v1.1 / FLAN-T5 (gated gelu,
# untied): the two layouts the student configs load.
LAYOUTS = {
    "relu_tied": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "gated_gelu_untied": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def _t5(
    layout: str, dropout: float = 0.1, seed: int = 0, decoder_layers: int = 3
) -> T5ForConditionalGeneration:
    architecture = dict(
        d_model=24,
        d_ff=40,
        d_kv=8,
        num_heads=3,
        num_layers=2,
        num_decoder_layers=decoder_layers,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        dropout_rate=dropout,
        **LAYOUTS[layout],
    )
    return build_tiny_t5(architecture, seed=seed)


def _batch(seed: int = 1) -> dict:
    """Rows of different lengths on both sides: source padding and -100 labels in every batch."""
    g = torch.Generator().manual_seed(seed)
    sources, targets = [31, 7, 18, 25], [9, 3, 14, 6]
    input_ids = torch.zeros(len(sources), max(sources), dtype=torch.long)
    labels = torch.full((len(targets), max(targets)), -100, dtype=torch.long)
    for row, (s, t) in enumerate(zip(sources, targets)):
        input_ids[row, :s] = torch.randint(2, VOCAB, (s,), generator=g)
        labels[row, :t] = torch.randint(2, VOCAB, (t,), generator=g)
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "labels": labels}


def _grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.unit
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_loss_and_gradients_match_the_model_s_own_forward(layout):
    model = _t5(layout).eval()  # no dropout: the same computation exactly
    batch = _batch()
    assert fast_t5.supports(model)
    ours, theirs = fast_t5.seq2seq_loss(model, **batch), model(**batch).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours_g, theirs_g = _grads(model, ours), _grads(model, model(**batch).loss)
    assert ours_g.keys() == theirs_g.keys()
    # Every parameter gets a gradient, the relative position biases included.
    assert len(ours_g) == len(list(model.parameters()))
    for name in theirs_g:
        torch.testing.assert_close(ours_g[name], theirs_g[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.unit
@pytest.mark.parametrize("grad", [True, False], ids=["update", "no_grad"])
def test_decoder_states_with_a_decoder_mask_match_the_model_s_own(grad):
    """The RL forward's shape of call: encoder states given, padded responses masked. Without
    gradients (rollout log-probs) attention runs through torch's fused kernel."""
    torch.set_grad_enabled(grad)
    try:
        _check_decoder_states()
    finally:
        torch.set_grad_enabled(True)


def _check_decoder_states():
    model = _t5("gated_gelu_untied").eval()
    batch = _batch()
    decoder_ids = model._shift_right(batch["labels"])
    decoder_mask = (batch["labels"] != -100).long()
    decoder_mask[:, 0] = 1
    encoded = fast_t5.encode(model, batch["input_ids"], batch["attention_mask"])
    reference = model.get_encoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    torch.testing.assert_close(encoded, reference, rtol=1e-5, atol=1e-5)
    out = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=reference),
        attention_mask=batch["attention_mask"],
        decoder_input_ids=decoder_ids,
        decoder_attention_mask=decoder_mask,
        output_hidden_states=True,
        use_cache=False,
    )
    hidden = fast_t5.decode(model, encoded, batch["attention_mask"], decoder_ids, decoder_mask)
    real = decoder_mask.bool()  # padded positions' states are never read
    torch.testing.assert_close(
        hidden[real], out.decoder_hidden_states[-1][real], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        fast_t5.lm_logits(model, hidden)[real], out.logits[real], rtol=1e-5, atol=1e-5
    )


@pytest.mark.unit
@pytest.mark.parametrize("bidirectional", [True, False])
def test_position_bias_is_the_model_s_own(bidirectional):
    model = _t5("relu_tied")
    stack = model.encoder if bidirectional else model.decoder
    att = stack.block[0].layer[0].SelfAttention
    for length in (1, 2, 7, 33):
        torch.testing.assert_close(
            fast_t5._position_bias(att, length, bidirectional), att.compute_bias(length, length)
        )


@pytest.mark.unit
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_dropout_keeps_the_configured_share_and_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = fast_t5.dropout(x, p, training=True)
    kept = (y != 0).float().mean().item()
    # Binomial standard error at n = 200,000 is at most 0.0011.
    assert abs(kept - (1 - p)) < 0.006
    assert abs(y.mean().item() - 1.0) < 0.006 / (1 - p)
    assert torch.unique(y[y != 0]).numel() == 1  # one scale for every kept element
    # Masks are independent draws from torch's generator: reproducible under a seed, new each call.
    torch.manual_seed(0)
    assert torch.equal(fast_t5.dropout(x, p, training=True), y)
    assert not torch.equal(fast_t5.dropout(x, p, training=True), y)


@pytest.mark.unit
def test_dropout_edges():
    x = torch.randn(5, 7)
    assert fast_t5.dropout(x, 0.1, training=False) is x
    assert fast_t5.dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(fast_t5.dropout(x, 1.0, training=True)) == 0
    # Neighbouring elements come from different bits of one 64-bit draw: no pattern across them.
    torch.manual_seed(3)
    keep, _ = fast_t5.keep_mask(torch.Size([100_000, 4]), 0.5, torch.float32, torch.device("cpu"))
    lanes = keep.mean(0)
    assert torch.all((lanes - 0.5).abs() < 0.01), lanes
    pairs = (keep[:, 0] == keep[:, 1]).float().mean()
    assert abs(pairs.item() - 0.5) < 0.01


@pytest.mark.unit
def test_training_mode_drops_and_its_gradients_are_unbiased():
    """With dropout on, the loss differs from the dropout-free one; averaged over many masks the
    gradient of a linear read-out approaches the dropout-free gradient."""
    model = _t5("relu_tied", dropout=0.3)
    batch = _batch()
    model.eval()
    clean = fast_t5.seq2seq_loss(model, **batch).item()
    model.train()
    torch.manual_seed(0)
    noisy = [fast_t5.seq2seq_loss(model, **batch).item() for _ in range(3)]
    assert all(abs(n - clean) > 1e-4 for n in noisy)
    assert len(set(noisy)) == 3
    # Each of 64 outputs has its own mask: d out_i / d w_ij = mask_i * scale * x_j.
    w = torch.randn(64, 32, requires_grad=True)
    x = torch.randn(32)
    torch.manual_seed(1)
    total = torch.zeros_like(w)
    for _ in range(400):
        (g,) = torch.autograd.grad(fast_t5.dropout(w @ x, 0.3, True).sum(), w)
        total += g
    ratio = total / 400 / x  # mask * scale averaged over 400 draws, per output
    # 25,600 draws of a 0 / (1 / 0.7) variable: standard error 0.004.
    assert abs(ratio.mean().item() - 1.0) < 0.02


@pytest.mark.unit
def test_supports_only_what_it_computes():
    model = _t5("relu_tied")
    assert fast_t5.supports(model)
    assert not fast_t5.supports(_t5("relu_tied").half())
    checkpointed = _t5("relu_tied")
    checkpointed.gradient_checkpointing_enable()
    assert not fast_t5.supports(checkpointed)
    assert not fast_t5.supports(model.encoder)


def _distiller(fast: bool, dropout: float) -> RationaleDistiller:
    return RationaleDistiller(
        _t5("relu_tied", dropout=dropout),
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3),
        fast_forward=fast,
    )


@pytest.mark.unit
def test_the_distiller_trains_through_it_by_default():
    assert config_group("distill")["fast_forward"] is True
    batch = _batch()
    fast, plain = _distiller(True, 0.0), _distiller(False, 0.0)
    for module in (fast, plain):
        module.train()
    torch.testing.assert_close(fast.task_losses(batch)["loss"], plain.task_losses(batch)["loss"])
    # With dropout the two forwards draw different masks: the losses part.
    fast, plain = _distiller(True, 0.3), _distiller(False, 0.3)
    torch.manual_seed(0)
    a = fast.train().task_losses(batch)["loss"]
    torch.manual_seed(0)
    b = plain.train().task_losses(batch)["loss"]
    assert abs(a.item() - b.item()) > 1e-4


@pytest.mark.stage
def test_distillation_through_it_learns(tmp_path):
    """A real Lightning fit with dropout on, through the fast forward: the loss on held-out pairs
    of the same mapping (a word reversed) falls."""
    pl.seed_everything(0, verbose=False)
    student = build_student(
        "tiny",
        architecture=dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2),
        tokenizer="byt5",
        max_source_length=24,
        max_target_length=12,
    )
    assert fast_t5.supports(student.model) and student.model.config.dropout_rate > 0
    rng = random.Random(0)

    def pairs(n):
        words = [
            "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 7))) for _ in range(n)
        ]
        return TrainingPairs({"target": [(f"reverse: {w}", w[::-1]) for w in words]})

    datamodule = RationaleDataModule(
        student.tokenizer, pairs(256), pairs(32), 24, 12, batch_size=16, seed=0
    )
    module = RationaleDistiller(
        student.model, optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3)
    )
    assert module.fast_forward
    datamodule.setup("fit")
    before = _val_loss(student.model, datamodule)
    trainer = quiet_trainer(tmp_path, max_steps=120, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    after = _val_loss(student.model, datamodule)
    assert after < 0.7 * before, (before, after)


def _val_loss(model, datamodule) -> float:
    model.eval()
    with torch.no_grad():
        losses = [model(**b).loss.item() for b in datamodule.val_dataloader()]
    return sum(losses) / len(losses)


def _prompts(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of different lengths, right-padded."""
    batch = _batch(seed)
    return batch["input_ids"][:3], batch["attention_mask"][:3]


def _varied_t5(layout: str) -> T5ForConditionalGeneration:
    """A random T5 whose greedy rationales vary from token to token: a random T5 repeats one
    token; its decoder's self-attention and position bias scaled by 4 make each step depend on
    the ones before (what the cache must get right)."""
    # Equal depths: the model's own `generate` (transformers 5.x) fails on a deeper decoder.
    model = _t5(layout, dropout=0.0, decoder_layers=2).eval()
    with torch.no_grad():
        for name, weight in model.decoder.named_parameters():
            if "SelfAttention" in name:
                weight.mul_(4.0)
    return model


def _ending_t5(layout: str) -> T5ForConditionalGeneration:
    """`_varied_t5` with rationales that end at different steps: EOS's output row is made 1.05
    times a token's that greedy decoding first picks at different steps on different prompts, so
    rows end where they would pick it (by a margin: sampling near temperature 0 ends them too)."""
    model = _varied_t5(layout)
    ids, mask = _prompts()
    with torch.no_grad():
        picked = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False
        )
        rows = picked[:, 1:].tolist()

        def ends(token: int) -> int:
            return len({row.index(token) if token in row else None for row in rows})

        head = model.get_output_embeddings().weight
        head[model.config.eos_token_id] = 1.05 * head[max(sorted(set(rows[1])), key=ends)]
    return model


@pytest.mark.unit
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_greedy_decoding_is_the_model_s_own(layout):
    model = _ending_t5(layout)
    ids, mask = _prompts()
    own = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    ours = fast_t5_generation.generate(model, ids, mask, 12)
    assert torch.equal(ours, own[:, 1:])
    eos = model.config.eos_token_id
    ends = [row.index(eos) if eos in row else None for row in ours.tolist()]
    # The premise: rationales that vary, and end at different steps (or run to the limit).
    assert len(set(ends)) >= 2 and len(set(ours[0].tolist())) >= 4
    for row, end in zip(ours, ends):
        if end is not None:
            assert (row[end + 1 :] == model.config.pad_token_id).all()


@pytest.mark.unit
def test_greedy_decoding_of_a_bfloat16_model_is_the_model_s_own():
    model = _varied_t5("gated_gelu_untied").to(torch.bfloat16)
    ids, mask = _prompts()
    assert fast_t5_generation.supports_generation(model)
    own = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    assert torch.equal(fast_t5_generation.generate(model, ids, mask, 12), own[:, 1:])


def _first_two_steps(model, ids, mask, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own next-token distributions at step 1, and at step 2 after `first`."""
    start = model.config.decoder_start_token_id
    decoder = torch.tensor([[start, first]] * len(ids))
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
    return logits[:, 0], logits[:, 1]


def _sampled(layout: str, seed: int, n: int, steps: int, **options) -> tuple:
    """(model, prompts, mask, n samples of `steps` tokens per prompt as (prompts, n, steps), the
    model's own step-1 logits) of a random T5 without dropout."""
    torch.manual_seed(seed)
    model = _t5(layout, dropout=0.0).eval()
    ids, mask = _prompts()
    tokens = fast_t5_generation.generate(model, ids, mask, steps, num_samples=n, **options)
    with torch.no_grad():
        first_logits, _ = _first_two_steps(model, ids, mask, 0)
    return model, ids, mask, tokens.view(len(ids), n, steps), first_logits


@pytest.mark.unit
def test_samples_follow_the_model_s_distribution_step_after_step():
    n, temperature = 6000, 0.7
    model, ids, mask, tokens, first_logits = _sampled(
        "gated_gelu_untied", 0, n, 2, temperature=temperature
    )
    for row in range(len(ids)):
        p1 = torch.softmax(first_logits[row] / temperature, -1)
        _close_to(tokens[row, :, 0], p1)
        # Step 2, among the samples whose first token was the likeliest: the cache and the fed-back
        # token give the model's own conditional distribution.
        top = int(p1.argmax())
        with torch.no_grad():
            _, second = _first_two_steps(model, ids[row : row + 1], mask[row : row + 1], top)
        _close_to(
            tokens[row, tokens[row, :, 0] == top, 1], torch.softmax(second[0] / temperature, -1)
        )


def _close_to(samples: torch.Tensor, probs: torch.Tensor) -> None:
    """Each of the ten likeliest tokens' share of `samples` is within 4 standard errors of its
    probability."""
    assert len(samples) > 300
    shares = torch.bincount(samples, minlength=len(probs)).double() / len(samples)
    for token in probs.topk(10).indices.tolist():
        p = float(probs[token])
        assert abs(float(shares[token]) - p) < 4 * (p * (1 - p) / len(samples)) ** 0.5 + 1e-3, token


@pytest.mark.unit
def test_nucleus_sampling_draws_only_from_the_nucleus_in_proportion():
    top_p, n = 0.3, 4000
    _, ids, _, tokens, logits = _sampled("relu_tied", 1, n, 1, temperature=1.0, top_p=top_p)
    for row, samples in enumerate(tokens[:, :, 0]):
        probs, order = torch.softmax(logits[row], -1).sort(descending=True)
        size = int(((probs.cumsum(0) - probs) < top_p).sum())  # the smallest set reaching top_p
        nucleus = torch.zeros_like(probs).scatter(0, order[:size], probs[:size])
        assert 1 < size < 100
        assert set(samples.tolist()) <= set(order[:size].tolist())
        _close_to(samples, nucleus / nucleus.sum())


@pytest.mark.unit
def test_a_prompt_s_samples_share_its_encoding():
    """Near-zero temperature: every sample of a prompt is that prompt's greedy rationale, also
    after prompts whose samples have all ended leave the batch."""
    model = _ending_t5("gated_gelu_untied")
    ids, mask = _prompts()
    greedy = fast_t5_generation.generate(model, ids, mask, 12)
    sampled = fast_t5_generation.generate(model, ids, mask, 12, num_samples=4, temperature=1e-4)
    assert torch.equal(sampled, greedy.repeat_interleave(4, 0))
    eos = model.config.eos_token_id
    assert len({row.index(eos) if eos in row else None for row in greedy.tolist()}) >= 2


@pytest.mark.unit
def test_suppressed_tokens_are_never_generated():
    model = _ending_t5("relu_tied")
    ids, mask = _prompts()
    plain = fast_t5_generation.generate(model, ids, mask, 12)
    eos = model.config.eos_token_id
    suppressed = sorted({eos, int(plain[0, 0])})
    model.generation_config.suppress_tokens = suppressed
    assert fast_t5_generation.supports_generation(model)
    greedy = fast_t5_generation.generate(model, ids, mask, 12)
    own = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    assert torch.equal(greedy, own[:, 1:]) and greedy.shape[1] == 12
    sampled = fast_t5_generation.generate(model, ids, mask, 12, num_samples=50, temperature=2.0)
    assert not torch.isin(torch.cat([greedy, sampled]), torch.tensor(suppressed)).any()


@pytest.mark.unit
def test_generation_is_left_to_the_model_when_its_config_processes_logits():
    model = _t5("relu_tied")
    assert fast_t5_generation.supports_generation(model)
    for key, value in (
        ("repetition_penalty", 1.3),
        ("typical_p", 0.9),
        ("no_repeat_ngram_size", 2),
    ):
        changed = _t5("relu_tied")
        setattr(changed.generation_config, key, value)
        assert not fast_t5_generation.supports_generation(changed), key
    assert not fast_t5_generation.supports_generation(_t5("relu_tied").half())
