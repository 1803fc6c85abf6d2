"""Objects built from the config, one way for the stages, the benchmarks and the tests."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lmgcot.artifacts import StageDir
from lmgcot.errors import ConfigError, LmgcotError
from lmgcot.rl.module import RationaleRefiner
from lmgcot.student.models import Student
from lmgcot.student.models import build_student as _student
from lmgcot.utils.secrets import redact

log = logging.getLogger("lmgcot")


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
            # Without this a stray WANDB_MODE=online plus a key would block on the network.
            os.environ.setdefault("WANDB_SILENT", "true")
            Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        lg = build(node, f"logger.{name}")
        if name == "wandb":
            lg.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))
        loggers.append(lg)
    return loggers


def build_student(
    s: DictConfig, seed: int, pretrained: str | None = None, corpus: list[str] | None = None
) -> Student:
    """The `student` config's model and tokenizer; `pretrained` loads an exported one instead."""
    arch = OmegaConf.to_container(s.architecture) if s.get("architecture") else None
    pretrained = pretrained or s.get("pretrained")
    # A from-scratch student's tokenizer settings (its schema requires them); a pretrained one
    # brings its own.
    scratch = {} if pretrained else {"tokenizer": s.tokenizer, "vocab_size": s.vocab_size}
    try:
        return _student(
            name=s.name,
            pretrained=pretrained,
            max_source_length=s.max_source_length,
            max_target_length=s.max_target_length,
            architecture=arch,
            corpus=corpus,
            seed=seed,
            **scratch,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    except OSError as err:
        raise ConfigError(
            f"student={s.name}: cannot load {pretrained!r} (no local copy and no network?): "
            f"{str(err).splitlines()[0]}"
        ) from err


def load_student(cfg: DictConfig, stage: StageDir) -> Student:
    """The student a stage exported (distill or refine), on the GPU when the trainer uses one."""
    if not (stage.student.exists() and stage.done):
        what = (
            "the lm_guided_kd methods and the refine stage need a distilled student"
            if stage.name == "distill"
            else "the lm_guided_rl methods need an RL-refined student"
        )
        raise ConfigError(
            f"{what} in {stage.student}: add the {stage.name} stage or point hydra.run.dir at a "
            "run that has one"
        )
    student = build_student(cfg.student, cfg.seed, pretrained=str(stage.student))
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available():
        student.model.to("cuda")
    return student


def build_trainer(
    trainer_cfg: DictConfig,
    out: StageDir,
    loggers: list,
    monitor: str | None,
    mode: str,
    every_n_train_steps: int | None = None,
    **overrides,
) -> tuple[pl.Trainer, pl.callbacks.ModelCheckpoint]:
    """The `trainer` config's Trainer, checkpointing to `out/checkpoints` (best.ckpt by `monitor`,
    and last.ckpt to resume from)."""
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=out.checkpoints,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_last=True,
        save_top_k=1,
        every_n_train_steps=every_n_train_steps,
    )
    # A checkpoint is written whole or not at all: resume never finds a truncated last.ckpt.
    from lmgcot.utils.checkpoints import AtomicCheckpointIO
    from lmgcot.utils.progress import progress_bar

    callbacks = [checkpoint]
    if overrides.get("enable_progress_bar", trainer_cfg.get("enable_progress_bar", True)):
        callbacks.append(progress_bar())  # no "Epoch 0/-2" under max_epochs=-1 (refine)
    trainer = build(
        trainer_cfg,
        "trainer",
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out.path),
        num_sanity_val_steps=0,
        **overrides,
    )
    return trainer, checkpoint


def single_device(trainer_cfg: DictConfig) -> DictConfig:
    """The trainer config on one device: refine's rewards call the large LM from this process, which
    worker processes of a multi-device strategy could not share."""
    if trainer_cfg.get("strategy") in (None, "auto") and int(trainer_cfg.get("devices", 1)) == 1:
        return trainer_cfg
    log.info("refine: training on one device (trainer.strategy/devices apply to distill only)")
    single = OmegaConf.to_container(trainer_cfg, resolve=True)
    single.pop("strategy", None)
    single["devices"] = 1
    return OmegaConf.create(single)


def build_refiner(rl: DictConfig, student: Student, reward_fn, **kwargs) -> RationaleRefiner:
    """The refine stage's RL module from the `rl` config, for `student`, optimising `reward_fn`."""
    return RationaleRefiner.from_config(
        rl,
        student.model,
        student.tokenizer,
        reward_fn,
        optimizer=instantiate(rl.optimizer),
        max_source_length=student.max_source_length,
        **kwargs,
    )
