"""The LM-Guided CoT pipeline: teacher -> distill -> refine -> evaluate, driven by one Hydra config.

`run(cfg)` is what the `lmgcot` command calls and what tests call directly. Every stage leaves its
artifacts in the run directory with a fingerprint of the config it read (`stage.py`); a later
invocation on the same directory (`hydra.run.dir=...`) reuses what still matches and redoes what
does not, so a killed run resumes where it stopped and `stages=[evaluate]` re-evaluates a trained
student. The stages are in `stages/`, the objects they build in `builders.py`.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import huggingface_hub
import pytorch_lightning as pl
import transformers
from omegaconf import DictConfig, OmegaConf

from lmgcot.artifacts import RunDir
from lmgcot.config.validate import check
from lmgcot.data.base import QADataset
from lmgcot.eval.methods import METHODS
from lmgcot.llm.base import LargeLM, stage_summary
from lmgcot.llm.cache_shards import open_call_cache
from lmgcot.pipeline.builders import build, build_loggers
from lmgcot.pipeline.checks import check_splits
from lmgcot.pipeline.context import RunContext
from lmgcot.pipeline.output import finish_wandb, format_results_table, log_results
from lmgcot.pipeline.stage import run_stage
from lmgcot.pipeline.stages import STAGES
from lmgcot.pipeline.stages.evaluate import method_fingerprint
from lmgcot.pipeline.stages.quality import quality_fingerprint
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.judge import build_judge_prompt
from lmgcot.utils.io import write_json
from lmgcot.utils.secrets import redact_logs, redact_yaml_files
from lmgcot.utils.sharedfs import check_shared_paths, fs_type

__all__ = ["run"]

log = logging.getLogger("lmgcot")
# Lightning's start-up tips and transformers' per-file progress bars drown the run's own progress.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def run(cfg: DictConfig) -> dict:
    """Run the configured stages and return the results dict also written to results.json."""
    _quiet_libraries()
    # Before anything can fail: a key that reached the config must not stay in the saved copy.
    redact_logs()
    redact_yaml_files(Path(cfg.paths.run_dir) / ".hydra")
    stages = check(cfg)
    ctx = _context(cfg, stages)
    log.info("run directory: %s", ctx.run.root)
    try:
        for name in stages:
            t0 = time.perf_counter()
            ctx.large_lm.set_stage(name)
            stage = STAGES[name]
            summary = run_stage(
                stage, ctx, ctx.run.eval if name == "evaluate" else ctx.run.stage(name)
            )
            if stage.cached:
                ctx.summaries[name] = summary
            ctx.timings[name] = round(time.perf_counter() - t0, 2)
            counts = ctx.large_lm.usage.by_stage.get(name)
            if counts and (counts["calls"] or counts["cache_hits"]):
                log.info(stage_summary(name, counts))
        results = ctx.results(_expected(ctx))
        write_json(ctx.run.results, results)
        log_results(ctx.loggers, results, ctx.run.results)
        if cfg.get("print_results", True):
            print(format_results_table(results))
            print(f"run directory: {ctx.run.root}")
        return results
    finally:
        ctx.large_lm.close()
        finish_wandb(ctx.loggers)


def _quiet_libraries() -> None:
    # Lightning's own use of a deprecated torch API: noise a user can do nothing about.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The refiner keeps its frozen reference (and, by design, dropout) in eval mode.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()


def _context(cfg: DictConfig, stages: list[str]) -> RunContext:
    """Data, prompts, large LM and loggers, each refused with one line before any work."""
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset: QADataset = build(cfg.dataset, "dataset")
    splits = dataset.load_splits()
    check_splits(splits, stages, dataset.name, cfg.dataset)
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    cache = _call_cache(cfg)
    large_lm: LargeLM = build(cfg.large_lm, "large_lm", cache=cache)
    # Refuse a dataset the large LM cannot read before any work is done.
    probe = (splits.test or splits.train or splits.val)[0]
    large_lm.check_prompt(prompts.standard_prompt(probe))
    blind = [n for n in ("standard", "cot", "guided") if "{context}" not in getattr(prompts, n)]
    if probe.context and blind:
        log.warning(
            "prompt.%s: no {context} in the template, but dataset=%s has contexts: the large LM "
            "will not see them",
            "/".join(blind),
            dataset.name,
        )
    scores_aspects = "refine" in stages or (
        "evaluate" in stages and cfg.evaluation.get("rationale_quality", True)
    )
    if cfg.reward.get("scorer", "auto") == "judge" and scores_aspects:
        large_lm.check_prompt(build_judge_prompt(probe, "A rationale."))
    loggers = build_loggers(cfg)
    return RunContext(cfg, RunDir(run_dir), dataset.name, splits, prompts, large_lm, loggers)


def _call_cache(cfg: DictConfig):
    """The call cache in the mode its file system needs; a file system where neither the cache nor
    the artifact store can be kept safe is refused in one line before any paid work."""
    setting = cfg.paths.get("shared_fs", "auto")
    check_shared_paths(
        {
            "paths.cache_dir": cfg.paths.cache_dir,
            "paths.artifact_dir": cfg.paths.get("artifact_dir"),
        },
        setting,
    )
    cache = open_call_cache(Path(cfg.paths.cache_dir) / "llm_calls.sqlite", setting)
    if cache.mode == "network":
        log.info(
            "call cache on a network file system (%s): one file per job in %s, merged by "
            "`python -m lmgcot.llm.cache_shards merge %s` (paths.shared_fs=%s)",
            fs_type(cfg.paths.cache_dir),
            cache.shards,
            cfg.paths.cache_dir,
            setting,
        )
    return cache


def _expected(ctx: RunContext) -> dict[str, dict]:
    """The fingerprint each method and quality row would have under this run's config: rows of an
    earlier results.json are kept only where theirs match."""
    methods = {m: method_fingerprint(ctx.cfg, ctx.run, m) for m in METHODS}
    distill_fp = ctx.run.distill.fingerprint
    quality = {m: quality_fingerprint(ctx.cfg, fp, distill_fp) for m, fp in methods.items()}
    return {"methods": methods, "rationale_quality": quality}
