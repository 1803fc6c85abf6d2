"""The LM-Guided CoT pipeline: teacher -> distill -> evaluate, driven by one Hydra config.

`run(cfg)` is what the `lmgcot` command calls and what tests call directly. Every stage leaves its
artifacts in the run directory with a fingerprint of the config it used; a later invocation on the
same directory (`hydra.run.dir=...`) reuses what still matches and redoes what does not, so a killed
run resumes where it stopped and `stages=[evaluate]` re-evaluates a trained student.
"""

from __future__ import annotations

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
from tqdm.auto import tqdm

from lmgcot.data.base import QADataset
from lmgcot.data.example import Splits
from lmgcot.distill.datamodule import RationaleDataModule
from lmgcot.distill.module import RationaleDistiller
from lmgcot.distill.teacher import (
    TeacherRationale,
    generate_rationales,
    teacher_stats,
    training_pairs,
)
from lmgcot.errors import ConfigError, LmgcotError
from lmgcot.eval import methods as M
from lmgcot.llm.base import LargeLM
from lmgcot.llm.cache import CallCache
from lmgcot.prompts import PromptTemplates
from lmgcot.student.generate import generate_rationales as student_rationales
from lmgcot.student.models import TOKENIZERS, Student, build_student
from lmgcot.utils.io import read_json, read_jsonl, replace_dir, write_json, write_jsonl

log = logging.getLogger("lmgcot")
# Lightning's start-up tips and transformers' per-file progress bars drown the run's own progress.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)

STAGES = ("teacher", "distill", "evaluate")
METHODS = ("standard", "cot", "lm_guided_kd", "lm_guided_kd_sc")
RESULTS_FILE = "results.json"


def run(cfg: DictConfig) -> dict:
    """Run the configured stages and return the results dict also written to results.json."""
    # Lightning's own use of a deprecated torch API: noise a user can do nothing about.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
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
    loggers = build_loggers(cfg)
    ctx = RunContext(cfg, run_dir, dataset.name, splits, prompts, large_lm, loggers)
    log.info("run directory: %s", run_dir)
    try:
        for stage in stages:
            t0 = time.perf_counter()
            large_lm.set_stage(stage)
            STAGE_FUNCS[stage](ctx)
            ctx.timings[stage] = round(time.perf_counter() - t0, 2)
        results = ctx.results()
        write_json(run_dir / RESULTS_FILE, results)
        for lg in loggers:
            lg.log_metrics(_flat_metrics(results))
            lg.save()
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
    methods: dict[str, dict] = field(default_factory=dict)

    def results(self) -> dict:
        previous = self._previous_results()
        methods = {**previous.get("methods", {}), **self.methods}
        return {
            "methods": {m: methods[m] for m in METHODS if m in methods},
            # Filled by the RL stage's rationale scorers (reward group); none run yet.
            "rationale_quality": previous.get("rationale_quality", {}),
            "llm": self.large_lm.usage.as_dict(),
            "teacher": self.teacher or previous.get("teacher", {}),
            "distill": self.distill or previous.get("distill", {}),
            "timings_s": {**previous.get("timings_s", {}), **self.timings},
            "setup": {
                "dataset": self.dataset_name,
                "student": self.cfg.student.get("name"),
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
    fp = fingerprint(ctx.cfg, "dataset", "large_lm", "prompt", "teacher")
    if _reusable(out_dir, fp, ctx.cfg.force):
        ctx.teacher = read_json(out_dir / "stats.json")
        log.info("teacher: reusing %s", out_dir)
        return
    stats = {}
    for split, examples in (("train", ctx.splits.train), ("val", ctx.splits.val)):
        rationales = generate_rationales(
            examples,
            ctx.large_lm,
            ctx.prompts,
            num_samples=int(t.num_samples),
            temperature=float(t.temperature),
            top_p=float(t.top_p),
            max_new_tokens=int(t.max_new_tokens),
            strip_answer=bool(t.strip_answer),
        )
        kept = training_pairs(examples, rationales, ctx.prompts, bool(t.filter_correct))
        stats[split] = teacher_stats(rationales, len(kept))
        write_jsonl(out_dir / f"{split}.jsonl", (r.to_dict() for r in rationales))
        log.info(
            "teacher: %s: %d rationales, %.1f%% correct, %d kept",
            split,
            len(rationales),
            100 * stats[split]["correct_share"],
            len(kept),
        )
    write_json(out_dir / "stats.json", stats)
    _mark_done(out_dir, fp)
    ctx.teacher = stats


def stage_distill(ctx: RunContext) -> None:
    """Fine-tune the student on the kept teacher rationales; export it to distill/student."""
    cfg = ctx.cfg
    out_dir = ctx.run_dir / "distill"
    fp = _distill_fingerprint(cfg)
    if _reusable(out_dir, fp, cfg.force):
        ctx.distill = read_json(out_dir / "summary.json")
        log.info("distill: reusing %s", out_dir)
        return
    if not _is_done(ctx.run_dir / "teacher"):
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
            [TeacherRationale(**r) for r in read_jsonl(ctx.run_dir / "teacher" / f"{split}.jsonl")],
            ctx.prompts,
            bool(t.filter_correct),
        )
        for split, examples in (("train", ctx.splits.train), ("val", ctx.splits.val))
    }
    # A from-scratch tokenizer (student.tokenizer=bpe) learns its vocabulary from the training pairs.
    student = _build_student(cfg, corpus=[text for pair in pairs["train"] for text in pair])
    d = cfg.distill
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
    module = RationaleDistiller(
        student.model,
        optimizer=instantiate(d.optimizer),
        scheduler=instantiate(d.scheduler) if d.get("scheduler") else None,
    )
    has_val = len(pairs["val"]) > 0
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
    summary = {
        "train_pairs": len(pairs["train"]),
        "val_pairs": len(pairs["val"]),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "best_val_loss": _float(checkpoint.best_model_score),
        "seconds": round(time.perf_counter() - t0, 2),
        "parameters": sum(p.numel() for p in student.model.parameters()),
    }
    write_json(out_dir / "summary.json", summary)
    _mark_done(out_dir, fp)
    ctx.distill = summary


def stage_evaluate(ctx: RunContext) -> None:
    """Every configured method on the test split; per-method predictions go to eval/<method>.jsonl."""
    cfg = ctx.cfg
    e = cfg.evaluation
    wanted = list(e.methods)
    examples = ctx.splits.test
    eval_dir = ctx.run_dir / "eval"
    base_fp = fingerprint(cfg, "dataset", "large_lm", "prompt", "seed")
    student_fp = _meta(ctx.run_dir / "distill").get("fingerprint", "")
    if student_fp and student_fp != _distill_fingerprint(cfg):
        log.warning(
            "evaluate: the student in %s was distilled under another config (data, teacher, "
            "student or trainer); evaluating it as it is",
            ctx.run_dir,
        )
    student: Student | None = None
    samples = []
    for method in wanted:
        uses_student = method.startswith("lm_guided")
        fp = _hash(base_fp, method, student_fp if uses_student else "", _method_settings(method, e))
        path = eval_dir / f"{method}.jsonl"
        if _meta(eval_dir).get(method) == fp and path.exists() and not cfg.force:
            preds = [M.Prediction(**r) for r in read_jsonl(path)]
            log.info("evaluate: %s: reusing %s", method, path)
        else:
            if uses_student and student is None:
                student = _load_distilled_student(ctx)
            preds = _predict(method, examples, ctx, student)
            write_jsonl(path, (p.to_dict() for p in preds))
            _write_meta(eval_dir, {**_meta(eval_dir), method: fp})
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


STAGE_FUNCS: dict[str, Callable[[RunContext], None]] = {
    "teacher": stage_teacher,
    "distill": stage_distill,
    "evaluate": stage_evaluate,
}


def _method_settings(method: str, e: DictConfig) -> str:
    """The evaluation settings that change a method's predictions (its artifact fingerprint)."""
    keys = {
        "standard": ["answer_max_new_tokens"],
        "cot": ["answer_max_new_tokens", "cot_max_new_tokens"],
        "lm_guided_kd": ["answer_max_new_tokens"],
        "lm_guided_kd_sc": ["answer_max_new_tokens", "self_consistency"],
    }[method]
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
    inputs = [prompts.student_input(x) for x in examples]
    if method == "lm_guided_kd":
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
        rationales = student_rationales(
            student,
            inputs,
            batch_size=max(1, int(e.student_batch_size) // k),
            seed=int(ctx.cfg.seed),
            progress=bar.update,
            **sampling,
        )
    return M.answer_with_rationales(examples, rationales, lm, prompts, int(e.answer_max_new_tokens))


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


def _load_distilled_student(ctx: RunContext) -> Student:
    path = ctx.run_dir / "distill" / "student"
    if not (path.exists() and _is_done(ctx.run_dir / "distill")):
        raise ConfigError(
            f"the lm_guided methods need a distilled student in {path}: add the distill stage or "
            "point hydra.run.dir at a run that has one"
        )
    student = _build_student(ctx.cfg, pretrained=str(path))
    if ctx.cfg.trainer.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available():
        student.model.to("cuda")
    return student


# Settings that change how a stage reports, not what it produces.
COSMETIC = {"trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")}


def _distill_fingerprint(cfg: DictConfig) -> str:
    keys = ("dataset", "large_lm", "prompt", "teacher", "student", "distill", "trainer", "seed")
    return fingerprint(cfg, *keys)


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
    if float(t.temperature) < 0 or not 0 < float(t.top_p) <= 1:
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


def _check_splits(splits: Splits, stages: list[str], name: str) -> None:
    if {"teacher", "distill"} & set(stages) and not splits.train:
        raise ConfigError(f"dataset={name}: the train split is empty")
    if "evaluate" in stages and not splits.test:
        raise ConfigError(f"dataset={name}: the test split is empty")


def _float(x) -> float | None:
    return None if x is None else round(float(x), 6)


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
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _finish_wandb(loggers: list) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def format_results_table(results: dict) -> str:
    rows = [("method", "EM", "F1", "n")]
    for name, m in results["methods"].items():
        rows.append((name, f"{m['em']:.3f}", f"{m['f1']:.3f}", str(m["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    llm = results["llm"]
    lines.append(
        f"large LM: {llm['calls']} calls, {llm['cache_hits']} cache hits, "
        f"{llm['input_tokens']} input / {llm['output_tokens']} output tokens"
    )
    return "\n".join(lines)
