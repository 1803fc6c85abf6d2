"""A sweep's objective is a yardstick the searched keys do not move: the Optuna sweep maximises the
exported student's val task score, and a sweep optimising the reward mix's own value while it
varies the weights is refused before any trial runs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from test_cli import QUICK, lmgcot

from lmgcot.cli import CONFIG_DIR, lookup
from lmgcot.config.sweep_objective import check_launcher, check_sweep_objective
from lmgcot.errors import ConfigError

pytestmark = pytest.mark.unit

OLD = "refine.val_reward_best"
NEW = "refine.val_task"


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _command_line(objective: str, *task_overrides: str):
    """What a multirun's config holds for `lmgcot -m objective=... *task_overrides` (compose
    refuses sweep overrides, so the Hydra part is written out)."""
    return OmegaConf.create(
        {
            "objective": objective,
            "hydra": {"sweeper": {"params": None}, "overrides": {"task": list(task_overrides)}},
        }
    )


def test_the_optuna_sweep_maximises_a_score_its_weights_do_not_define():
    cfg = _compose("+sweep=optuna")
    assert cfg.objective == NEW and cfg.hydra.sweeper.direction == "maximize"
    assert any(k.startswith("reward.weights.") for k in cfg.hydra.sweeper.params)
    check_sweep_objective(cfg)  # no refusal


def test_the_optuna_sweep_on_the_mix_s_own_value_is_refused_in_one_line_naming_both_keys():
    cfg = _compose("+sweep=optuna", f"objective={OLD}")
    with pytest.raises(ConfigError) as err:
        check_sweep_objective(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert f"objective={OLD}" in message and "reward.weights.factuality" in message
    assert NEW in message  # what to optimise instead


@pytest.mark.parametrize(
    "objective, varied, refused",
    [
        (OLD, "reward.weights.coherence=0.1,0.9", True),
        (OLD, "reward=task,all", True),  # an option is a set of weights too
        ("refine.val_reward_before", "reward.gate=true,false", True),
        ("refine.reward.coherence", "+reward.weights.coherence=interval(0,1)", True),
        (OLD, "rl.kl.coef=0.1,0.2", False),  # the mix stays: its value is comparable
        (OLD, "reward.weights.coherence=0.5", False),  # fixed, not swept
        (NEW, "reward.weights.coherence=0.1,0.9", False),
        (NEW, "reward.task_metric=em,f1", True),  # f1 >= em: the metric would win, not the mix
        ("refine.val_task_before", "reward.task_metric=em,f1", True),
        ("methods.lm_guided_rl.em", "reward.weights.coherence=0.1,0.9", False),
    ],
)
def test_a_sweep_is_refused_exactly_when_it_varies_what_defines_its_objective(
    objective, varied, refused
):
    cfg = _command_line(objective, varied, "seed=0")
    if not refused:
        check_sweep_objective(cfg)
        return
    with pytest.raises(ConfigError, match=rf"objective={objective} .*swept {varied.split('=')[0]}"):
        check_sweep_objective(cfg)


def test_the_refusal_is_wired_into_hydra_s_multirun_start(capsys):
    """conf/config.yaml registers the check as a Hydra callback: the one Hydra calls before the
    sweeper launches anything. It exits 2 itself: Hydra turns a callback's exception into a
    warning and goes on."""
    from hydra._internal.callbacks import Callbacks

    cfg = _compose("+sweep=optuna", f"objective={OLD}")
    with pytest.raises(SystemExit) as exit_:
        Callbacks(cfg).on_multirun_start(config=cfg, config_name="config")
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"lmgcot: error: objective={OLD} is the reward mix's own value")
    good = _compose("+sweep=optuna")
    Callbacks(good).on_multirun_start(config=good, config_name="config")  # no exit


@pytest.mark.e2e
@pytest.mark.slow
def test_the_cli_refuses_before_any_trial_runs(tmp_path):
    proc = lmgcot(tmp_path, "-m", "+sweep=optuna", f"objective={OLD}", *QUICK)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert f"objective={OLD}" in line and "reward.weights." in line
    assert not list(tmp_path.rglob("results.json")) and not (tmp_path / "outputs").exists()


# -- the objective's value: two trials, one student, different weights ----------------------------

ASPECTS = ("factuality", "relevance", "logicality", "consistency")
ASPECTS += ("coherence", "fluency", "naturalness", "readability")


def _weight_on(aspect: str) -> list[str]:
    """A trial of the Optuna sweep's space that put all the aspect weight on `aspect`."""
    return [f"reward.weights.{a}={1.0 if a == aspect else 0.0}" for a in ASPECTS]


def test_the_same_student_under_two_mixes_gets_two_mix_values_and_one_task_score(tmp_path):
    """The module records each val evaluation's component means, and refine reads the exported
    student's task score from them: the weights move the reward, never the task score."""
    import functools

    import torch
    from conftest import quiet_trainer
    from torch.utils.data import DataLoader
    from transformers import ByT5Tokenizer

    from lmgcot.pipeline.stages.refine import _val_task
    from lmgcot.rewards.mix import RewardMix
    from lmgcot.rl.kl import FixedKLController
    from lmgcot.rl.module import RationaleRefiner
    from lmgcot.student.models import build_tiny_t5

    tok = ByT5Tokenizer()
    prompts = [f"question {i}: why?" for i in range(6)]

    def evaluate(aspect: str) -> dict:
        weights = {"task": 1.0, **{a: float(a == aspect) for a in ASPECTS}}
        mix = RewardMix(weights)

        def reward_fn(batch, rationales, token_logprobs):
            # A high and a low aspect, and a task score that depends on the rationale only.
            comps = {
                "task": [float(len(r) % 2) for r in rationales],
                "readability": [0.9] * len(rationales),
                "coherence": [0.1] * len(rationales),
            }
            totals, _ = mix.combine(comps)
            return {**comps, "total": totals}

        model = build_tiny_t5(
            {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2, "num_layers": 1}, tok, seed=0
        )
        refiner = RationaleRefiner(
            model,
            tok,
            reward_fn,
            optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
            kl_controller=FixedKLController(0.05),
            max_new_tokens=8,
        )
        loader = DataLoader(prompts, batch_size=3, collate_fn=lambda xs: {"inputs": list(xs)})
        quiet_trainer(tmp_path).validate(refiner, dataloaders=loader, verbose=False)
        [entry] = refiner.val_history
        _, task = _val_task(refiner.val_history, "distilled", None, 0)
        return {"reward": entry["reward"], "task": task}

    low, high = evaluate("coherence"), evaluate("readability")
    assert high["reward"] > low["reward"]  # the old yardstick prefers the mix, not the student
    assert high["task"] == low["task"] is not None


@pytest.mark.stage
@pytest.mark.slow
def test_two_trials_that_only_move_weight_onto_a_high_aspect_tie_on_the_new_objective(
    compose_cfg, tmp_path
):
    """Two Optuna trials as the sweep runs them (reward=all, the task weight 1, the aspect weights
    drawn), sharing the teacher and the distilled student. Refine exports the distilled student in
    both (4 val questions cannot pass the sign test), so the trials differ only in their weights:
    the old objective still prefers the mix on the aspect that already scores high, the new one
    ties them."""
    from lmgcot.pipeline import run

    def trial(aspect: str, n: int, *extra: str) -> dict:
        cfg = compose_cfg(
            "stages=[teacher,distill,refine]",
            "reward=all",
            # The tiny student writes byte soup, which the gate would score 0 on every aspect.
            "reward.gate=false",
            *_weight_on(aspect),
            *extra,
            run_dir=tmp_path / f"trial{n}",
        )
        return run(cfg)

    low, high = trial("coherence", 0), trial("readability", 1)
    assert low["refine"]["selected"] == high["refine"]["selected"] == "distilled"
    assert lookup(high, OLD) > lookup(low, OLD)  # the old objective picks the readability mix
    assert lookup(high, NEW) == lookup(low, NEW) == lookup(low, "refine.val_task_before")
    assert isinstance(lookup(low, NEW), float)
    # Without keep_best the final weights are exported; with no val evaluation at the last
    # rollout (val_every 3 of 2), refine evaluates them once more so the objective has a value.
    final = trial("coherence", 2, "rl.keep_best=false", "rl.val_every=3")
    assert final["refine"]["selected"] == "rl" and isinstance(lookup(final, NEW), float)


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (
            ["hydra/launcher=parallel", "hydra.launcher.n_jobs=0"],
            "hydra.launcher.n_jobs=0: must be a non-zero whole number",
        ),
        (
            ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=0"],
            "hydra.launcher.timeout_min=0: must be a whole number >= 1",
        ),
        (
            ["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=0"],
            "hydra.launcher.tasks_per_node=0: must be a whole number >= 1",
        ),
    ],
)
def test_a_launcher_setting_the_launcher_would_refuse_is_one_line(overrides, refusal):
    with pytest.raises(ConfigError, match=refusal.replace("[", r"\[")):
        check_launcher(_compose(*overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["hydra/launcher=parallel", "hydra.launcher.n_jobs=-1"],
        ["hydra/launcher=submitit_local"],
        ["hydra/launcher=slurm"],
    ],
)
def test_the_shipped_launchers_and_joblibs_minus_one_pass(overrides):
    check_launcher(_compose(*overrides))
