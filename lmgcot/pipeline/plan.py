"""`lmgcot ... plan=true`: what a command would send to the large LM, and cost, before any of it is
paid for. Nothing is sent and no run directory (or call cache) is written.

The plan composes the same config, loads the same data and asks the call cache which requests it
already holds. Stages whose requests are known before they run are planned by running their own
prompt-building code through `DryRunLM` (exact counts): the teacher, and the evaluation methods
that use the large LM alone (`standard`, `cot`). Stages whose requests depend on training are
counted from their settings and marked as estimates: refine (the task reward's rollouts x
rationales, the val evaluations, the judge) and the methods that guide the large LM with a
student's rationales (test questions x samples). A stage whose artifact the run would reuse (the
run directory's or the shared store's, same fingerprint) sends nothing. How tokens are counted is
in `lmgcot.llm.dry_run`; docs/cost.md shows a plan and how the spend cap behaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from lmgcot.artifacts import RunDir, StageDir
from lmgcot.config.validate import check
from lmgcot.errors import ConfigError
from lmgcot.eval import methods as M
from lmgcot.llm.base import GenerationParams, LargeLM
from lmgcot.llm.cache_shards import open_cache_reader
from lmgcot.llm.dry_run import DryRunLM, StageCount
from lmgcot.pipeline.builders import build
from lmgcot.pipeline.checks import check_splits
from lmgcot.pipeline.context import RunContext
from lmgcot.pipeline.stage import Stage
from lmgcot.pipeline.stages.evaluate import method_fingerprint
from lmgcot.pipeline.stages.quality import QUALITY_SOURCES
from lmgcot.pipeline.stages.refine import REFINE
from lmgcot.pipeline.stages.teacher import TEACHER, split_rationales, teacher_exemplars
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.judge import ASPECT_NAMES, build_judge_prompt
from lmgcot.rewards.mix import RewardMix
from lmgcot.student.objectives import OBJECTIVES

CACHE_FILE = "llm_calls.sqlite"  # the pipeline's call cache, under paths.cache_dir
# Prompts whose mean length stands for an estimated stage's requests (cycled over its questions).
SAMPLE = 200
# The key an API backend is built with when the environment has none: the plan never sends.
PLAN_KEY = "plan-sends-nothing"


def plan(cfg: DictConfig) -> dict:
    """The plan of a run under `cfg`: per stage and in total, requests to send, cache hits,
    tokens and cost (see the module docstring). Raises ConfigError as the run would."""
    stages = check(cfg)
    dataset = build(cfg.dataset, "dataset")
    splits = dataset.load_splits()
    check_splits(splits, stages, dataset.name, cfg.dataset)
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    with _key_if_missing(cfg) as key_missing:
        real: LargeLM = build(cfg.large_lm, "large_lm", cache=None)
    probe = (splits.test or splits.train or splits.val)[0]
    real.check_prompt(prompts.standard_prompt(probe))
    reader = open_cache_reader(
        Path(cfg.paths.cache_dir) / CACHE_FILE, cfg.paths.get("shared_fs", "auto")
    )
    dry = DryRunLM(real, reader)
    ctx = RunContext(cfg, RunDir(Path(cfg.paths.run_dir)), dataset.name, splits, prompts, dry, [])
    try:
        for name in stages:
            dry.set_stage(name)
            PLANNERS[name](ctx, dry)
    finally:
        if reader is not None:
            reader.close()
    counts = dry.finish()
    notes = [f"input tokens: {dry.token_source()}"]
    if any(c.output_at_most for c in counts.values()):
        notes.append(
            "output tokens marked <=: max_new_tokens per request (no cached reply of that kind to "
            "measure); the cost is then an upper bound too"
        )
    if key_missing:
        notes.append(f"{key_missing} is not set: the run will need it")
    return {
        "large_lm": f"{real.backend}:{real.model}",
        "dataset": dataset.name,
        "n": {split: len(xs) for split, xs in splits.items()},
        "priced": real.price() is not None,
        "stages": {name: _row(c) for name, c in counts.items()},
        "total": _total(counts),
        "notes": notes,
    }


# -- the stages ------------------------------------------------------------------------------------


def _plan_teacher(ctx: RunContext, dry: DryRunLM) -> None:
    if _reused(ctx, TEACHER, dry):
        return
    view = TEACHER.view(ctx.cfg)
    exemplars = teacher_exemplars(ctx, view)
    for examples in (ctx.splits.train, ctx.splits.val):
        split_rationales(ctx, view, examples, exemplars)


def _plan_distill(ctx: RunContext, dry: DryRunLM) -> None:
    """Distillation trains the student: no large-LM call."""


def _plan_refine(ctx: RunContext, dry: DryRunLM) -> None:
    """From the settings: every sampled rationale of every rollout is a new text (no cache hit
    assumed), scored by the task reward and/or the judge; each val evaluation scores the val
    questions' greedy rationales with the large LM's answers (the task guard) and the mix."""
    if _reused(ctx, REFINE, dry):
        return
    cfg, r = ctx.cfg, ctx.cfg.rl
    train = ctx.splits.train if r.max_questions is None else ctx.splits.train[: r.max_questions]
    val = ctx.splits.val if r.max_val_questions is None else ctx.splits.val[: r.max_val_questions]
    evaluations = 1 + math.ceil(r.rollouts / r.val_every) if val and r.val_every > 0 else 0
    n_train, n_val = r.rollouts * r.rollout_batch_size, evaluations * len(val)
    rationale = dry.placeholder_text(cfg.teacher.max_new_tokens)
    mix = RewardMix.from_config(cfg.reward)
    answer = GenerationParams(cfg.evaluation.answer_max_new_tokens)
    if "task" in mix.active:
        dry.estimate(_guided(ctx, train, rationale), n_train, answer)
    dry.estimate(_guided(ctx, val, rationale), n_val, answer)
    if _judged(cfg, mix.active):
        judge = GenerationParams(int(cfg.reward.get("judge_max_new_tokens", 64)))
        dry.estimate(_judge_prompts(cfg, train, rationale), n_train, judge)
        dry.estimate(_judge_prompts(cfg, val, rationale), n_val, judge)
    dry.count().notes.append(
        f"estimate: {r.rollouts} rollouts x {r.rollout_batch_size} rationales, "
        f"{evaluations} val evaluations x {len(val)} questions"
    )


def _plan_evaluate(ctx: RunContext, dry: DryRunLM) -> None:
    """The methods that use the large LM alone run their own code (exact); those guided by a
    student count test questions x samples (estimate: the student's rationales are unknown)."""
    cfg, e, test = ctx.cfg, ctx.cfg.evaluation, ctx.splits.test
    rationale = dry.placeholder_text(cfg.teacher.max_new_tokens)
    answer = GenerationParams(e.answer_max_new_tokens)
    count = dry.count()
    for name in e.methods:
        method = M.METHODS[name]
        if not method.uses_large_lm:
            continue
        out = ctx.run.eval
        fp = method_fingerprint(cfg, ctx.run, name)
        if not cfg.force and out.method_fingerprint(name) == fp and out.predictions(name).exists():
            count.notes.append(f"{name} reused")
        elif method.student is None:
            method.predict(_method_context(ctx, method), test, None)
        else:
            k = int(e.self_consistency.k) if method.samples else 1
            dry.estimate(_guided(ctx, test, rationale), len(test) * k, answer)
            count.notes.append(f"{name}: estimate ({len(test)} questions x {k})")
    if e.get("rationale_quality", True) and _judged(cfg, ASPECT_NAMES):
        judge = GenerationParams(int(cfg.reward.get("judge_max_new_tokens", 64)))
        for source in (s for s in QUALITY_SOURCES if s in e.methods):
            dry.estimate(_judge_prompts(cfg, test, rationale), len(test), judge)
            count.notes.append(f"{source} rationale quality: judge estimate")


PLANNERS = {
    "teacher": _plan_teacher,
    "distill": _plan_distill,
    "refine": _plan_refine,
    "evaluate": _plan_evaluate,
}


def _reused(ctx: RunContext, stage: Stage, dry: DryRunLM) -> bool:
    """Whether the run would reuse the stage's finished artifact (as `run_stage` decides)."""
    cfg = ctx.cfg
    if cfg.force:
        return False
    fp = stage.fingerprint(cfg)
    found = [ctx.run.stage(stage.name)]
    store = cfg.paths.get("artifact_dir")
    if store and stage.shared and cfg.get("share_artifacts", True):
        found.append(StageDir(Path(store) / stage.name / fp))
    for out in found:
        if out.done and out.fingerprint == fp:
            dry.count().notes.append(f"reuses {out.path}")
            return True
    return False


def _guided(ctx: RunContext, examples: list, rationale: str) -> list[str]:
    return [ctx.prompts.guided_prompt(x, rationale) for x in examples[:SAMPLE]]


def _judged(cfg: DictConfig, names) -> bool:
    return cfg.reward.get("scorer", "auto") == "judge" and any(a in names for a in ASPECT_NAMES)


def _judge_prompts(cfg: DictConfig, examples: list, rationale: str) -> list[str]:
    chars = cfg.reward.get("judge_max_context_chars")
    return [build_judge_prompt(x, rationale, chars) for x in examples[:SAMPLE]]


def _method_context(ctx: RunContext, method: M.Method) -> M.MethodContext:
    """What `evaluate` gives a method that needs no student; fields added to MethodContext for
    student methods are left at None."""
    e = ctx.cfg.evaluation
    known = {
        "large_lm": ctx.large_lm,
        "prompts": ctx.prompts,
        "settings": {
            k: OmegaConf.to_container(e[k]) if isinstance(e[k], DictConfig) else e[k]
            for k in method.settings
        },
        "objective": OBJECTIVES[ctx.cfg.distill.objective],
        "seed": ctx.cfg.seed,
        "batch_size": e.student_batch_size,
    }
    names = [f.name for f in dataclasses.fields(M.MethodContext)]
    return M.MethodContext(**{n: known.get(n) for n in names})


@contextlib.contextmanager
def _key_if_missing(cfg: DictConfig) -> Iterator[str]:
    """An API backend refuses to be built without its key; a plan sends nothing, so it builds it
    with a stand-in (never stored) and says that the run will need the real one."""
    try:
        env = getattr(get_class(cfg.large_lm._target_), "api_key_env", "")
    except Exception:  # reported by `build` with its own line
        env = ""
    missing = bool(env) and not os.environ.get(env, "").strip()
    if missing:
        os.environ[env] = PLAN_KEY
    try:
        yield env if missing else ""
    finally:
        if missing:
            os.environ.pop(env, None)


# -- the report ------------------------------------------------------------------------------------

ROW_KEYS = (
    "requests",
    "cache_hits",
    "estimated_requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def _row(c: StageCount) -> dict:
    return {
        **{k: getattr(c, k) for k in ROW_KEYS},
        "output_at_most": c.output_at_most,
        "cost_usd": c.cost_usd,
        "worst_cost_usd": c.worst_cost_usd,
        "batches": c.batches,
        "batch_discount": c.discount,
        "notes": list(c.notes),
    }


def _total(counts: dict[str, StageCount]) -> dict:
    rows = [_row(c) for c in counts.values()]
    total = {k: sum(r[k] for r in rows) for k in ROW_KEYS}
    for k in ("cost_usd", "worst_cost_usd"):
        values = [r[k] for r in rows if r[k] is not None]
        total[k] = sum(values) if values else None
    total["output_at_most"] = any(r["output_at_most"] for r in rows)
    return total


def format_plan(report: dict) -> str:
    """The plan as printed: one row per stage, the total, then how the numbers were made."""
    head = ("stage", "send", "cached", "input tok", "output tok", "prompt cache r/w", "cost USD")
    rows = [head]
    for name, r in [*report["stages"].items(), ("total", report["total"])]:
        mark = "~" if r["estimated_requests"] else ""
        out = f"{'<=' if r['output_at_most'] else ''}{r['output_tokens']:,}"
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:,.2f}"
        if r.get("batches"):
            cost += f" (batch x{r['batch_discount']:g})"
        rows.append(
            (
                name,
                f"{mark}{r['requests']:,}",
                f"{r['cache_hits']:,}",
                f"{mark}{r['input_tokens']:,}",
                f"{mark}{out}",
                f"{r['cache_read_tokens']:,} / {r['cache_write_tokens']:,}",
                cost,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    n = ", ".join(f"{k} {v:,}" for k, v in report["n"].items())
    title = (
        f"plan: {report['large_lm']} on {report['dataset']} ({n}); nothing sent, nothing written"
    )
    notes = [
        f"  {name}: {'; '.join(r['notes'])}" for name, r in report["stages"].items() if r["notes"]
    ]
    tail = ["~ counted from settings (depends on training): an upper bound", *report["notes"]]
    total = report["total"]
    if total["worst_cost_usd"] is not None:
        tail.append(
            f"worst case (every prompt at the spend cap's bound, every reply at max_new_tokens): "
            f"${total['worst_cost_usd']:,.2f}; large_lm.max_cost_usd stops a run before it passes"
        )
    elif not report["priced"]:
        tail.append(f"no cost: {report['large_lm']} has no prices (large_lm.prices)")
    return "\n".join([title, *lines, *notes, *(f"- {t}" for t in tail)])


# -- the command -----------------------------------------------------------------------------------

# paths.run_dir of a plan without hydra.run.dir: a new run directory, which holds nothing to reuse
# (never created: nothing is written to it).
NEW_RUN_DIR = "${paths.output_dir}/runs/.planned-new-run"


def main(argv: list[str], config_dir: str, fail, user_errors: tuple) -> None:
    """`lmgcot OVERRIDES plan=true`: compose the config as the run would (Hydra's compose API: no
    run directory), print the plan; a bad value is one `lmgcot: error:` line and exit 2."""
    from hydra import compose, initialize_config_dir

    # The CLI's config folder and one-line error printer are passed in: this layer is below it.
    CONFIG_DIR, USER_ERRORS = config_dir, user_errors  # noqa: N806
    from lmgcot.config.threads import use_threads

    run_dir = None
    overrides = []
    for arg in argv:
        if arg in ("-m", "--multirun"):
            fail(ConfigError("plan=true plans one run: drop -m (plan each job's overrides)"))
        if arg.startswith("hydra.run.dir="):
            run_dir = arg.partition("=")[2]
        elif not arg.startswith(("hydra.", "hydra/", "+hydra")):  # how Hydra runs it: no calls
            overrides.append(arg)
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                "config", overrides=[*overrides, f"paths.run_dir={run_dir or NEW_RUN_DIR}"]
            )
        use_threads(cfg.threads)
        report = plan(cfg)
    except USER_ERRORS as err:
        fail(err)
    except Exception as err:  # Hydra's and OmegaConf's composition errors
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(err, (HydraException, OmegaConfBaseException)):
            fail(err)
        raise
    print(format_plan(report))
    sys.stdout.flush()
