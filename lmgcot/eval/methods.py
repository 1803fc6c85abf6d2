"""Answer prediction by each method, all with the same frozen large LM, scored with EM/F1.

standard         the large LM answers from context + question
cot              the large LM writes its own rationale, then answers given it
lm_guided_kd     the distilled student writes a rationale (greedy); the large LM answers given it
lm_guided_kd_sc  self-consistency: k sampled student rationales, one large-LM answer each, majority
                 vote over normalised answers (ties go to the answer seen first)
lm_guided_kd_beam the distilled student's rationale by beam search (4 beams), not greedy
lm_guided_rl(_sc) the same with the RL-refined student
finetune_cot     Fine-tune-CoT: the student answers alone, no large LM: it writes
                 "rationale --> answer" (distill.objective=rationale_answer), or answers under the
                 "predict:" prefix (multitask, distilling step-by-step)
finetune_cot_sc  majority vote over k sampled student outputs
vanilla_ft       the student fine-tuned on answers only (distill.objective=answer) answers alone:
                 the no-rationale baseline
lm_guided_kd_best best-of-k: of the k samples `_sc` votes over, only the one the rationale reward
                 `evaluation.select_reward` scores highest goes to the large LM
lm_guided_kd_wsc quality-weighted self-consistency: each answer's vote weighs its rationale's score
lm_guided_rl_best, lm_guided_rl_wsc  the same with the RL-refined student
oracle_best_of_k of the distilled student's k samples, the one whose answer matches the gold answer:
                 a bound for analysis (it reads the gold answer), shown apart, never an objective

Answers are read and scored by the example's answer type (`lmgcot.answers.typed`). Each method
is a `Method` record in `METHODS`: adding one is one entry and, where it needs one, its function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from lmgcot.data.example import Example
from lmgcot.eval.predict import (
    Prediction,
    answer_standard,
    answer_with_rationales,
    large_lm_rationales,
    student_answers,
)
from lmgcot.eval.samples import SampleStore
from lmgcot.eval.selection import RateFn, predict_best, predict_oracle, predict_weighted
from lmgcot.llm.base import LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.student.objectives import OBJECTIVES, Objective

if TYPE_CHECKING:
    from lmgcot.student.models import Student

# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodContext:
    """What a method's predict function may use. `settings` holds only the evaluation keys the
    method declares (its fingerprint); `batch_size` changes how fast, not what, a greedy method
    predicts."""

    large_lm: LargeLM
    prompts: PromptTemplates
    settings: dict
    objective: Objective
    seed: int
    batch_size: int
    # Sampled outputs shared by the methods that sample the same student the same way.
    samples: SampleStore | None = None
    # The selection reward (`evaluation.select_reward`) of sampled rationales, for best-of-k.
    rate: RateFn | None = None


PredictFn = Callable[[MethodContext, list[Example], "Student | None"], list[Prediction]]


@dataclass(frozen=True)
class Method:
    """One evaluation method: which student it uses, what it asks of that student, the
    evaluation settings behind its predictions, and how it predicts."""

    name: str
    predict: PredictFn
    # The stage whose student it uses: "distill", "refine", or None (the large LM alone).
    student: str | None = None
    # distill.objective values whose student can serve it, and what that student does (errors).
    objectives: tuple[str, ...] = ()
    student_does: str = ""
    # evaluation.* keys that change its predictions: part of its artifact's fingerprint.
    settings: tuple[str, ...] = ("answer_max_new_tokens",)
    uses_large_lm: bool = True
    # Listed in evaluation.methods by default (the LM-Guided CoT paper's table).
    paper: bool = False
    # Methods sharing a recipe predict the same way: given the same student and settings, one's
    # predictions are the other's (lm_guided_rl when refine kept the distilled student).
    recipe: str = ""
    # Keys outside `evaluation` that change its predictions (the scorer of a selection reward).
    reads: tuple[str, ...] = ()
    # A bound that reads the gold answer: shown apart and never a sweeper's objective.
    oracle: bool = False

    @property
    def recipe_key(self) -> str:
        return self.recipe or self.name

    @property
    def samples(self) -> bool:
        return "self_consistency" in self.settings


def _standard(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
    return answer_standard(
        examples, ctx.large_lm, ctx.prompts, int(ctx.settings["answer_max_new_tokens"])
    )


def _cot(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
    s = ctx.settings
    rationales = large_lm_rationales(
        examples, ctx.large_lm, ctx.prompts, int(s["cot_max_new_tokens"])
    )
    return answer_with_rationales(
        examples,
        [[r] for r in rationales],
        ctx.large_lm,
        ctx.prompts,
        int(s["answer_max_new_tokens"]),
    )


def _sampling(settings: dict) -> dict:
    """Generation settings of a self-consistency method (greedy for the others)."""
    sc = settings.get("self_consistency")
    if sc is None:
        return {}
    return {
        "num_samples": int(sc["k"]),
        "temperature": float(sc["temperature"]),
        "top_p": float(sc["top_p"]),
    }


def _student_outputs(
    ctx: MethodContext, name: str, student: Student, inputs: list[str], **generation
) -> list[list[str]]:
    # Imported here: the registry is read by light tools (lmgcot-compare) that never generate.
    from lmgcot.student.generate import generate_rationales as student_outputs

    sampling = _sampling(ctx.settings)
    k = sampling.get("num_samples", 1)
    batch = max(1, int(ctx.settings.get("student_batch_size", ctx.batch_size)) // k)

    def generate() -> list[list[str]]:
        with tqdm(total=len(inputs), desc=f"student {name}", unit="question", mininterval=2.0) as b:
            return student_outputs(
                student,
                inputs,
                batch_size=batch,
                seed=ctx.seed,
                progress=b.update,
                **sampling,
                **generation,
            )

    if not sampling or ctx.samples is None:
        return generate()
    # Everything the samples depend on besides the student and the inputs.
    how = {**sampling, **generation, "batch_size": batch, "seed": ctx.seed}
    return ctx.samples.get(inputs, how, generate)


def _rationales(ctx: MethodContext, name: str, student, examples: list[Example], **generation):
    """The student's rationales per example (one greedy, or k samples)."""
    task = ctx.objective.explain_task
    inputs = [ctx.prompts.student_input(x, task) for x in examples]
    outputs = _student_outputs(ctx, name, student, inputs, **generation)
    return [[ctx.objective.rationale_of(o) for o in outs] for outs in outputs]


def _guided(name: str, **generation) -> PredictFn:
    """The student writes rationales (greedy, or k samples voted); the large LM answers."""

    def predict(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
        rationales = _rationales(ctx, name, student, examples, **generation)
        return answer_with_rationales(
            examples,
            rationales,
            ctx.large_lm,
            ctx.prompts,
            int(ctx.settings["answer_max_new_tokens"]),
        )

    return predict


def _choosing(name: str, how: str) -> PredictFn:
    """The student's k samples (the ones `_sc` votes over); one is chosen by quality (`best`), or
    the answers are voted with quality weights (`weighted`), or the gold answer chooses
    (`oracle`)."""

    def predict(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
        rationales = _rationales(ctx, name, student, examples)
        llm, prompts = ctx.large_lm, ctx.prompts
        max_new = int(ctx.settings["answer_max_new_tokens"])
        if how == "oracle":
            return predict_oracle(examples, rationales, llm, prompts, max_new)
        if ctx.rate is None:
            raise ValueError(f"{name} needs MethodContext.rate (the selection reward's scorer)")
        quality = ctx.rate(examples, rationales)
        choose = predict_best if how == "best" else predict_weighted
        return choose(examples, rationales, quality, llm, prompts, max_new)

    return predict


def _alone(name: str) -> PredictFn:
    """The student answers on its own (greedy, or k samples voted)."""

    def predict(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
        task = ctx.objective.answer_task
        inputs = [ctx.prompts.student_input(x, task) for x in examples]
        outputs = _student_outputs(ctx, name, student, inputs)
        return student_answers(examples, outputs, ctx.objective)

    return predict


_WRITES = tuple(o.name for o in OBJECTIVES.values() if o.writes_rationales)
_ANSWERS_WITH_RATIONALE = tuple(
    o.name for o in OBJECTIVES.values() if o.answers_alone and o.writes_rationales
)
# Sampled methods' predictions depend on how questions are batched (one seeded stream per batch).
_SC = ("answer_max_new_tokens", "self_consistency", "student_batch_size")
# Choosing by quality: the selection reward, and how the run's scorer scores it.
_SELECT = (*_SC, "select_reward")
_SCORER = ("reward.scorer", "reward.gate", "reward.judge_max_new_tokens")


def _lm_guided(name: str, student: str, settings=("answer_max_new_tokens",), **kw) -> Method:
    return Method(
        name,
        _guided(name, **kw.pop("generation", {})),
        student=student,
        objectives=_WRITES,
        student_does="writes rationales for the large LM",
        settings=settings,
        **kw,
    )


def _selecting(name: str, student: str, how: str) -> Method:
    return Method(
        name,
        _choosing(name, how),
        student=student,
        objectives=_WRITES,
        student_does="writes rationales for the large LM",
        settings=_SELECT,
        recipe=f"lm_guided_{how}",
        reads=_SCORER,
    )


def _student_alone(name: str, objectives: tuple[str, ...], does: str, settings) -> Method:
    return Method(
        name,
        _alone(name),
        student="distill",
        objectives=objectives,
        student_does=does,
        settings=settings,
        uses_large_lm=False,
    )


# Every method, in the order tables list them (the names results.json uses).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("standard", _standard, paper=True, settings=("answer_max_new_tokens",)),
        Method("cot", _cot, paper=True, settings=("answer_max_new_tokens", "cot_max_new_tokens")),
        _lm_guided("lm_guided_kd", "distill", paper=True, recipe="lm_guided"),
        _lm_guided("lm_guided_kd_sc", "distill", settings=_SC, paper=True, recipe="lm_guided_sc"),
        # Beam search instead of greedy decoding for the student's rationale.
        _lm_guided("lm_guided_kd_beam", "distill", generation={"num_beams": 4}),
        _lm_guided("lm_guided_rl", "refine", paper=True, recipe="lm_guided"),
        _lm_guided("lm_guided_rl_sc", "refine", settings=_SC, paper=True, recipe="lm_guided_sc"),
        _student_alone(
            "finetune_cot",
            _ANSWERS_WITH_RATIONALE,
            "answers with its own rationale",
            ("answer_max_new_tokens",),
        ),
        _student_alone(
            "finetune_cot_sc", _ANSWERS_WITH_RATIONALE, "answers with its own rationale", _SC
        ),
        _student_alone(
            "vanilla_ft", ("answer",), "was fine-tuned on answers alone", ("answer_max_new_tokens",)
        ),
        _selecting("lm_guided_kd_best", "distill", "best"),
        _selecting("lm_guided_kd_wsc", "distill", "weighted"),
        _selecting("lm_guided_rl_best", "refine", "best"),
        _selecting("lm_guided_rl_wsc", "refine", "weighted"),
        # Last: tables list it apart from the methods.
        Method(
            "oracle_best_of_k",
            _choosing("oracle_best_of_k", "oracle"),
            student="distill",
            objectives=_WRITES,
            student_does="writes rationales for the large LM",
            settings=_SC,
            oracle=True,
        ),
    )
}
# The LM-Guided CoT paper's methods (evaluation.methods by default).
PAPER_METHODS = tuple(name for name, m in METHODS.items() if m.paper)
# Methods that guide the large LM with the refine stage's (RL) student.
RL_METHODS = tuple(name for name, m in METHODS.items() if m.student == "refine")
# Bounds that read the gold answer: apart in tables, never an objective.
ORACLES = tuple(name for name, m in METHODS.items() if m.oracle)
