"""The distillation optimiser: the default fused AdamW takes the same steps as the per-tensor one,
and mixed precision with gradient clipping gets it unfused (Lightning refuses to clip before a
fused step)."""

from __future__ import annotations

import pytest
import torch
from conftest import config_group, quiet_trainer
from hydra.utils import instantiate

from lmgcot.distill.datamodule import RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.student.models import build_student
from lmgcot.student.objectives import TrainingPairs
from lmgcot.student.optim import build_optimizer

TINY = dict(d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1)


def _student():
    torch.manual_seed(0)
    return build_student(
        "tiny", architecture=TINY, tokenizer="byt5", max_source_length=40, max_target_length=12
    )


@pytest.mark.unit
def test_the_default_optimizer_steps_like_adamw_one_tensor_at_a_time():
    optimizer = config_group("distill")["optimizer"]
    assert optimizer.get("fused") is True
    factory = instantiate(optimizer)
    models = [_student().model.eval() for _ in range(2)]  # no dropout: the same gradients
    reference = torch.optim.AdamW(
        models[1].parameters(),
        lr=optimizer["lr"],
        weight_decay=optimizer["weight_decay"],
        foreach=False,
    )
    optimizers = [factory(models[0].parameters()), reference]
    ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    labels = torch.tensor([[10, 11, 1], [12, 1, -100]])
    for _ in range(3):
        for model, opt in zip(models, optimizers):
            model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.stage
def test_mixed_precision_with_clipping_trains_with_an_unfused_optimizer(tmp_path):
    student = _student()
    pairs = TrainingPairs({"target": [("question: a b c", "a b"), ("question: d e", "d")] * 4})
    dm = RationaleDataModule(student.tokenizer, pairs, pairs, 40, 12, batch_size=4)
    module = RationaleDistiller(
        student.model, optimizer=lambda p, fused=True: torch.optim.AdamW(p, fused=fused)
    )
    trainer = quiet_trainer(
        tmp_path,
        max_steps=2,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert not trainer.optimizers[0].defaults["fused"]


@pytest.mark.unit
@pytest.mark.parametrize("group", ["distill", "rl"])
def test_the_configured_optimizer_is_fused_unless_mixed_precision_clips(group, tmp_path):
    factory = instantiate(config_group(group)["optimizer"])
    params = _student().model.parameters
    plain = quiet_trainer(tmp_path)
    mixed = quiet_trainer(tmp_path, precision="bf16-mixed")
    assert build_optimizer(factory, params, plain, clips=True).defaults["fused"]
    assert build_optimizer(factory, params, mixed, clips=False).defaults["fused"]
    assert not build_optimizer(factory, params, mixed, clips=True).defaults["fused"]
