"""The typed config (lmgcot/config): types fail while Hydra composes, `check` reports every bad
range, closed-set value and unknown key as one line naming it, and good configs pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import sweep_params
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from test_cli import lmgcot

from lmgcot.cli import CONFIG_DIR
from lmgcot.config import transport_keys
from lmgcot.config.validate import check
from lmgcot.errors import ConfigError
from lmgcot.rewards.mix import COMPONENTS

CONF = Path(CONFIG_DIR)


@pytest.fixture(scope="module")
def composed():
    """composed(*overrides) -> the job config, with a run dir that needs no Hydra run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda *o: compose("config", overrides=["paths.run_dir=/tmp/unused", *o])
    GlobalHydra.instance().clear()


def _problems(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check(cfg)
    return str(info.value).splitlines()


# -- compose time: types and keys ----------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_steps=abc",
        "teacher.num_samples=1.5",
        "rl.kl.coef=high",
        "reward.weights.task=high",
        "dataset.max_train=many",
        "large_lm.batch_size=big",  # an open group still types the keys it names
        "evaluation.self_consistency.k=[1]",
    ],
)
def test_a_wrong_type_fails_at_compose_time(composed, override):
    with pytest.raises(Exception, match=override.split("=")[0].rsplit(".", 1)[-1]):
        composed(override)


@pytest.mark.unit
def test_a_key_no_schema_names_fails_at_compose_time(composed):
    with pytest.raises(Exception, match="bogus"):
        composed("teacher.bogus=1")


@pytest.mark.e2e
@pytest.mark.slow
def test_the_cli_refuses_a_wrong_type_before_any_work(tmp_path):
    proc = lmgcot(tmp_path, "trainer.max_steps=abc")
    assert proc.returncode != 0
    assert "trainer.max_steps" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.unit
def test_integer_overrides_stay_integers(composed):
    # Fingerprints hash values as written: 1 must not turn into 1.0.
    cfg = composed("rl.kl.coef=1", "teacher.temperature=0", "trainer.precision=16")
    assert type(cfg.rl.kl.coef) is int and type(cfg.teacher.temperature) is int
    assert cfg.trainer.precision == 16


# -- check: every bad value, one line each ---------------------------------------------------------

BAD = {
    "dataset.max_train=-5": "dataset.max_train=-5: must be >= 1, or null",
    "dataset.max_test=0": "dataset.max_test=0: must be >= 1, or null",
    "trainer.max_steps=0": "trainer.max_steps=0: must be >= 1, or -1 (no cap)",
    "trainer.max_epochs=-3": "trainer.max_epochs=-3: must be >= 1, or -1, or null (no cap)",
    "trainer.log_every_n_steps=0": "trainer.log_every_n_steps=0: must be >= 1",
    "teacher.num_samples=0": "teacher.num_samples=0: must be >= 1",
    "teacher.top_p=0": "teacher.top_p=0: must be within (0, 1]",
    "teacher.temperature=-1": "teacher.temperature=-1: must be >= 0, or null",
    "distill.alpha=1.5": "distill.alpha=1.5: must be within [0, 1]",
    "distill.batch_size=0": "distill.batch_size=0: must be >= 1",
    "evaluation.self_consistency.temperature=0": "evaluation.self_consistency.temperature=0: "
    "must be > 0 (samples at temperature 0 are all the same)",
    "student.max_source_length=0": "student.max_source_length=0: must be >= 1",
    "large_lm.error_rate=2": "large_lm.error_rate=2: must be within [0, 1]",
    "large_lm.style.hedge=1.5": "large_lm.style.hedge=1.5: must be within [0, 1]",
    "large_lm.style.missing_hop=-0.1": "large_lm.style.missing_hop=-0.1: must be within [0, 1]",
    "large_lm.reader.distractor_pull=2": "large_lm.reader.distractor_pull=2: must be within [0, 1]",
    "large_lm.reader.length_free_words=-3": "large_lm.reader.length_free_words=-3: must be >= 0",
    "rl.val_every=-1": "rl.val_every=-1: must be >= 0 (0: never)",
    "rl.keep_best_alpha=1.5": "rl.keep_best_alpha=1.5: must be within (0, 1), or null",
    "rl.kl.coef=-1": "rl.kl.coef=-1: must be >= 0",
    "rl.gamma=2": "rl.gamma=2: must be within [0, 1]",
    "rl.clip_range=0": "rl.clip_range=0: must be > 0",
    "reward.weights.task=-1": "reward.weights.task=-1: must be >= 0",
    "stages=[nope]": "stages=['nope']: choose from",
    "evaluation.methods=[nope]": "evaluation.methods: unknown ['nope']; allowed:",
    "teacher.prompting=two_shot": "teacher.prompting='two_shot': allowed values are",
    "distill.objective=teacher": "distill.objective='teacher': allowed values are",
    "dataset.context=weird": "dataset.context='weird': allowed values are",
    "student.tokenizer=words": "student.tokenizer='words': allowed values are",
    "rl.algorithm=a2c": "rl.algorithm='a2c': allowed values are",
    "rl.loss_agg=mean": "rl.loss_agg='mean': allowed values are",
    "rl.kl.estimator=k9": "rl.kl.estimator='k9': allowed values are",
    "rl.kl.controller=pid": "rl.kl.controller='pid': allowed values are",
    "rl.samples_per_question=3": "rl.rollout_batch_size=64 must be a multiple of",
    "rl.samples_per_question=1": "rl.samples_per_question=1: rl.algorithm=grpo needs >= 2",
    "+typo=1": "typo: unknown key; the top level has",
    "+rl.kl.bogus=1": "rl.kl.bogus: unknown key; rl.kl has",
    "+trainer.bogus=1": "trainer.bogus: not an argument of pytorch_lightning.Trainer",
    # Objects built from `_target_`: arguments judged by the callable itself, on a throwaway
    # parameter (lmgcot/config/targets.py), not after minutes of teacher and distillation.
    "distill.optimizer.lr=-1": "distill.optimizer.lr=-1: torch.optim.AdamW refuses it: "
    "Invalid learning rate",
    "rl.optimizer.lr=-1": "rl.optimizer.lr=-1: torch.optim.AdamW refuses it",
    "distill.optimizer.weight_decay=-1": "distill.optimizer.weight_decay=-1: torch.optim.AdamW "
    "refuses it: Invalid weight_decay",
    "distill.scheduler.num_warmup_steps=abc": "distill.scheduler.num_warmup_steps=abc: "
    "transformers.get_linear_schedule_with_warmup refuses it",
    "+distill.scheduler.num_cycles=2": "distill.scheduler.num_cycles: not an argument of "
    "transformers.get_linear_schedule_with_warmup",
    "distill.scheduler._target_=nope.sched": "distill.scheduler._target_=nope.sched: cannot be "
    "imported (Error loading 'nope.sched'; ModuleNotFoundError",
    "+logger.csv.nmae=x": "logger.csv.nmae: not an argument of pytorch_lightning.loggers.CSVLogger",
    "trainer.precision=bogus": "trainer.precision=bogus: pytorch_lightning.Trainer refuses it: "
    "Precision 'bogus' is invalid",
    "trainer.max_time=2h": "trainer.max_time=2h: pytorch_lightning.Trainer refuses it",
    "trainer.accelerator=tpux": "trainer.accelerator='tpux': allowed values are ['auto', 'cpu'",
}


@pytest.mark.unit
@pytest.mark.parametrize("override", sweep_params(BAD))
def test_a_bad_value_is_one_line_naming_the_key_and_what_is_allowed(composed, override):
    assert [line[: len(BAD[override])] for line in _problems(composed(override))] == [BAD[override]]


@pytest.mark.unit
def test_every_bad_value_is_reported_at_once(composed):
    lines = _problems(composed("dataset.max_train=-5", "rl.algorithm=a2c", "+typo=1"))
    assert len(lines) == 3
    assert {line.split("=")[0].split(":")[0] for line in lines} == {
        "dataset.max_train",
        "rl.algorithm",
        "typo",
    }


@pytest.mark.unit
def test_built_objects_are_judged_by_their_callable_before_any_work(composed):
    # One line per refused argument; where no single argument is to blame, the node.
    lines = _problems(composed("rl.optimizer.lr=-1", "rl.optimizer.weight_decay=-1"))
    assert [line.split(":")[0] for line in lines] == [
        "rl.optimizer.lr=-1",
        "rl.optimizer.weight_decay=-1",
    ]
    [line] = _problems(composed("~distill.scheduler.num_warmup_steps"))
    assert line.startswith(
        "distill.scheduler: transformers.get_linear_schedule_with_warmup cannot be built from "
        "these arguments (called as transformers.get_linear_schedule_with_warmup(optimizer, "
        "num_training_steps="
    )
    assert line.endswith("missing 1 required positional argument: 'num_warmup_steps'")


@pytest.mark.unit
def test_the_trainer_is_judged_on_this_cpu_without_touching_global_flags(composed):
    # A GPU or multi-device trainer is checked where it will not train; its device is judged
    # when the stage builds it.
    for trainer in ("gpu", "ddp"):
        check(composed(f"trainer={trainer}", "trainer.deterministic=true"))
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["experiment=finetune_cot", "distill.objective=rationale"],
            "finetune_cot needs a student",
        ),
        (["distill.objective=answer"], "stages: refine trains a rationale writer"),
        (["rl.kl.controller=adaptive", "rl.kl.horizon=0"], "rl.kl.horizon=0: must be > 0"),
    ],
)
def test_settings_that_must_agree(composed, overrides, line):
    assert any(line in p for p in _problems(composed(*overrides)))


@pytest.mark.unit
def test_values_the_schemas_leave_open_pass(composed):
    cfg = composed(
        "+trainer.accumulate_grad_batches=2",  # any Lightning Trainer argument
        "rl.kl.controller=fixed",
        "rl.kl.horizon=0",  # read only by the adaptive controller
        "+large_lm.extra=1",  # a backend's own argument: its constructor judges it
    )
    assert check(cfg) == ["teacher", "distill", "refine", "evaluate"]


def _options() -> list[list[str]]:
    groups = [p for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "sweep")]
    out = [[f"{g.name}={f.stem}"] for g in groups for f in sorted(g.glob("*.yaml"))]
    out += [[f"+sweep={f.stem}"] for f in sorted((CONF / "sweep").glob("*.yaml"))]
    return [o for o in out if not o[0].startswith("prompt_presets=")]


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.parametrize("overrides", _options(), ids=lambda o: o[0])
def test_every_shipped_option_passes(composed, overrides):
    stages = check(composed(*overrides))
    assert stages and stages == sorted(
        stages, key=["teacher", "distill", "refine", "evaluate"].index
    )


# -- what the schemas declare --------------------------------------------------------------------


@pytest.mark.unit
def test_transport_keys_are_the_fingerprints_exclusions():
    # What the fingerprints left out before the schemas declared it (order carries no meaning).
    keys = transport_keys()
    assert {group: set(names) for group, names in keys.items()} == {
        "trainer": {"enable_progress_bar", "enable_model_summary", "log_every_n_steps"},
        "large_lm": {
            "batch_size",
            "max_concurrency",
            "timeout_s",
            "max_retries",
            "retry_base_s",
            "retry_max_s",
            "base_url",
            "prices",
            "max_cost_usd",
            "prompt_caching",
            "prompt_cache_min_tokens",
            "batch_stages",
            "batch_poll_s",
            "batch_max_requests",
            "batch_retries",
            "batch_discount",
        },
    }
    assert all(isinstance(names, tuple) for names in keys.values())


@pytest.mark.unit
@pytest.mark.parametrize(
    "option", sweep_params(sorted(p.stem for p in (CONF / "reward").glob("*.yaml")))
)
def test_a_reward_option_names_only_its_weights(composed, option):
    text = yaml.safe_load((CONF / "reward" / f"{option}.yaml").read_text())
    assert set(text) == {"defaults", "name", "weights"}
    assert all(w != 0 for w in text["weights"].values())
    reward = composed(f"reward={option}").reward
    assert list(reward.weights) == list(COMPONENTS)
    assert dict(reward.weights) == {c: text["weights"].get(c, 0.0) for c in COMPONENTS}
    rest = {k: v for k, v in reward.items() if k not in ("name", "weights")}
    assert rest == {"scorer": "auto", "gate": True, "task_metric": "em", "judge_max_new_tokens": 64}


@pytest.mark.unit
@pytest.mark.parametrize(
    "override",
    [
        "paths.artifact_dir=null",
        "rl.keep_best_alpha=null",
        "teacher.temperature=null",
        "rl.max_questions=null",
        "rl.max_val_questions=null",
        "dataset.max_train=null",
        "prompt.max_context_chars=null",
    ],
)
def test_settings_documented_as_nullable_take_null(composed, override):
    """null means something for these (no sharing, no cap, the default temperature rule)."""
    cfg = composed(override)
    assert check(cfg) == ["teacher", "distill", "refine", "evaluate"]
