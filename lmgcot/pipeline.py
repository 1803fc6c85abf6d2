"""The LM-Guided CoT pipeline: teacher -> distill -> refine -> evaluate, driven by one Hydra config.

`run(cfg)` is what the `lmgcot` command calls and what tests call directly. Every stage leaves its
artifacts in the run directory with a fingerprint of the config it used; a later invocation on the
same directory (`hydra.run.dir=...`) reuses what still matches and redoes what does not, so a killed
run resumes where it stopped and `stages=[evaluate]` re-evaluates a trained student.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import huggingface_hub
import pytorch_lightning as pl
import torch
import transformers
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lmgcot.data.base import QADataset
from lmgcot.data.example import Splits
from lmgcot.distill.datamodule import RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.distill.teacher import (
    PROMPTINGS,
    TeacherRationale,
    few_shot_exemplars,
    generate_rationales,
    pair_count,
    teacher_stats,
    training_pairs,
)
from lmgcot.errors import ConfigError, LmgcotError
from lmgcot.eval import methods as M
from lmgcot.llm.base import LargeLM, stage_summary
from lmgcot.llm.cache import CallCache
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.judge import ASPECT_NAMES, build_judge_prompt
from lmgcot.rewards.scorer import RewardScorer, mean_scores
from lmgcot.rewards.wellformed import vocabulary_of
from lmgcot.rl.kl import KL_ESTIMATORS
from lmgcot.rl.module import RL_CHOICES, RationaleRefiner
from lmgcot.rl.policy_gradient import GROUP_BASELINES
from lmgcot.rl.selection import select_policy
from lmgcot.student.generate import generate_rationales as student_rationales
from lmgcot.student.generate import score_rationales
from lmgcot.student.models import TOKENIZERS, Student, build_student
from lmgcot.student.objectives import (
    EXPLAIN,
    OBJECTIVES,
    PREDICT,
    WRITES_RATIONALES,
    answer_task,
    explain_task,
    rationale_of,
)
from lmgcot.utils.io import (
    append_jsonl,
    read_json,
    read_jsonl,
    replace_dir,
    write_json,
    write_jsonl,
)
from lmgcot.utils.secrets import redact, redact_logs, redact_yaml_files
from lmgcot.utils.store import fetch, file_lock, publish

log = logging.getLogger("lmgcot")
# Lightning's start-up tips and transformers' per-file progress bars drown the run's own progress.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)

STAGES = ("teacher", "distill", "refine", "evaluate")
METHODS = M.METHODS
# Rationale sources scored for rationale_quality: the method whose (first) rationales are scored.
QUALITY_SOURCES = ("cot", "lm_guided_kd", "lm_guided_rl")
# eval/quality/<source>.jsonl: each test question's aspect scores for that rationale source.
QUALITY_DIR = "quality"
RESULTS_FILE = "results.json"
DIVERSE_TEMPERATURE = 0.7  # teacher.temperature=null with num_samples > 1 (Fine-tune-CoT's value)
SAMPLES_LOG = "rollout_samples.jsonl"  # refine: periodic sample rationales with their rewards
JUDGE_FAILURES = "judge_failures.jsonl"  # refine: judge replies that could not be parsed


def run(cfg: DictConfig) -> dict:
    """Run the configured stages and return the results dict also written to results.json."""
    # Lightning's own use of a deprecated torch API: noise a user can do nothing about.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # The refiner keeps its frozen reference (and, by design, dropout) in eval mode.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    # Before anything can fail: a key that reached the config must not stay in the saved copy.
    redact_logs()
    redact_yaml_files(Path(cfg.paths.run_dir) / ".hydra")
    stages = _check_stages(cfg)
    _check_settings(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dataset: QADataset = build(cfg.dataset, "dataset")
    splits = dataset.load_splits()
    _check_splits(splits, stages, dataset.name)
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt), context_mode=dataset.context)
    cache = CallCache(Path(cfg.paths.cache_dir) / "llm_calls.sqlite")
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
    ctx = RunContext(cfg, run_dir, dataset.name, splits, prompts, large_lm, loggers)
    log.info("run directory: %s", run_dir)
    try:
        for stage in stages:
            t0 = time.perf_counter()
            large_lm.set_stage(stage)
            _run_stage(ctx, stage)
            ctx.timings[stage] = round(time.perf_counter() - t0, 2)
            counts = large_lm.usage.by_stage.get(stage)
            if counts and (counts["calls"] or counts["cache_hits"]):
                log.info(stage_summary(stage, counts))
        results = ctx.results()
        write_json(run_dir / RESULTS_FILE, results)
        for lg in loggers:
            lg.log_metrics(_flat_metrics(results))
            lg.save()
            if type(lg).__name__ == "WandbLogger":
                # The whole results file travels with the W&B run.
                lg.experiment.save(
                    str(run_dir / RESULTS_FILE), base_path=str(run_dir), policy="now"
                )
        if cfg.get("print_results", True):
            print(format_results_table(results))
            print(f"run directory: {run_dir}")
        return results
    finally:
        large_lm.close()
        _finish_wandb(loggers)


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    dataset_name: str
    splits: Splits
    prompts: PromptTemplates
    large_lm: LargeLM
    loggers: list
    timings: dict[str, float] = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)
    refine: dict = field(default_factory=dict)
    methods: dict[str, dict] = field(default_factory=dict)
    quality: dict[str, dict] = field(default_factory=dict)

    def results(self) -> dict:
        previous = self._previous_results()
        methods = {**previous.get("methods", {}), **self.methods}
        return {
            "methods": {m: methods[m] for m in METHODS if m in methods},
            "rationale_quality": {
                **previous.get("rationale_quality", {}),
                **self.quality,
            },
            "llm": self.large_lm.usage.as_dict(),
            "teacher": self.teacher or previous.get("teacher", {}),
            "distill": self.distill or previous.get("distill", {}),
            "refine": self.refine or previous.get("refine", {}),
            "timings_s": {**previous.get("timings_s", {}), **self.timings},
            "setup": {
                "dataset": self.dataset_name,
                "student": self.cfg.student.get("name"),
                "objective": self.cfg.distill.get("objective", "rationale"),
                "large_lm": f"{self.large_lm.backend}:{self.large_lm.model}",
                "seed": int(self.cfg.seed),
                "n": {split: len(xs) for split, xs in self.splits.items()},
            },
            "run_dir": str(self.run_dir),
        }

    def _previous_results(self) -> dict:
        path = self.run_dir / RESULTS_FILE
        return read_json(path) if path.exists() else {}


# -- stages ------------------------------------------------------------------------------------


def stage_teacher(ctx: RunContext) -> None:
    """CoT rationales from the large LM for the train and val splits (train -> fit, val -> val/loss)."""
    t = ctx.cfg.teacher
    out_dir = ctx.run_dir / "teacher"
    fp = _teacher_fingerprint(ctx.cfg)
    if (done := _reused(out_dir, fp, ctx.cfg.force, "stats.json")) is not None:
        ctx.teacher = done
        return
    stats = {}
    exemplars = _exemplars(ctx)
    shot_ids = {x.id for x in exemplars}
    for split, examples in (("train", ctx.splits.train), ("val", ctx.splits.val)):
        # An exemplar's own question would be answered from the prompt: not a fair sample.
        examples = [e for e in examples if e.id not in shot_ids]
        rationales = generate_rationales(
            examples,
            ctx.large_lm,
            ctx.prompts,
            num_samples=int(t.num_samples),
            temperature=teacher_temperature(t),
            top_p=float(t.top_p),
            max_new_tokens=int(t.max_new_tokens),
            strip_answer=bool(t.strip_answer),
            prompting=str(t.prompting),
            exemplars=exemplars,
            answer_max_new_tokens=int(t.answer_max_new_tokens),
        )
        stats[split] = teacher_stats(rationales, bool(t.filter_correct))
        write_jsonl(out_dir / f"{split}.jsonl", (r.to_dict() for r in rationales))
        log.info(
            "teacher: %s: %d rationales, %.1f%% correct, %d kept (%d of %d questions)",
            split,
            len(rationales),
            100 * stats[split]["correct_share"],
            stats[split]["kept"],
            stats[split]["questions_kept"],
            stats[split]["questions"],
        )
    if exemplars:
        stats["exemplars"] = [x.id for x in exemplars]
    write_json(out_dir / "stats.json", stats)
    _mark_done(out_dir, fp)
    ctx.teacher = stats


def stage_distill(ctx: RunContext) -> None:
    """Fine-tune the student on the kept teacher rationales; export it to distill/student."""
    cfg = ctx.cfg
    out_dir = ctx.run_dir / "distill"
    fp = _distill_fingerprint(cfg)
    if (done := _reused(out_dir, fp, cfg.force, "summary.json")) is not None:
        ctx.distill = done
        return
    d = cfg.distill
    objective = str(d.objective)
    # Vanilla fine-tuning (objective=answer) learns gold answers: it needs no teacher.
    if objective != "answer" and not _is_done(ctx.run_dir / "teacher"):
        raise ConfigError(
            f"distill needs teacher rationales in {ctx.run_dir / 'teacher'}: add the teacher stage "
            "or point hydra.run.dir at a run that has them"
        )
    ckpt_dir = out_dir / "checkpoints"
    resume = ckpt_dir / "last.ckpt"
    if _meta(out_dir).get("fingerprint") != fp and out_dir.exists():
        # Checkpoints from another configuration cannot be resumed.
        for old in ckpt_dir.glob("*.ckpt"):
            old.unlink()
    _write_meta(out_dir, {"fingerprint": fp, "done": False})
    t = cfg.teacher
    pairs = {
        split: training_pairs(
            examples,
            _teacher_rationales(ctx, split) if objective != "answer" else [],
            ctx.prompts,
            bool(t.filter_correct),
            objective=objective,
        )
        for split, examples in (("train", ctx.splits.train), ("val", ctx.splits.val))
    }
    # A from-scratch tokenizer (student.tokenizer=bpe) learns its vocabulary from the training pairs.
    corpus = [text for pair in _all_pairs(pairs["train"]) for text in pair]
    student = _build_student(cfg, corpus=corpus)
    datamodule = RationaleDataModule(
        student.tokenizer,
        pairs["train"],
        pairs["val"],
        student.max_source_length,
        student.max_target_length,
        batch_size=int(d.batch_size),
        eval_batch_size=int(d.eval_batch_size),
        group_by_length=bool(d.group_by_length),
        num_workers=int(d.num_workers),
        seed=int(cfg.seed),
    )
    alpha = float(d.alpha)
    module = RationaleDistiller(
        student.model,
        optimizer=instantiate(d.optimizer),
        scheduler=instantiate(d.scheduler) if d.get("scheduler") else None,
        task_weights={PREDICT: alpha, EXPLAIN: 1.0 - alpha} if objective == "multitask" else None,
    )
    has_val = pair_count(pairs["val"]) > 0
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/loss" if has_val else None,
        mode="min",
        save_last=True,
        save_top_k=1,
    )
    trainer: pl.Trainer = build(
        cfg.trainer,
        "trainer",
        logger=ctx.loggers or False,
        callbacks=[checkpoint],
        default_root_dir=str(out_dir),
        limit_val_batches=1.0 if has_val else 0,
        num_sanity_val_steps=0,
        # The datamodule shards its own length-grouped batches across processes.
        use_distributed_sampler=False,
    )
    t0 = time.perf_counter()
    if resume.exists():
        log.info("distill: resumed from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume.exists() else None)
    best = checkpoint.best_model_path or checkpoint.last_model_path
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    tmp = out_dir / "student.tmp"
    student.model.save_pretrained(tmp)
    student.tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir / "student")
    steps, epochs, best_loss = (
        trainer.global_step,
        trainer.current_epoch,
        checkpoint.best_model_score,
    )
    if not steps and resume.exists():
        # A spawning strategy trained in worker processes: their progress is in the checkpoint.
        saved = torch.load(resume, map_location="cpu", weights_only=False)
        steps, epochs = saved.get("global_step", 0), saved.get("epoch", 0)
        best_loss = next(
            (c.get("best_model_score") for c in saved.get("callbacks", {}).values()), None
        )
    summary = {
        "objective": objective,
        "train_pairs": pair_count(pairs["train"]),
        "val_pairs": pair_count(pairs["val"]),
        "steps": int(steps),
        "epochs": int(epochs),
        "best_val_loss": _float(best_loss),
        "seconds": round(time.perf_counter() - t0, 2),
        "parameters": sum(p.numel() for p in student.model.parameters()),
    }
    write_json(out_dir / "summary.json", summary)
    _mark_done(out_dir, fp)
    ctx.distill = summary


def teacher_temperature(t: DictConfig) -> float:
    """teacher.temperature, where null means greedy for one sample and Fine-tune-CoT's 0.7 for
    diverse reasoning (num_samples > 1)."""
    if t.get("temperature") is None:
        return DIVERSE_TEMPERATURE if int(t.num_samples) > 1 else 0.0
    return float(t.temperature)


def _reward_scorer(ctx: RunContext) -> RewardScorer:
    """The `reward` config's scorer. Its well-formedness gate knows the words of the teacher's
    train rationales (when the run has them), so the connectives of real rationales count as
    words even where a question's context lacks them."""
    teacher = ctx.run_dir / "teacher" / "train.jsonl"
    vocabulary = (
        vocabulary_of(r.rationale for r in _teacher_rationales(ctx, "train"))
        if teacher.exists()
        else None
    )
    return RewardScorer.from_config(
        ctx.cfg.reward,
        ctx.large_lm,
        ctx.prompts,
        answer_max_new_tokens=int(ctx.cfg.evaluation.answer_max_new_tokens),
        vocabulary=vocabulary,
    )


def _teacher_rationales(ctx: RunContext, split: str) -> list[TeacherRationale]:
    return [TeacherRationale(**r) for r in read_jsonl(ctx.run_dir / "teacher" / f"{split}.jsonl")]


def _all_pairs(pairs: list | dict) -> list[tuple[str, str]]:
    return [p for ps in pairs.values() for p in ps] if isinstance(pairs, dict) else pairs


def _exemplars(ctx: RunContext) -> list:
    """Few-shot CoT exemplars (teacher.prompting=few_shot_cot): training questions with a gold
    rationale; one clear line when the dataset has none."""
    t = ctx.cfg.teacher
    if t.prompting != "few_shot_cot":
        return []
    shots = few_shot_exemplars(ctx.splits.train, int(t.few_shot_k), int(ctx.cfg.seed))
    if not shots:
        raise ConfigError(
            f"teacher.prompting=few_shot_cot: dataset={ctx.dataset_name} has no training question "
            "with a gold rationale to use as an exemplar; use teacher.prompting=zero_shot_cot"
        )
    return shots


def stage_refine(ctx: RunContext) -> None:
    """PPO on the distilled student against the reward mix; export it to refine/student."""
    cfg = ctx.cfg
    r = cfg.rl
    out_dir = ctx.run_dir / "refine"
    fp = _refine_fingerprint(cfg)
    if (done := _reused(out_dir, fp, cfg.force, "summary.json")) is not None:
        ctx.refine = done
        return
    # Fails with one line before any work when there is no distilled student.
    student = _load_student(ctx, "distill")
    ckpt_dir = out_dir / "checkpoints"
    resume = ckpt_dir / "last.ckpt"
    meta = _meta(out_dir)
    if meta.get("fingerprint") != fp:
        # Checkpoints and logs from another configuration cannot be resumed.
        for old in [*ckpt_dir.glob("*.ckpt"), out_dir / SAMPLES_LOG, out_dir / JUDGE_FAILURES]:
            old.unlink(missing_ok=True)
        meta = {"fingerprint": fp, "done": False}
        _write_meta(out_dir, meta)
    scorer = _reward_scorer(ctx)
    log.info("refine: reward %s (%s scorer)", scorer.mix, scorer.scorer)
    pools = {
        "train": _cap(ctx.splits.train, r.max_questions),
        "val": _cap(ctx.splits.val, r.max_val_questions),
    }
    k = int(r.samples_per_question)

    def collate(indices: list[int], split: str) -> dict:
        # One entry per question: the refiner repeats them for the question's samples.
        examples = [pools[split][i] for i in indices]
        return {
            "split": split,
            "index": list(indices),
            "inputs": _student_inputs(ctx, examples),
            "questions": [x.question for x in examples],
        }

    def reward_fn(batch: dict, rationales: list[str], token_logprobs: list[list[float]]) -> dict:
        examples = [pools[batch["split"]][i] for i in batch["index"]]
        logprobs = token_logprobs if scorer.needs_token_logprobs else None
        totals, comps, failures = scorer(examples, rationales, logprobs)
        if failures:
            log.warning(
                "refine: %d judge replies could not be parsed (scored 0; see %s), e.g. %s: %s",
                len(failures),
                out_dir / JUDGE_FAILURES,
                failures[0]["id"],
                failures[0]["problem"],
            )
            append_jsonl(out_dir / JUDGE_FAILURES, failures)
        return {**comps, "total": totals}

    def sample_logger(rollout: int, rows: list[dict]) -> None:
        append_jsonl(out_dir / SAMPLES_LOG, ({"rollout": rollout, **row} for row in rows))
        for lg in ctx.loggers:
            if type(lg).__name__ == "WandbLogger":
                columns = ["rollout", *rows[0]]
                data = [[rollout, *row.values()] for row in rows]
                lg.log_table(key="rl/samples", columns=columns, data=data)

    seed = int(cfg.seed)
    batch_questions = int(r.rollout_batch_size) // k
    train_loader = DataLoader(
        list(range(len(pools["train"]))),
        batch_size=batch_questions,
        shuffle=True,
        drop_last=len(pools["train"]) >= batch_questions,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=functools.partial(collate, split="train"),
    )
    has_val = bool(pools["val"]) and int(r.val_every) > 0
    val_loader = DataLoader(
        list(range(len(pools["val"]))),
        batch_size=int(r.val_batch_size),
        collate_fn=functools.partial(collate, split="val"),
    )
    module = RationaleRefiner.from_config(
        r,
        student.model,
        student.tokenizer,
        reward_fn,
        optimizer=instantiate(r.optimizer),
        max_source_length=student.max_source_length,
        weighted_components=scorer.mix.active,
        sample_logger=sample_logger,
    )
    steps_per_rollout = module.steps_per_rollout(batch_questions)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/reward" if has_val else None,
        mode="max",
        save_last=True,
        save_top_k=1,
        every_n_train_steps=None if has_val else steps_per_rollout * max(1, int(r.val_every)),
    )
    trainer: pl.Trainer = build(
        _single_device(cfg.trainer),
        "trainer",
        logger=ctx.loggers or False,
        callbacks=[checkpoint],
        default_root_dir=str(out_dir),
        # Under manual optimisation Lightning counts optimiser steps, several per rollout.
        max_steps=int(r.rollouts) * steps_per_rollout,
        max_epochs=-1,
        val_check_interval=max(1, int(r.val_every)),
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if has_val else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=None,  # the refiner clips its own gradients
        log_every_n_steps=1,
    )
    t0 = time.perf_counter()
    if resume.exists():
        log.info("refine: resumed from %s", resume)
    elif has_val:
        scores = trainer.validate(module, dataloaders=val_loader, verbose=False)[0]
        meta = {**meta, "val_reward_before": _float(scores["val/reward"])}
        _write_meta(out_dir, meta)
    before = meta.get("val_reward_before")
    trainer.fit(
        module,
        train_dataloaders=train_loader,
        val_dataloaders=val_loader if has_val else None,
        ckpt_path=str(resume) if resume.exists() else None,
    )
    best = _float(checkpoint.best_model_score) if has_val else None
    selected, selection = "rl", None
    if has_val and bool(r.keep_best):
        alpha = r.get("keep_best_alpha")
        state = None
        if checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
        choice = select_policy(
            module.val_history,
            None if alpha is None else float(alpha),
            best_rollouts=None if state is None else int(state["rollouts_done"]),
        )
        selection = choice.summary()
        selected = choice.selected
        if selected == "rl":
            module.load_state_dict(state["state_dict"])
        else:
            log.warning(
                "refine: exporting the distilled student unchanged (rl.keep_best=true): %s",
                choice.reason,
            )
    tmp = out_dir / "student.tmp"
    model = module.ref_model if selected == "distilled" else module.model
    model.save_pretrained(tmp)
    student.tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir / "student")
    summary = {
        "rollouts": int(module.rollouts_done),
        "optimizer_steps": int(trainer.global_step),
        "questions": len(pools["train"]),
        "val_questions": len(pools["val"]) if has_val else 0,
        "val_reward_before": before,
        "val_reward_best": best,
        "selected": selected,
        "selection": selection,
        "reward": dict(scorer.mix.normalized),
        "scorer": scorer.scorer,
        "kl_coef": round(float(module.kl_controller.value), 6),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(out_dir / "summary.json", summary)
    _mark_done(out_dir, fp)
    ctx.refine = summary
    log.info(
        "refine: val reward %s -> best %s (%s exported)",
        _fmt(before),
        _fmt(best),
        selected,
    )


def stage_evaluate(ctx: RunContext) -> None:
    """Every configured method on the test split; per-method predictions go to eval/<method>.jsonl."""
    cfg = ctx.cfg
    e = cfg.evaluation
    wanted = list(e.methods)
    examples = ctx.splits.test
    eval_dir = ctx.run_dir / "eval"
    base_fp = fingerprint(cfg, "dataset", "large_lm", "prompt", "seed")
    student_fps = {
        "distill": _meta(ctx.run_dir / "distill").get("fingerprint", ""),
        "refine": _meta(ctx.run_dir / "refine").get("fingerprint", ""),
    }
    expected = {"distill": _distill_fingerprint(cfg), "refine": _refine_fingerprint(cfg)}
    for stage, fp in student_fps.items():
        used = any(_student_stage(m) == stage for m in wanted)
        if used and fp and fp != expected[stage]:
            log.warning(
                "evaluate: the student in %s was trained under another config; evaluating it "
                "as it is",
                ctx.run_dir / stage,
            )
    students: dict[str, Student] = {}
    samples = []
    preds_by_method: dict[str, list[M.Prediction]] = {}
    for method in wanted:
        stage = _student_stage(method)
        fp = _hash(base_fp, method, student_fps.get(stage, ""), _method_settings(method, e))
        path = eval_dir / f"{method}.jsonl"
        if _meta(eval_dir).get(method) == fp and path.exists() and not cfg.force:
            preds = [M.Prediction(**r) for r in read_jsonl(path)]
            log.info("evaluate: %s: reusing %s", method, path)
        else:
            if stage and stage not in students:
                students[stage] = _load_student(ctx, stage)
            preds = _predict(method, examples, ctx, students.get(stage or ""))
            write_jsonl(path, (p.to_dict() for p in preds))
            _write_meta(eval_dir, {**_meta(eval_dir), method: fp})
        preds_by_method[method] = preds
        ctx.methods[method] = M.summarize(preds, len(examples))
        log.info(
            "evaluate: %s: EM %.3f F1 %.3f",
            method,
            ctx.methods[method]["em"],
            ctx.methods[method]["f1"],
        )
        for p in preds[: int(e.num_examples_saved)]:
            samples.append({"method": method, **p.to_dict()})
    write_jsonl(ctx.run_dir / "samples.jsonl", samples)
    if e.get("rationale_quality", True):
        ctx.quality = _rationale_quality(ctx, preds_by_method, students)


def _student_stage(method: str) -> str | None:
    """The stage whose student a method uses (None: no student)."""
    if method.startswith("lm_guided_kd") or method in M.STUDENT_ALONE:
        return "distill"
    if method in M.RL_METHODS:
        return "refine"
    return None


def _rationale_quality(
    ctx: RunContext, preds_by_method: dict[str, list[M.Prediction]], students: dict[str, Student]
) -> dict[str, dict[str, float]]:
    """Mean aspect scores (reward.scorer) of each rationale source evaluated in this run.

    A source's rationales are its method's (first) rationale per test question. Fluency under the
    `auto` scorer is the likelihood under the distilled student (the RL stage's reference model),
    so it is left out when no distilled student exists.
    """
    sources = [m for m in QUALITY_SOURCES if m in preds_by_method]
    if not sources:
        return {}
    scorer = _reward_scorer(ctx)
    reference: Student | None = students.get("distill")
    if reference is None and scorer.scorer == "auto" and _is_done(ctx.run_dir / "distill"):
        reference = _load_student(ctx, "distill")
    by_id = {x.id: x for x in ctx.splits.test}
    out: dict[str, dict[str, float]] = {}
    for source in sources:
        preds = [p for p in preds_by_method[source] if p.rationales and p.id in by_id]
        examples = [by_id[p.id] for p in preds]
        rationales = [p.rationales[0] for p in preds]
        logprobs = None
        if reference is not None and scorer.scorer == "auto":
            logprobs = score_rationales(reference, _student_inputs(ctx, examples), rationales)
        comps, failures = scorer.components(
            examples, rationales, names=ASPECT_NAMES, token_logprobs=logprobs
        )
        if failures:
            log.warning(
                "evaluate: %s: %d judge replies could not be parsed (left out of the means)",
                source,
                len(failures),
            )
        out[source] = {k: round(v, 6) for k, v in mean_scores(comps).items()}
        # Per question, so that sources and runs can be compared paired (lmgcot-compare).
        write_jsonl(
            ctx.run_dir / "eval" / QUALITY_DIR / f"{source}.jsonl",
            ({"id": p.id, **{k: v[i] for k, v in comps.items()}} for i, p in enumerate(preds)),
        )
        log.info(
            "evaluate: %s rationale quality: %s",
            source,
            " ".join(f"{k}={v:.3f}" for k, v in out[source].items()),
        )
    return out


STAGE_FUNCS: dict[str, Callable[[RunContext], None]] = {
    "teacher": stage_teacher,
    "distill": stage_distill,
    "refine": stage_refine,
    "evaluate": stage_evaluate,
}

# Stages whose finished artifacts go to the shared store (paths.artifact_dir), by fingerprint
# (lambdas: the fingerprint functions are defined further down).
SHARED_STAGES: dict[str, Callable[[DictConfig], str]] = {
    "teacher": lambda cfg: _teacher_fingerprint(cfg),
    "distill": lambda cfg: _distill_fingerprint(cfg),
    "refine": lambda cfg: _refine_fingerprint(cfg),
}
# A run's own resumable state, not part of the artifact.
NOT_SHARED = ("checkpoints",)


def _run_stage(ctx: RunContext, stage: str) -> None:
    """Run a stage, taking its artifact from the shared store when another run already made it,
    and putting it there when this run makes it."""
    cfg = ctx.cfg
    store = cfg.paths.get("artifact_dir")
    fp_of = SHARED_STAGES.get(stage)
    if fp_of is None or not store or cfg.force or not cfg.get("share_artifacts", True):
        STAGE_FUNCS[stage](ctx)
        return
    fp = fp_of(cfg)
    local = ctx.run_dir / stage
    if _reusable(local, fp, False):
        STAGE_FUNCS[stage](ctx)
        return
    shared = Path(store) / stage / fp
    # Jobs wanting the same artifact wait here for the one making it.
    with file_lock(shared.parent / f"{fp}.lock"):
        if _is_done(shared) and _meta(shared).get("fingerprint") == fp:
            fetch(shared, local)
            log.info("%s: reusing the shared artifact %s", stage, shared)
        STAGE_FUNCS[stage](ctx)
        if not _is_done(shared) and _reusable(local, fp, False):
            publish(local, shared, skip=NOT_SHARED)


def _method_settings(method: str, e: DictConfig) -> str:
    """The evaluation settings that change a method's predictions (its artifact fingerprint)."""
    keys = ["answer_max_new_tokens"]
    if method == "cot":
        keys.append("cot_max_new_tokens")
    elif method.endswith("_sc"):
        keys.append("self_consistency")
    return json.dumps(
        {k: OmegaConf.to_container(e[k]) if isinstance(e[k], DictConfig) else e[k] for k in keys},
        sort_keys=True,
    )


def _predict(method: str, examples, ctx: RunContext, student: Student | None) -> list[M.Prediction]:
    e = ctx.cfg.evaluation
    lm, prompts = ctx.large_lm, ctx.prompts
    if method == "standard":
        return M.answer_standard(examples, lm, prompts, int(e.answer_max_new_tokens))
    if method == "cot":
        rationales = M.large_lm_rationales(examples, lm, prompts, int(e.cot_max_new_tokens))
        return M.answer_with_rationales(
            examples, [[r] for r in rationales], lm, prompts, int(e.answer_max_new_tokens)
        )
    assert student is not None
    objective = str(ctx.cfg.distill.objective)
    answers_alone = method in M.STUDENT_ALONE
    task = answer_task(objective) if answers_alone else explain_task(objective)
    inputs = [prompts.student_input(x, task) for x in examples]
    if not method.endswith("_sc"):
        sampling: dict = {}
    else:
        sc = e.self_consistency
        sampling = {
            "num_samples": int(sc.k),
            "temperature": float(sc.temperature),
            "top_p": float(sc.top_p),
        }
    k = sampling.get("num_samples", 1)
    with tqdm(total=len(inputs), desc=f"student {method}", unit="question", mininterval=2.0) as bar:
        outputs = student_rationales(
            student,
            inputs,
            batch_size=max(1, int(e.student_batch_size) // k),
            seed=int(ctx.cfg.seed),
            progress=bar.update,
            **sampling,
        )
    if answers_alone:
        return M.student_answers(examples, outputs, objective)
    rationales = [[rationale_of(objective, o) for o in outs] for outs in outputs]
    return M.answer_with_rationales(examples, rationales, lm, prompts, int(e.answer_max_new_tokens))


def _student_inputs(ctx: RunContext, examples: list) -> list[str]:
    """The student's inputs when it writes rationales (a multitask student: "explain:")."""
    task = explain_task(str(ctx.cfg.distill.objective))
    return [ctx.prompts.student_input(x, task) for x in examples]


# -- building blocks ---------------------------------------------------------------------------


def build(node: DictConfig, group: str, **kwargs) -> Any:
    """`hydra.utils.instantiate`, with our own errors surfaced as one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, LmgcotError):
            raise cause from None
        raise ConfigError(f"{group}: {cause or err}") from err


def build_loggers(cfg: DictConfig) -> list:
    """Lightning loggers from the `logger` group; W&B is offline unless configured otherwise."""
    if not cfg.get("logger"):
        return []
    loggers = []
    for name, node in cfg.logger.items():
        if node is None:
            continue
        if name == "wandb":
            import os

            # Without this a stray WANDB_MODE=online plus a key would block on the network.
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        lg = build(node, f"logger.{name}")
        if name == "wandb":
            lg.log_hyperparams(_loggable_config(cfg))
        loggers.append(lg)
    return loggers


def _build_student(
    cfg: DictConfig, pretrained: str | None = None, corpus: list[str] | None = None
) -> Student:
    s = cfg.student
    arch = OmegaConf.to_container(s.architecture) if s.get("architecture") else None
    try:
        return build_student(
            name=s.name,
            pretrained=pretrained or s.get("pretrained"),
            max_source_length=int(s.max_source_length),
            max_target_length=int(s.max_target_length),
            architecture=arch,
            tokenizer=s.get("tokenizer", "byt5"),
            vocab_size=int(s.get("vocab_size", 1000)),
            corpus=corpus,
            seed=int(cfg.seed),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    except OSError as err:
        where = pretrained or s.get("pretrained")
        raise ConfigError(
            f"student={s.name}: cannot load {where!r} (no local copy and no network?): "
            f"{str(err).splitlines()[0]}"
        ) from err


def _load_student(ctx: RunContext, stage: str) -> Student:
    """The student a stage exported (`distill` or `refine`), on the GPU when the trainer uses one."""
    path = ctx.run_dir / stage / "student"
    if not (path.exists() and _is_done(ctx.run_dir / stage)):
        what = (
            "the lm_guided_kd methods and the refine stage need a distilled student"
            if stage == "distill"
            else "the lm_guided_rl methods need an RL-refined student"
        )
        raise ConfigError(
            f"{what} in {path}: add the {stage} stage or point hydra.run.dir at a run that has one"
        )
    student = _build_student(ctx.cfg, pretrained=str(path))
    if ctx.cfg.trainer.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available():
        student.model.to("cuda")
    return student


# Settings that change how a stage reports, not what it produces.
COSMETIC = {
    "trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps"),
    # How calls are sent, not what comes back (the call cache's key ignores them too).
    "large_lm": (
        "batch_size",
        "max_concurrency",
        "timeout_s",
        "max_retries",
        "base_url",
        "prices",
        "prompt_caching",
        "prompt_cache_min_tokens",
        "batch_stages",
        "batch_poll_s",
        "batch_max_requests",
        "batch_retries",
        "batch_discount",
    ),
}


DISTILL_KEYS = ("dataset", "large_lm", "prompt", "teacher", "student", "distill", "trainer", "seed")


def _distill_fingerprint(cfg: DictConfig) -> str:
    return fingerprint(cfg, *DISTILL_KEYS)


def _single_device(trainer_cfg: DictConfig) -> DictConfig:
    """The trainer config on one device: refine's rewards call the large LM from this process, which
    worker processes of a multi-device strategy could not share."""
    if trainer_cfg.get("strategy") in (None, "auto") and int(trainer_cfg.get("devices", 1)) == 1:
        return trainer_cfg
    log.info("refine: training on one device (trainer.strategy/devices apply to distill only)")
    single = OmegaConf.to_container(trainer_cfg, resolve=True)
    single.pop("strategy", None)
    single["devices"] = 1
    return OmegaConf.create(single)


def _teacher_fingerprint(cfg: DictConfig) -> str:
    return fingerprint(cfg, "dataset", "large_lm", "prompt", "teacher")


def _refine_fingerprint(cfg: DictConfig) -> str:
    # The reward's answers use the evaluation's answer length.
    answer = str(cfg.evaluation.answer_max_new_tokens)
    return _hash(fingerprint(cfg, *DISTILL_KEYS, "rl", "reward"), answer)


def fingerprint(cfg: DictConfig, *keys: str) -> str:
    """A hash of the resolved config sections that determine an artifact."""
    parts = {}
    for k in keys:
        node = cfg.get(k)
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if isinstance(value, dict):
            value = {name: v for name, v in value.items() if name not in COSMETIC.get(k, ())}
        parts[k] = value
    return _hash(json.dumps(parts, sort_keys=True, default=str))


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _meta(stage_dir: Path) -> dict:
    path = stage_dir / "meta.json"
    return read_json(path) if path.exists() else {}


def _write_meta(stage_dir: Path, meta: dict) -> None:
    write_json(stage_dir / "meta.json", meta)


def _mark_done(stage_dir: Path, fp: str) -> None:
    _write_meta(stage_dir, {"fingerprint": fp, "done": True})


def _is_done(stage_dir: Path) -> bool:
    return bool(_meta(stage_dir).get("done"))


def _reused(stage_dir: Path, fp: str, force: bool, summary: str) -> dict | None:
    """A finished stage's summary file when the stage can be reused as it is, else None."""
    if not _reusable(stage_dir, fp, force):
        return None
    log.info("%s: reusing %s", stage_dir.name, stage_dir)
    return read_json(stage_dir / summary)


def _reusable(stage_dir: Path, fp: str, force: bool) -> bool:
    meta = _meta(stage_dir)
    if force or not meta.get("done"):
        return False
    if meta.get("fingerprint") != fp:
        log.warning("%s: config changed since it was made; redoing it", stage_dir)
        return False
    return True


def _check_stages(cfg: DictConfig) -> list[str]:
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(f"stages={stages}: choose from {list(STAGES)} (in that order)")
    return sorted(stages, key=STAGES.index)


def _check_settings(cfg: DictConfig) -> None:
    """Values that would otherwise fail only after minutes of work, checked before any."""
    e, t, d = cfg.evaluation, cfg.teacher, cfg.distill
    unknown = [m for m in e.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"evaluation.methods: unknown {unknown}; allowed: {list(METHODS)}")
    sc = e.self_consistency
    if int(sc.k) < 1 or float(sc.temperature) <= 0:
        raise ConfigError(
            f"evaluation.self_consistency: k={sc.k}, temperature={sc.temperature}: need k >= 1 and "
            "temperature > 0 (samples at temperature 0 are all the same)"
        )
    if int(t.num_samples) < 1:
        raise ConfigError(f"teacher.num_samples={t.num_samples}: must be >= 1")
    if t.prompting not in PROMPTINGS:
        raise ConfigError(
            f"teacher.prompting={t.prompting!r}: allowed values are {list(PROMPTINGS)}"
        )
    if int(t.few_shot_k) < 1 or int(t.answer_max_new_tokens) < 1:
        raise ConfigError(
            f"teacher.few_shot_k={t.few_shot_k}, teacher.answer_max_new_tokens="
            f"{t.answer_max_new_tokens}: both must be >= 1"
        )
    _check_objective(cfg)
    if teacher_temperature(t) < 0 or not 0 < float(t.top_p) <= 1:
        raise ConfigError(
            f"teacher.temperature={t.temperature}, teacher.top_p={t.top_p}: need temperature >= 0 "
            "and 0 < top_p <= 1"
        )
    s = cfg.student
    if not s.get("pretrained") and s.get("tokenizer", "byt5") not in TOKENIZERS:
        raise ConfigError(
            f"student.tokenizer={s.tokenizer!r}: allowed values are {list(TOKENIZERS)}"
        )
    for key in ("batch_size", "eval_batch_size"):
        if int(d[key]) < 1:
            raise ConfigError(f"distill.{key}={d[key]}: must be >= 1")
    for key in ("answer_max_new_tokens", "cot_max_new_tokens", "student_batch_size"):
        if int(e[key]) < 1:
            raise ConfigError(f"evaluation.{key}={e[key]}: must be >= 1")
    RewardScorer.from_config(cfg.reward, large_lm=None, prompts=None)  # type: ignore[arg-type]
    _check_rl(cfg.rl)


def _check_objective(cfg: DictConfig) -> None:
    """The student's objective against what the run asks of it."""
    d = cfg.distill
    objective = d.objective
    if objective not in OBJECTIVES:
        raise ConfigError(f"distill.objective={objective!r}: allowed values are {list(OBJECTIVES)}")
    if not 0.0 <= float(d.alpha) <= 1.0:
        raise ConfigError(f"distill.alpha={d.alpha}: must be within [0, 1]")
    needs = {
        "lm_guided": (WRITES_RATIONALES, "writes rationales for the large LM"),
        "finetune_cot": (("rationale_answer", "multitask"), "answers with its own rationale"),
        "vanilla_ft": (("answer",), "was fine-tuned on answers alone"),
    }
    for method in cfg.evaluation.methods:
        for prefix, (allowed, what) in needs.items():
            if method.startswith(prefix) and objective not in allowed:
                raise ConfigError(
                    f"evaluation.methods: {method} needs a student that {what} "
                    f"(distill.objective in {list(allowed)}), got distill.objective={objective}"
                )
    if "refine" in cfg.stages and objective not in ("rationale", "multitask"):
        raise ConfigError(
            f"stages: refine trains a rationale writer (distill.objective=rationale or multitask), "
            f"got distill.objective={objective}; drop refine from stages"
        )


def _check_rl(r: DictConfig) -> None:
    for key in ("rollouts", "rollout_batch_size", "samples_per_question", "ppo_epochs"):
        if int(r[key]) < 1:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 1")
    for key in ("minibatch_size", "max_new_tokens", "val_batch_size"):
        if int(r[key]) < 1:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 1")
    if int(r.rollout_batch_size) % int(r.samples_per_question):
        raise ConfigError(
            f"rl.rollout_batch_size={r.rollout_batch_size} must be a multiple of "
            f"rl.samples_per_question={r.samples_per_question}"
        )
    for key in ("val_every", "log_samples_every"):
        if int(r[key]) < 0:
            raise ConfigError(f"rl.{key}={r[key]}: must be >= 0 (0: never)")
    for key in ("gamma", "lam"):
        if not 0.0 <= float(r[key]) <= 1.0:
            raise ConfigError(f"rl.{key}={r[key]}: must be within [0, 1]")
    for key in ("temperature", "clip_range"):
        if not float(r[key]) > 0:
            raise ConfigError(f"rl.{key}={r[key]}: must be > 0")
    for key, allowed in RL_CHOICES.items():
        if r[key] not in allowed:
            raise ConfigError(f"rl.{key}={r[key]!r}: allowed values are {list(allowed)}")
    if r.algorithm in GROUP_BASELINES and int(r.samples_per_question) < 2:
        raise ConfigError(
            f"rl.samples_per_question={r.samples_per_question}: rl.algorithm={r.algorithm} needs "
            ">= 2 (its baseline comes from the other samples of the same question)"
        )
    if int(r.value_warmup) < 0:
        raise ConfigError(f"rl.value_warmup={r.value_warmup}: must be >= 0")
    alpha = r.get("keep_best_alpha")
    if alpha is not None and not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"rl.keep_best_alpha={alpha}: must be within (0, 1), or null")
    kl = r.kl
    if kl.estimator not in KL_ESTIMATORS:
        raise ConfigError(
            f"rl.kl.estimator={kl.estimator!r}: allowed values are {list(KL_ESTIMATORS)}"
        )
    if kl.controller not in ("fixed", "adaptive"):
        raise ConfigError(f"rl.kl.controller={kl.controller!r}: allowed values are fixed, adaptive")
    if not float(kl.coef) >= 0:
        raise ConfigError(f"rl.kl.coef={kl.coef}: must be >= 0")
    if kl.controller == "adaptive" and not (float(kl.target) > 0 and float(kl.horizon) > 0):
        raise ConfigError(
            f"rl.kl.target={kl.target}, rl.kl.horizon={kl.horizon}: both must be > 0 for the "
            "adaptive controller"
        )


def _check_splits(splits: Splits, stages: list[str], name: str) -> None:
    if {"teacher", "distill"} & set(stages) and not splits.train:
        raise ConfigError(f"dataset={name}: the train split is empty")
    if "evaluate" in stages and not splits.test:
        raise ConfigError(f"dataset={name}: the test split is empty")


def _float(x) -> float | None:
    return None if x is None else round(float(x), 6)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cap(items: list, limit) -> list:
    return items if limit is None else items[: int(limit)]


def _flat_metrics(results: dict) -> dict[str, float]:
    out = {}
    for method, m in results["methods"].items():
        for k in ("em", "f1", "vote_share"):
            if k in m:
                out[f"test/{method}/{k}"] = m[k]
    for k in ("calls", "cache_hits", "input_tokens", "output_tokens"):
        out[f"llm/{k}"] = results["llm"][k]
    return out


def _loggable_config(cfg: DictConfig) -> dict:
    return redact(OmegaConf.to_container(cfg, resolve=True))


def _finish_wandb(loggers: list) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def format_results_table(results: dict) -> str:
    refine = results.get("refine") or {}
    # When refine kept the distilled student, the lm_guided_rl rows are the KD student's: say so.
    kept = refine.get("selected") == "distilled"
    rows = [("method", "EM", "F1", "n")]
    for name, m in results["methods"].items():
        mark = "*" if kept and name in M.RL_METHODS else ""
        rows.append((name + mark, f"{m['em']:.3f}", f"{m['f1']:.3f}", str(m["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    if kept and set(M.RL_METHODS) & set(results["methods"]):
        reason = (refine.get("selection") or {}).get("reason", "no val evaluation beat it")
        lines.append(f"* the distilled student: refine exported it unchanged ({reason})")
    llm = results["llm"]
    lines.append(
        f"large LM: {llm['calls']} calls, {llm['cache_hits']} cache hits, "
        f"{llm['input_tokens']} input / {llm['output_tokens']} output tokens"
    )
    return "\n".join(lines)
