"""The one record every dataset produces: a multi-hop question over titled paragraphs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(s.strip() for s in self.sentences if s.strip())


@dataclass(frozen=True)
class SupportingFact:
    title: str
    sent_id: int


@dataclass(frozen=True)
class Example:
    """One question. `aliases` are extra gold answers (2WikiMultiHopQA); `type` is the question type
    (bridge, comparison, inference, compositional, bridge_comparison, last_letter, ...).

    `answer_type` says how answers are read and compared (`lmgcot.answers.typed`): `string`
    (the QA datasets: EM/F1 after normalisation), `number`, `yes_no` or `choice`. Reasoning tasks
    have no `context`. `rationale` is a gold rationale where the dataset has one (GSM8K solutions,
    StrategyQA facts, the generated tasks): few-shot CoT exemplars are drawn from those.
    """

    id: str
    question: str
    answer: str
    context: tuple[Paragraph, ...]
    supporting_facts: tuple[SupportingFact, ...] = ()
    type: str = ""
    level: str | None = None
    aliases: tuple[str, ...] = ()
    evidences: tuple[tuple[str, str, str], ...] = field(default=())
    answer_type: str = "string"
    rationale: str | None = None

    @property
    def gold_answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)

    def supporting_paragraphs(self) -> tuple[Paragraph, ...]:
        """Only the supporting sentences, grouped by paragraph in context order."""
        wanted: dict[str, set[int]] = {}
        for fact in self.supporting_facts:
            wanted.setdefault(fact.title, set()).add(fact.sent_id)
        out = []
        for para in self.context:
            ids = wanted.get(para.title)
            if ids:
                sents = tuple(s for i, s in enumerate(para.sentences) if i in ids)
                out.append(Paragraph(para.title, sents))
        return tuple(out)


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))
