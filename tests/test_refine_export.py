"""What refine exports when RL is kept: the RL policy in refine/student, and lm_guided_rl
evaluated from it rather than the distilled student's rows taken over."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from lmgcot.pipeline import run

pytestmark = [pytest.mark.stage, pytest.mark.slow]

# A distilled student that writes sentences (150 steps; the suite's usual 3 leave it writing
# byte soup, which every aspect gates to 0: no reward spread, no update), refined hard on an
# aspect that needs no large LM.
WRITES_SENTENCES = [
    "trainer.max_steps=150",
    "trainer.max_epochs=200",
    "distill.optimizer.lr=5e-3",
]
REFINE_HARD = [
    "reward=readability",
    "rl.optimizer.lr=1e-2",
    "rl.rollouts=4",
    "rl.rollout_batch_size=16",
    "rl.samples_per_question=4",
    "rl.minibatch_size=16",
    "rl.val_every=2",
]


def weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForSeq2SeqLM.from_pretrained(path).state_dict()


def rationales(run_dir, method: str) -> list[list[str]]:
    lines = (run_dir / "eval" / f"{method}.jsonl").read_text().splitlines()
    return [json.loads(line)["rationales"] for line in lines]


def test_without_keep_best_the_rl_policy_is_exported_and_evaluated(compose_cfg, tmp_path):
    results = run(compose_cfg("rl.keep_best=false", *WRITES_SENTENCES, *REFINE_HARD))
    run_dir = tmp_path / "run"
    quality = results["rationale_quality"]
    # The premise: the distilled student's rationales pass the well-formedness gate, so its
    # samples have a reward to learn from.
    assert quality["lm_guided_kd"]["wellformed"] > 0, quality
    refine = results["refine"]
    assert refine["selected"] == "rl" and refine["selection"] is None
    assert refine["rollouts"] == 4
    exported = weights(run_dir / "refine" / "student")
    distilled = weights(run_dir / "distill" / "student")
    assert exported.keys() == distilled.keys()
    assert not all(torch.equal(exported[k], distilled[k]) for k in exported)
    # lm_guided_rl was generated from the exported student: other rationales than the distilled
    # student's, and results.json says so.
    rl, kd = rationales(run_dir, "lm_guided_rl"), rationales(run_dir, "lm_guided_kd")
    assert len(rl) == len(kd) == 8
    assert rl != kd
    assert quality["lm_guided_rl"] != quality["lm_guided_kd"]
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["rationale_quality"]["lm_guided_rl"] == quality["lm_guided_rl"]
