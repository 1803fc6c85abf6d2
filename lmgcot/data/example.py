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
    (bridge, comparison, inference, compositional, bridge_comparison, ...)."""

    id: str
    question: str
    answer: str
    context: tuple[Paragraph, ...]
    supporting_facts: tuple[SupportingFact, ...] = ()
    type: str = ""
    level: str | None = None
    aliases: tuple[str, ...] = ()
    evidences: tuple[tuple[str, str, str], ...] = field(default=())

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
