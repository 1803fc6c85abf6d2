"""What refine exports: the paired sign test, the selection rule, and the val history it reads."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from conftest import quiet_trainer
from torch.utils.data import DataLoader
from transformers import ByT5Tokenizer

from lmgcot.rl.kl import FixedKLController
from lmgcot.rl.module import RationaleRefiner
from lmgcot.rl.selection import select_policy, sign_test
from lmgcot.student.models import build_tiny_t5

pytestmark = pytest.mark.unit


def test_sign_test_by_hand():
    # wins at 0, 1; loss at 4; ties at 2, 3 -> n = 3, P(X >= 2) = (3 + 1) / 8.
    t = sign_test([0, 0, 0, 1, 1], [1, 1, 0, 1, 0])
    assert (t.wins, t.losses, t.ties) == (2, 1, 2)
    assert t.p_value == pytest.approx(0.5)
    # Five wins out of five: 1 / 32. Graded rewards count by sign only.
    assert sign_test([0.1] * 5, [0.2] * 5).p_value == pytest.approx(1 / 32)
    # 10 wins, 2 losses: (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 79 / 4096.
    t = sign_test([0.0] * 12, [1.0] * 10 + [-1.0] * 2)
    assert t.p_value == pytest.approx(79 / 4096)
    # More losses than wins: p above one half; nothing untied: p = 1.
    assert sign_test([1, 1, 1], [0, 0, 1]).p_value == pytest.approx(1.0)
    assert sign_test([1, 0], [1, 0]).p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        sign_test([1, 0], [1])


def history(*evals):
    """The distilled student (20 questions, 10 right) then RL evaluations given as
    (rollouts, number of the 10 wrong questions now right, number of the 10 right now wrong)."""
    base = [1.0] * 10 + [0.0] * 10
    out = [{"rollouts": 0, "reward": 0.5, "scores": base}]
    for rollouts, gained, lost in evals:
        scores = [0.0] * lost + [1.0] * (10 - lost) + [1.0] * gained + [0.0] * (10 - gained)
        out.append({"rollouts": rollouts, "reward": sum(scores) / 20, "scores": scores})
    return out


def test_selection_exports_rl_only_beyond_noise():
    # 6 gained, 0 lost: p = 1/64 < 0.05 / 2 -> the RL policy at rollout 20.
    choice = select_policy(history((10, 1, 0), (20, 6, 0)), alpha=0.05)
    assert (choice.selected, choice.rollouts, choice.best_rollouts) == ("rl", 20, 20)
    assert choice.test.p_value == pytest.approx(1 / 64)
    assert choice.threshold == pytest.approx(0.025)
    # 3 gained, 1 lost: a higher mean, but p = 5/16 -> the distilled student, and the reason says so.
    choice = select_policy(history((10, 3, 1)), alpha=0.05)
    assert choice.selected == "distilled" and choice.rollouts is None
    assert choice.best_rollouts == 10 and "3 wins, 1 losses" in choice.reason
    # Without a test any higher mean wins; an equal mean does not.
    assert select_policy(history((10, 3, 1)), alpha=None).selected == "rl"
    assert select_policy(history((10, 1, 1)), alpha=None).selected == "distilled"


def test_bonferroni_counts_the_evaluations_the_best_was_picked_from():
    # 5 gained, 0 lost: p = 1/32 = 0.031 passes 0.05 alone, not 0.05 / 2.
    assert select_policy(history((10, 5, 0)), alpha=0.05).selected == "rl"
    assert select_policy(history((10, 0, 0), (20, 5, 0)), alpha=0.05).selected == "distilled"


def test_equal_best_evaluations_pick_the_earliest_and_missing_entries_export_distilled():
    assert select_policy(history((10, 6, 0), (20, 6, 0)), alpha=None).rollouts == 10
    assert select_policy(history(), alpha=0.05).reason == "no RL evaluation"
    no_before = history((10, 6, 0))[1:]
    assert select_policy(no_before, alpha=0.05).selected == "distilled"


def guarded(entries, guard_means, floor):
    """`entries` with a guard mean each (the first is the distilled student's) and whether it
    stays at or above `floor`."""
    return [
        {**h, "guard_mean": g, "guard_ok": h["rollouts"] == 0 or g >= floor}
        for h, g in zip(entries, guard_means)
    ]


def test_the_guard_excludes_evaluations_that_lost_the_task():
    # The best by reward (rollout 20, 8 gained) lost the task; rollout 10 (6 gained) did not.
    h = guarded(history((10, 6, 0), (20, 8, 0)), [0.60, 0.595, 0.55], floor=0.59)
    choice = select_policy(h, alpha=0.05)
    assert (choice.selected, choice.rollouts) == ("rl", 10)
    assert (choice.guard_before, choice.guard_best) == (0.60, 0.595)
    # Every evaluation lost it: the distilled student, whatever the sign test says.
    h = guarded(history((10, 6, 0), (20, 8, 0)), [0.60, 0.50, 0.55], floor=0.59)
    choice = select_policy(h, alpha=0.05)
    assert choice.selected == "distilled" and choice.best_rollouts == 20
    assert "0.5500 against the distilled student's 0.6000" in choice.reason
    # The checkpoint the callback kept is the one tested, guard included.
    assert select_policy(h, alpha=None, best_rollouts=10).selected == "distilled"


def tiny_refiner(reward, **settings) -> RationaleRefiner:
    """A one-layer refiner scoring with `reward`, one update pass of minibatches of 4."""
    tok = ByT5Tokenizer()
    model = build_tiny_t5(
        {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2, "num_layers": 1}, tok, seed=0
    )
    return RationaleRefiner(
        model,
        tok,
        reward,
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        kl_controller=FixedKLController(0.05),
        ppo_epochs=1,
        minibatch_size=4,
        max_new_tokens=4,
        **settings,
    )


def val_every_rollout(max_steps: int) -> pl.Trainer:
    return quiet_trainer(
        max_steps=max_steps,
        val_check_interval=1,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
    )


def prompt_loader(n: int) -> DataLoader:
    prompts = [f"q {i}" for i in range(n)]
    return DataLoader(prompts, batch_size=4, collate_fn=lambda xs: {"inputs": list(xs)})


def test_refiner_records_per_question_val_scores_and_checkpoints_them(tmp_path):
    def reward(batch, rationales, token_logprobs):
        # A per-question score that differs between questions: the prompt's index over 10.
        return {"total": [float(x.split()[1]) / 10 for x in batch["inputs"]]}

    refiner = tiny_refiner(reward)
    loader = prompt_loader(6)
    trainer = val_every_rollout(max_steps=2)
    trainer.validate(refiner, dataloaders=loader, verbose=False)
    trainer.fit(refiner, train_dataloaders=loader, val_dataloaders=loader)
    expected = [i / 10 for i in range(6)]
    assert [h["rollouts"] for h in refiner.val_history] == [0, 1, 2]
    for h in refiner.val_history:
        assert h["scores"] == pytest.approx(expected)
        assert h["reward"] == pytest.approx(sum(expected) / 6)
    checkpoint: dict = {}
    refiner.on_save_checkpoint(checkpoint)
    refiner.val_history = []
    refiner.on_load_checkpoint(checkpoint)
    assert [h["rollouts"] for h in refiner.val_history] == [0, 1, 2]


def test_results_table_marks_rl_rows_that_are_the_distilled_student():
    from lmgcot.pipeline.output import format_results_table

    methods = {
        name: {"em": 0.6, "f1": 0.61, "n": 10}
        for name in ("lm_guided_kd", "lm_guided_rl", "lm_guided_rl_sc")
    }
    llm = {"calls": 1, "cache_hits": 0, "input_tokens": 1, "output_tokens": 1}
    reason = "best val reward 0.5800 vs 0.5600: sign test 12 wins, 8 losses, p=0.252"
    kept = {"selected": "distilled", "selection": {"reason": reason}}
    table = format_results_table({"methods": methods, "llm": llm, "refine": kept})
    names = [line.split()[0] for line in table.splitlines()[2:5]]
    assert names == ["lm_guided_kd", "lm_guided_rl*", "lm_guided_rl_sc*"]
    assert f"* the distilled student: refine exported it unchanged ({reason})" in table
    exported = format_results_table({"methods": methods, "llm": llm, "refine": {"selected": "rl"}})
    assert "*" not in exported


def test_refiner_guards_a_component_and_ranks_checkpoints_below_the_floor(tmp_path):
    refiner = None

    def reward(batch, rationales, token_logprobs):
        # The guarded component is lost once training starts.
        task = 1.0 if refiner.rollouts_done == 0 else 0.5
        return {"total": [0.25] * len(rationales), "task": [task] * len(rationales)}

    refiner = tiny_refiner(reward, guard="task", guard_max_drop=0.4)
    loader = prompt_loader(4)
    trainer = val_every_rollout(max_steps=1)
    before = trainer.validate(refiner, dataloaders=loader, verbose=False)[0]
    assert before["val/selection"] == pytest.approx(0.25)
    trainer.fit(refiner, train_dataloaders=loader, val_dataloaders=loader)
    base, after = refiner.val_history
    assert (base["guard_mean"], base["guard_ok"]) == (1.0, True)
    assert (after["guard_mean"], after["guard_ok"]) == (0.5, False)
    assert trainer.callback_metrics["val/selection"] == pytest.approx(0.25 - 2.0)
    assert trainer.callback_metrics["val/task_drop"] == pytest.approx(0.5)
    assert select_policy(refiner.val_history, alpha=None).selected == "distilled"


def test_refine_loads_the_winning_checkpoint_not_the_last_policy(compose_cfg, tmp_path):
    """Refine's export choice (`rl.keep_best`): when one evaluation wins every val question, the
    policy of that evaluation's checkpoint is what the stage exports, not the policy training
    ended with. The val reward is a toy one that the evaluation after rollout 2 wins by
    construction; training goes on to rollout 5 with a reward that moves the policy."""
    from lmgcot.artifacts import StageDir
    from lmgcot.pipeline.builders import build_trainer
    from lmgcot.pipeline.stages.refine import _select

    refiner = None

    def reward(batch, rationales, token_logprobs):
        if batch.get("split") == "val":
            return {"total": [float(refiner.rollouts_done == 2)] * len(rationales)}
        # Train: the share of lowercase letters, which the random student's samples vary in.
        return {"total": [sum(c.islower() for c in r) / max(len(r), 1) for r in rationales]}

    refiner = tiny_refiner(reward)
    refiner.optimizer_factory = functools.partial(torch.optim.Adam, lr=1e-2)
    cfg = compose_cfg("rl.keep_best=true", "rl.keep_best_alpha=0.05")
    out = StageDir(tmp_path / "refine")
    trainer, checkpoint = build_trainer(
        cfg.trainer,
        out,
        [],
        monitor="val/selection",
        mode="max",
        max_steps=5 * refiner.steps_per_rollout(4),
        max_epochs=-1,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        gradient_clip_val=None,
        log_every_n_steps=1,
    )

    def loader(n: int, split: str) -> DataLoader:
        prompts = [f"{split} question {i}?" for i in range(n)]
        return DataLoader(
            list(range(n)),
            batch_size=4,
            collate_fn=lambda xs: {"inputs": [prompts[i] for i in xs], "split": split},
        )

    val = loader(16, "val")
    pl.seed_everything(0)
    trainer.validate(refiner, dataloaders=val, verbose=False)
    trainer.fit(refiner, train_dataloaders=loader(20, "train"), val_dataloaders=val)
    assert refiner.rollouts_done == 5
    assert [h["rollouts"] for h in refiner.val_history] == [0, 2, 4]
    final = {k: v.clone() for k, v in refiner.model.state_dict().items()}
    selected, summary = _select(refiner, checkpoint, cfg.rl, has_val=True)
    assert (selected, summary["rollouts"], summary["test"]["wins"]) == ("rl", 2, 16)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    assert best["rollouts_done"] == 2
    kept = {k[len("model.") :]: v for k, v in best["state_dict"].items() if k.startswith("model.")}
    loaded = refiner.model.state_dict()
    assert kept.keys() == loaded.keys()
    assert all(torch.equal(kept[k], v) for k, v in loaded.items())
    # Rollouts 3-5 moved the policy: exporting it unloaded would give other weights.
    assert not all(torch.equal(final[k], v) for k, v in loaded.items())
