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


@dataclass(frozen=True)
class PromptTemplates:
    """standard: the large LM answers from context + question. cot: it writes its own rationale.
    guided: it answers given a rationale. student: the small LM's input. `context_mode` picks all
    paragraphs or only supporting sentences; `max_context_chars` caps what the large LM reads."""

    instruction: str
    standard: str
    cot: str
    guided: str
    student: str
    context_mode: str = "all"
    max_context_chars: int | None = None
    student_titles: bool = False

    def __post_init__(self):
        for name in ("standard", "cot", "guided", "student"):
            template = getattr(self, name)
            needed = ["{question}", "{context}"] + (["{rationale}"] if name == "guided" else [])
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

    def guided_prompt(self, example: Example, rationale: str) -> str:
        return self._fill(self.guided, example, rationale=" ".join(rationale.split()))

    def student_input(self, example: Example) -> str:
        # One line, question first, so truncation to the student's max length cuts context, not
        # the question.
        context = self.context(example, paragraph_sep=" ", titles=self.student_titles)
        return self.student.format(question=example.question, context=context)

    def _fill(self, template: str, example: Example, rationale: str = "") -> str:
        return template.format(
            instruction=self.instruction,
            context=self.context(example),
            question=example.question,
            rationale=rationale,
        )


def render_paragraph(paragraph: Paragraph, title: bool = True) -> str:
    return f"[{paragraph.title}] {paragraph.text}" if title else paragraph.text
