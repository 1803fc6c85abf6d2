"""Every text the models read: large-LM prompts for each role and the student's input.

Templates come from config (`prompt` group). The section markers `Context:`, `Question:` and
`Rationale:` and the CoT trigger are what the `simulated` large LM reads, so custom templates meant for
it must keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmgcot.data.example import Example, Paragraph
from lmgcot.errors import ConfigError

COT_TRIGGER = "Let's think step by step."
# Zero-shot-CoT's second step: the CoT prompt, the rationale, then this; the reply is the answer.
ANSWER_TRIGGER = "Therefore, the answer is"
# How every judge prompt (`lmgcot.rewards.judge`) starts: lets a backend recognise one without
# importing the rewards layer.
JUDGE_PREFIX = "You are grading a rationale"


@dataclass(frozen=True)
class PromptTemplates:
    """standard: the large LM answers from context + question. cot: it writes its own rationale.
    guided: it answers given a rationale. student: the small LM's input. `answer_trigger` ends
    zero-shot-CoT's answer step (`answer_step_prompt`). `context_mode` picks all paragraphs or only
    supporting sentences; `max_context_chars` caps what the large LM reads.

    Every template needs `{question}` (and `guided` `{rationale}`); `{context}` is optional, since
    the reasoning tasks (last_letter, gsm8k, ...) have none."""

    instruction: str
    standard: str
    cot: str
    guided: str
    student: str
    answer_trigger: str = ANSWER_TRIGGER
    context_mode: str = "all"
    max_context_chars: int | None = None
    student_titles: bool = False

    def __post_init__(self):
        for name in ("standard", "cot", "guided", "student"):
            template = getattr(self, name)
            needed = ["{question}"] + (["{rationale}"] if name == "guided" else [])
            missing = [k for k in needed if k not in template]
            if missing:
                raise ConfigError(f"prompt.{name}: template lacks {', '.join(missing)}")

    def context(self, example: Example, paragraph_sep: str = "\n", titles: bool = True) -> str:
        paragraphs = (
            example.supporting_paragraphs()
            if self.context_mode == "supporting"
            else example.context
        )
        text = paragraph_sep.join(render_paragraph(p, titles) for p in paragraphs)
        if self.max_context_chars is not None and len(text) > self.max_context_chars:
            text = text[: self.max_context_chars]
        return text

    def standard_prompt(self, example: Example) -> str:
        return self._fill(self.standard, example)

    def cot_prompt(self, example: Example) -> str:
        return self._fill(self.cot, example)

    def answer_step_prompt(self, example: Example, completion: str) -> str:
        """Zero-shot-CoT's step 2: the CoT prompt followed by the step-1 completion and the answer
        trigger ("Therefore, the answer is"); the large LM's reply is the answer."""
        return f"{self.cot_prompt(example)} {completion.strip()}\n{self.answer_trigger}"

    def few_shot_prompt(self, example: Example, exemplars: list[Example]) -> str:
        """Few-shot CoT: each exemplar as its CoT prompt, gold rationale and answer, then the
        question's own CoT prompt. Exemplars need a gold `rationale`."""
        blocks = [
            f"{self.cot_prompt(x)} {x.rationale} {self.answer_trigger} {x.answer}."
            for x in exemplars
        ]
        return "\n\n".join([*blocks, self.cot_prompt(example)])

    def guided_prompt(self, example: Example, rationale: str) -> str:
        return self._fill(self.guided, example, rationale=" ".join(rationale.split()))

    def student_input(self, example: Example, task: str | None = None) -> str:
        """The student's input; `task` ("predict" or "explain") prefixes it for a multitask student
        (distilling step-by-step)."""
        # One line, question first, so truncation to the student's max length cuts context, not
        # the question.
        context = self.context(example, paragraph_sep=" ", titles=self.student_titles)
        text = self.student.format(question=example.question, context=context)
        return f"{task}: {text}" if task else text

    def _fill(self, template: str, example: Example, rationale: str = "") -> str:
        return template.format(
            instruction=self.instruction,
            context=self.context(example),
            question=example.question,
            rationale=rationale,
        )


def render_paragraph(paragraph: Paragraph, title: bool = True) -> str:
    return f"[{paragraph.title}] {paragraph.text}" if title else paragraph.text
