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
    batch = ctx.settings.get("student_batch_size", ctx.batch_size)
    with tqdm(total=len(inputs), desc=f"student {name}", unit="question", mininterval=2.0) as bar:
        return student_outputs(
            student,
            inputs,
            batch_size=max(1, int(batch) // k),
            seed=ctx.seed,
            progress=bar.update,
            **sampling,
            **generation,
        )


def _guided(name: str, **generation) -> PredictFn:
    """The student writes rationales (greedy, or k samples voted); the large LM answers."""

    def predict(ctx: MethodContext, examples: list[Example], student) -> list[Prediction]:
        task = ctx.objective.explain_task
        inputs = [ctx.prompts.student_input(x, task) for x in examples]
        outputs = _student_outputs(ctx, name, student, inputs, **generation)
        rationales = [[ctx.objective.rationale_of(o) for o in outs] for outs in outputs]
        return answer_with_rationales(
            examples,
            rationales,
            ctx.large_lm,
            ctx.prompts,
            int(ctx.settings["answer_max_new_tokens"]),
        )

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
    )
}
# The LM-Guided CoT paper's methods (evaluation.methods by default).
PAPER_METHODS = tuple(name for name, m in METHODS.items() if m.paper)
# Methods that guide the large LM with the refine stage's (RL) student.
RL_METHODS = tuple(name for name, m in METHODS.items() if m.student == "refine")
