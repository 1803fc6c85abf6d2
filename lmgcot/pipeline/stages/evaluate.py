"""evaluate: every configured method on the test split. Each method's predictions are an artifact
of their own (eval/<method>.jsonl) with a fingerprint: the data, large LM and prompts, the student
it used, and the evaluation settings the method declares (`Method.settings`)."""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig, OmegaConf

from lmgcot.artifacts import EvalDir
from lmgcot.eval import methods as M
from lmgcot.eval.predict import Prediction, summarize
from lmgcot.eval.samples import SampleStore
from lmgcot.pipeline.builders import load_student
from lmgcot.pipeline.fingerprints import fingerprint, hash_parts
from lmgcot.pipeline.scoring import SelectionRater
from lmgcot.pipeline.stage import Stage
from lmgcot.pipeline.stages.distill import DISTILL
from lmgcot.pipeline.stages.quality import rationale_quality
from lmgcot.pipeline.stages.refine import REFINE
from lmgcot.student.models import Student
from lmgcot.student.objectives import OBJECTIVES
from lmgcot.utils.io import read_jsonl, write_jsonl

log = logging.getLogger("lmgcot")

BASE_READS = ("dataset", "large_lm", "prompt", "seed")
STUDENT_STAGES = {"distill": DISTILL, "refine": REFINE}


def method_fingerprint(cfg: DictConfig, run, method: str) -> str:
    """The fingerprint of a method's predictions under `cfg`, with the students now in `run`."""
    m = M.METHODS[method]
    student_fp = (run.stage(m.student).fingerprint or "") if m.student else ""
    # Only methods that read keys outside `evaluation` hash them: the others' fingerprints stay.
    reads = [str(OmegaConf.select(cfg, k)) for k in m.reads]
    return hash_parts(
        fingerprint(cfg, BASE_READS), method, student_fp, _settings_json(cfg, m), *reads
    )


def _settings_json(cfg: DictConfig, m: M.Method) -> str:
    e = cfg.evaluation
    return json.dumps(
        {
            k: OmegaConf.to_container(e[k]) if isinstance(e[k], DictConfig) else e[k]
            for k in m.settings
        },
        sort_keys=True,
    )


def _student_identity(ctx, stage: str) -> str:
    """The fingerprint of the student a stage exported: refine's is the distilled student's when
    refine kept it (rl.keep_best)."""
    refine = ctx.run.refine
    if stage == "refine" and refine.done and refine.summary().get("selected") == "distilled":
        return ctx.run.distill.fingerprint or ""
    return ctx.run.stage(stage).fingerprint or ""


def _recipe_key(ctx, cfg: DictConfig, method: M.Method) -> str:
    """Two methods with the same key predict the same thing: reuse, not regenerate."""
    student = _student_identity(ctx, method.student) if method.student else ""
    reads = [str(OmegaConf.select(cfg, k)) for k in method.reads]
    return hash_parts(method.recipe_key, student, _settings_json(cfg, method), *reads)


def _warn_stale_students(ctx, cfg: DictConfig, wanted: list[str]) -> None:
    for stage, spec in STUDENT_STAGES.items():
        fp = ctx.run.stage(stage).fingerprint
        used = any(M.METHODS[m].student == stage for m in wanted)
        if used and fp and fp != spec.fingerprint(ctx.cfg):
            log.warning(
                "evaluate: the student in %s was trained under another config; evaluating it "
                "as it is",
                ctx.run.stage(stage).path,
            )


def _predict(
    ctx, cfg: DictConfig, method: M.Method, student: Student | None, shared: _Shared
) -> list:
    e = cfg.evaluation
    mctx = M.MethodContext(
        large_lm=ctx.large_lm,
        prompts=ctx.prompts,
        settings={
            k: OmegaConf.to_container(e[k]) if isinstance(e[k], DictConfig) else e[k]
            for k in method.settings
        },
        objective=OBJECTIVES[cfg.distill.objective],
        seed=cfg.seed,
        batch_size=e.student_batch_size,
        samples=shared.samples(method.student) if method.student else None,
        rate=shared.rate() if "select_reward" in method.settings else None,
    )
    return method.predict(mctx, ctx.splits.test, student)


class _Shared:
    """What the methods of one evaluation share per student: its sampled outputs (one
    `SampleStore`, kept in eval/samples/) and the selection reward's scores of them."""

    def __init__(self, ctx, cfg: DictConfig, out: EvalDir, students: dict[str, Student]):
        self.ctx, self.cfg, self.out, self.students = ctx, cfg, out, students
        self.stores: dict[str, SampleStore] = {}
        self.rater: SelectionRater | None = None

    def samples(self, stage: str) -> SampleStore:
        if stage not in self.stores:
            self.stores[stage] = SampleStore(
                self.out.samples_dir, _student_identity(self.ctx, stage)
            )
        return self.stores[stage]

    def rate(self) -> SelectionRater:
        if self.rater is None:
            self.rater = SelectionRater(self.ctx, self.cfg, self.students)
        return self.rater


def _body(ctx, cfg: DictConfig, out: EvalDir) -> dict:
    e = cfg.evaluation
    wanted = list(e.methods)
    _warn_stale_students(ctx, cfg, wanted)
    students: dict[str, Student] = {}
    shared = _Shared(ctx, cfg, out, students)
    samples, preds_by_method = [], {}
    made: dict[str, str] = {}  # recipe key -> the method whose predictions it names
    for name in wanted:
        method = M.METHODS[name]
        fp = method_fingerprint(ctx.cfg, ctx.run, name)
        path = out.predictions(name)
        key = _recipe_key(ctx, cfg, method)
        if out.method_fingerprint(name) == fp and path.exists() and not ctx.cfg.force:
            preds = [Prediction(**r) for r in read_jsonl(path)]
            log.info("evaluate: %s: reusing %s", name, path)
        else:
            if key in made:
                preds = preds_by_method[made[key]]
                log.info(
                    "evaluate: %s: same student and settings as %s: reusing its predictions",
                    name,
                    made[key],
                )
            else:
                stage = method.student
                if stage and stage not in students:
                    students[stage] = load_student(ctx.cfg, ctx.run.stage(stage))
                preds = _predict(ctx, cfg, method, students.get(stage or ""), shared)
            write_jsonl(path, (p.to_dict() for p in preds))
            out.set_method_fingerprint(name, fp)
        made.setdefault(key, name)
        preds_by_method[name] = preds
        ctx.methods[name] = summarize(preds, len(ctx.splits.test))
        ctx.provenance["methods"][name] = fp
        log.info(
            "evaluate: %s: EM %.3f F1 %.3f", name, ctx.methods[name]["em"], ctx.methods[name]["f1"]
        )
        samples.extend({"method": name, **p.to_dict()} for p in preds[: e.num_examples_saved])
    write_jsonl(ctx.run.samples, samples)
    if e.get("rationale_quality", True):
        rationale_quality(ctx, preds_by_method, students)
    return {}


EVALUATE = Stage(
    "evaluate",
    reads=(*BASE_READS, "evaluation", "distill.objective", "reward", "student", "trainer"),
    body=_body,
    cached=False,
)
