"""How the `simulated` large LM (`lmgcot.llm.simulated`) reads a synthetic-QA prompt: its sections,
the facts in its context and rationale (sentences in the templates of
`lmgcot.data.synthetic.RELATIONS`), and the question's template. Prompts it cannot read raise
`BackendError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmgcot.data.synthetic import BRIDGES, COMPARISONS, RELATION_TYPES, RELATIONS, YES_NO
from lmgcot.errors import BackendError
from lmgcot.prompts import ANSWER_TRIGGER, COT_TRIGGER, JUDGE_PREFIX

_SECTION = re.compile(r"^(Context|Question|Rationale|Answer):[ \t]*", re.MULTILINE)
_PARAGRAPH = re.compile(r"^\[(?P<title>[^\]]+)\]\s*(?P<body>.*)$")


@dataclass(frozen=True)
class SyntheticQuestion:
    kind: str  # bridge | comparison | yes_no
    relations: tuple[str, ...]
    entities: tuple[str, ...]


def _question_patterns():
    pats = []
    for template, r1, r2 in BRIDGES:
        pats.append(("bridge", (r1, r2), template))
    for template, rel in COMPARISONS:
        pats.append(("comparison", (rel,), template))
    for template, rel in YES_NO:
        pats.append(("yes_no", (rel,), template))
    compiled = []
    for kind, rels, template in pats:
        rx = re.escape(template).replace(r"\{x\}", "(?P<x>.+?)").replace(r"\{y\}", "(?P<y>.+?)")
        compiled.append((kind, rels, re.compile("^" + rx + "$")))
    return compiled


_QUESTIONS = _question_patterns()


class SyntheticTask:
    """A parsed prompt: the facts in its context, the question, and any rationale."""

    def __init__(
        self, context_text: str, question: str, rationale: str | None, wants_rationale: bool
    ):
        self.context_text = context_text
        self.question = question
        self.rationale = rationale
        self.wants_rationale = wants_rationale
        self.facts: dict[tuple[str, str], str] = {}
        self.order: list[tuple[str, str, str]] = []
        for line in context_text.splitlines():
            m = _PARAGRAPH.match(line.strip())
            body = m.group("body") if m else line
            for rel, s, o in parse_facts(body):
                self.facts.setdefault((rel, s), o)
                self.order.append((rel, s, o))
        self.types: dict[str, str] = {}
        for rel, s, o in self.order:
            s_type, o_type = RELATION_TYPES[rel]
            self.types.setdefault(s, s_type)
            self.types.setdefault(o, o_type)
        self.question_kind = _parse_question(question)
        if not self.facts:
            raise BackendError(
                "simulated large LM: no fact in the prompt's context follows the synthetic dataset's "
                "templates; it can only serve dataset=synthetic"
            )

    @property
    def entities(self) -> list[str]:
        seen = {}
        for _, s, o in self.order:
            seen.setdefault(s, None)
            seen.setdefault(o, None)
        return list(seen)

    def lookup(self, relation: str, subject: str | None) -> str | None:
        return self.facts.get((relation, subject)) if subject else None

    def other_subject(self, relation: str, subject: str | None) -> str | None:
        """Another entity the context states `relation` for: where a lost reader ends up."""
        for rel, s, _ in self.order:
            if rel == relation and s != subject:
                return s
        return None

    def position(self, entity: str) -> int:
        for i, (_, s, _) in enumerate(self.order):
            if s == entity:
                return i
        return len(self.order)

    def wrong_value(self, value: str, u: float) -> str:
        """A plausible wrong value: another year, or another context entity of the same type."""
        if value.isdigit():
            return str(int(value) + (1 if u < 0.5 else -1) * (10 + int(u * 40)))
        kind = self.types.get(value)
        others = [e for e, t in self.types.items() if t == kind and e != value]
        return others[int(u * len(others))] if others else value


def read_prompt(prompt: str) -> SyntheticTask:
    if prompt.startswith(JUDGE_PREFIX):
        raise BackendError(
            "the simulated large LM cannot rate rationales (reward.scorer=judge); use "
            "reward.scorer=auto, or a real large_lm (hf, anthropic, openai) as the judge"
        )
    """Split a prompt into its sections; refuse prompts this simulator cannot read."""
    sections: dict[str, str] = {}
    marks = list(_SECTION.finditer(prompt))
    for m, nxt in zip(marks, marks[1:] + [None]):
        end = nxt.start() if nxt else len(prompt)
        sections.setdefault(m.group(1), prompt[m.end() : end].strip())
    for needed in ("Context", "Question"):
        if needed not in sections:
            raise BackendError(f"simulated large LM: the prompt has no '{needed}:' section")
    wants_rationale = prompt.rstrip().endswith(COT_TRIGGER)
    rationale = sections.get("Rationale")
    answer = sections.get("Answer", "")
    if rationale is None and answer.startswith(COT_TRIGGER) and answer.endswith(ANSWER_TRIGGER):
        # Zero-shot-CoT's answer step: the step-1 completion between the two triggers is read as
        # a rationale, so this step scores like the guided prompt with that rationale.
        rationale = answer[len(COT_TRIGGER) : -len(ANSWER_TRIGGER)].strip()
    return SyntheticTask(sections["Context"], sections["Question"], rationale, wants_rationale)


@dataclass(frozen=True)
class Statement:
    """A fact a text states: (relation, subject, object), and whether it was hedged ("I think ...")."""

    relation: str
    subject: str
    obj: str
    hedged: bool = False

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.relation, self.subject, self.obj)


# Words that frame a sentence without changing its fact: a reader skips them.
_MARKERS = re.compile(
    r"^(?:first|then|next|after that|also|and|so|finally|however|but|moreover|in addition)"
    r"\s*,?\s+",
    re.IGNORECASE,
)
# Words that make a fact less certain: a reader notes the doubt.
_HEDGES = re.compile(
    r"^(?:i think|probably|perhaps|it seems that|if i remember correctly|i believe)\s*,?\s+",
    re.IGNORECASE,
)
# Where one sentence states two facts: "A ..., and B ...", "A ... B, who ...".
_CLAUSE = re.compile(r",\s+(and|who|which|while)\s+")
_RELATION_PATTERNS = [(rel.name, pattern) for rel in RELATIONS.values() for pattern in rel.patterns]


def parse_facts(text: str) -> list[tuple[str, str, str]]:
    """(relation, subject, object) for every fact the text states in a synthetic phrasing."""
    return [st.triple for st in read_statements(text)]


def read_statements(text: str) -> list[Statement]:
    """Every fact `text` states in one of the relations' phrasings, in order, the way a reader
    takes it in: discourse markers ("First,", "Then,") skipped, hedges noted, a sentence of two
    clauses read as two facts ("X is a film directed by P, who was born in C."), a relative
    pronoun standing for the object before it. Questions, and sentences in no known phrasing, are
    ignored."""
    out: list[Statement] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        sentence = sentence.strip()
        if sentence.endswith("?"):  # a question states nothing
            continue
        hedged = False
        while True:
            m = _MARKERS.match(sentence) or _HEDGES.match(sentence)
            if not m:
                break
            hedged = hedged or m.re is _HEDGES
            sentence = sentence[m.end() :]
        parts = _CLAUSE.split(sentence)
        clauses, joins = parts[0::2], [None, *parts[1::2]]
        previous_object = None
        for clause, join in zip(clauses, joins):
            clause = clause.strip()
            if join in ("who", "which") and previous_object:
                clause = f"{previous_object} {clause}"
            elif clause:
                clause = clause[0].upper() + clause[1:]
            fact = _match_fact(clause)
            if fact is None:
                previous_object = None
                continue
            out.append(Statement(*fact, hedged=hedged))
            previous_object = fact[2]
    return out


def _match_fact(clause: str) -> tuple[str, str, str] | None:
    """The reading that leaves the fewest characters to the names: the phrasing that explains
    most of the clause ("A was founded by B." is founded_by(A, B), not "{o} founded {s}")."""
    best = None
    for rel, pattern in _RELATION_PATTERNS:
        m = pattern.match(clause)
        if m:
            s, o = m.group("s").strip(), m.group("o").strip().rstrip(".")
            if s and o and (best is None or len(s) + len(o) < len(best[1]) + len(best[2])):
                best = (rel, s, o)
    return best


def _parse_question(question: str) -> SyntheticQuestion:
    for kind, rels, rx in _QUESTIONS:
        m = rx.match(question.strip())
        if m:
            ents = tuple(v for v in (m.groupdict().get("x"), m.groupdict().get("y")) if v)
            return SyntheticQuestion(kind, rels, ents)
    raise BackendError(
        f"simulated large LM: cannot read the question {question[:80]!r}; it only understands the "
        "synthetic dataset's question templates (dataset=synthetic)"
    )
