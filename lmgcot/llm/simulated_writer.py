"""How the `simulated` large LM writes a chain-of-thought rationale for a synthetic question: the
facts of its reasoning chain (right, or through a wrong entity with probability `error_rate`), in
one of many forms, then its conclusion.

Large LMs do not write one template: they paraphrase, reorder, restate the question, frame steps
with connectives, compress two hops into one sentence, quote context facts that do not bear on the
question, hedge, skip a hop, and now and then contradict themselves. `RationaleStyle` holds the
probability of each of these forms; every draw is the caller's (a hash of the prompt and sample), so
greedy decoding gives one form per question and samples differ in form as well as in content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from lmgcot.data.synthetic import RELATIONS
from lmgcot.errors import BackendError
from lmgcot.llm.simulated_prompt import SyntheticQuestion, SyntheticTask
from lmgcot.llm.simulated_reader import decide

Draw = Callable[[str], float]  # a name -> a uniform number in [0, 1), fixed per prompt and sample

CONNECTIVES = ("First, ", "Then, ", "Next, ", "After that, ")
HEDGES = ("I think ", "Probably ", "It seems that ", "If I remember correctly, ")
RESTATEMENTS = ("The question asks: {q}", "We need to find out: {q}")
CONCLUSIONS = ("So the answer is {a}.", "Therefore, the answer is {a}.", "The answer is {a}.")
# Relative pronouns for a compressed second hop, by the entity type it refers back to.
_PRONOUN = {"person": "who", "studio": "which", "city": "which", "film": "which"}


@dataclass(frozen=True)
class RationaleStyle:
    """Probabilities of the forms the teacher writes in, each in [0, 1] (see large_lm.style in
    conf/large_lm/simulated.yaml for why each is there)."""

    paraphrase: float = 0.0  # per fact: another phrasing of its relation than the context's
    reverse_order: float = 0.0  # the chain's facts last hop first
    restate_question: float = 0.0  # open by restating the question
    connectives: float = 0.0  # "First, ... Then, ..." before the facts
    compressed: float = 0.0  # a two-fact chain in one sentence ("..., who was born in ...")
    distractor_facts: float = 0.0  # quote a context fact off the chain (again each time it holds)
    hedge: float = 0.0  # per fact: "I think ...", "Probably ..."
    missing_hop: float = 0.0  # leave one of the chain's facts out
    contradiction: float = 0.0  # state one chain fact a second time with another value
    other_conclusion: float = 0.0  # "Therefore, the answer is X." instead of "So the answer is X."

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= float(value) <= 1.0:
                raise BackendError(f"large_lm.style.{f.name}={value}: must be within [0, 1]")

    @classmethod
    def from_mapping(cls, values) -> RationaleStyle:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise BackendError(
                f"large_lm.style: unknown key(s) {unknown}; allowed: {sorted(known)}"
            )
        return cls(**{k: float(v) for k, v in (values or {}).items()})


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    obj: str
    hedge: str = ""  # the hedge it is stated with, if any
    phrasing: int = 0


def write_rationale(task: SyntheticTask, style: RationaleStyle, corrupt: bool, u: Draw) -> str:
    """The rationale and its conclusion ("So the answer is X.") for `task`'s question; `corrupt`
    takes the chain through a wrong entity (a distractor's bridge, a wrong value)."""
    q = task.question_kind
    chain, answer = _chain(task, q, corrupt, u)
    facts = list(chain)
    if len(facts) == 2 and u("missing_hop") < style.missing_hop:
        del facts[int(u("missing_which") * 2)]
    if u("reverse_order") < style.reverse_order:
        facts.reverse()
    if facts and u("contradiction") < style.contradiction:
        i = int(u("contradiction_which") * len(facts))
        wrong = task.wrong_value(facts[i].obj, u("contradiction_value"))
        if wrong != facts[i].obj:
            facts.insert(i + 1, Fact(facts[i].relation, facts[i].subject, wrong))
    for n, extra in enumerate(_distractors(task, chain)):
        if n >= 2 or u(f"distractor_{n}") >= style.distractor_facts:
            break
        facts.insert(int(u(f"distractor_at_{n}") * (len(facts) + 1)), extra)
    facts = [_styled(f, i, style, u) for i, f in enumerate(facts)]
    if len(facts) == 2 and u("compressed") < style.compressed and _compressible(*facts):
        sentences = [_compress(task, *facts)]
    else:
        sentences = [RELATIONS[f.relation].render(f.subject, f.obj, f.phrasing) for f in facts]
        sentences = [_hedged(s, f) for s, f in zip(sentences, facts)]
        if len(sentences) > 1 and u("connectives") < style.connectives:
            sentences = [_lead(CONNECTIVES[min(i, 3)], s) for i, s in enumerate(sentences)]
    if u("restate_question") < style.restate_question:
        pick = RESTATEMENTS[int(u("restate_which") * len(RESTATEMENTS))]
        sentences.insert(0, pick.format(q=task.question))
    conclusion = CONCLUSIONS[0]
    if u("other_conclusion") < style.other_conclusion:
        conclusion = CONCLUSIONS[1 + int(u("conclusion_which") * (len(CONCLUSIONS) - 1))]
    conclusion = conclusion.format(a=answer)
    return " ".join([*sentences, conclusion])


def _chain(
    task: SyntheticTask, q: SyntheticQuestion, corrupt: bool, u: Draw
) -> tuple[list[Fact], str]:
    """The facts the teacher reasons through, in reading order, and the answer they lead to."""
    if q.kind == "bridge":
        r1, r2 = q.relations
        start = q.entities[0]
        bridge = task.lookup(r1, start)
        if corrupt:
            bridge = task.other_subject(r2, bridge) or bridge
        answer = task.lookup(r2, bridge) if bridge else None
        facts = [Fact(r1, start, bridge or "someone unknown")]
        if answer:
            facts.append(Fact(r2, bridge, answer))
        return facts, answer or "unknown"
    values = [task.lookup(q.relations[0], e) for e in q.entities]
    if corrupt and all(values):
        i = int(u("which") * 2)
        values[i] = task.wrong_value(values[i], u("val"))
    answer = decide(q, values) or "unknown"
    # Facts in the order the context gives them, as a reader going through it would.
    pairs = sorted(zip(q.entities, values), key=lambda ev: task.position(ev[0]))
    return [Fact(q.relations[0], e, v or "unknown") for e, v in pairs], answer


def _distractors(task: SyntheticTask, chain: list[Fact]) -> list[Fact]:
    """Context facts about entities the chain does not go through, in context order."""
    on_chain = {f.subject for f in chain} | {f.obj for f in chain}
    return [Fact(r, s, o) for r, s, o in task.order if s not in on_chain and o not in on_chain]


def _styled(fact: Fact, i: int, style: RationaleStyle, u: Draw) -> Fact:
    phrasings = len(RELATIONS[fact.relation].phrasings)
    phrasing = 0
    if u(f"paraphrase_{i}") < style.paraphrase:
        phrasing = 1 + int(u(f"phrasing_{i}") * (phrasings - 1))
    hedge = ""
    if u(f"hedge_{i}") < style.hedge:
        hedge = HEDGES[int(u(f"hedge_which_{i}") * len(HEDGES))]
    return Fact(fact.relation, fact.subject, fact.obj, hedge, phrasing)


def _hedged(sentence: str, fact: Fact) -> str:
    return _lead(fact.hedge, sentence) if fact.hedge else sentence


def _lead(prefix: str, sentence: str) -> str:
    """`prefix` before a sentence; "The" (the only word a fact starts with that is not a name)
    lower-cased."""
    if sentence.startswith("The "):
        sentence = "the " + sentence[4:]
    return prefix + sentence


def _compressible(a: Fact, b: Fact) -> bool:
    return not a.hedge and not b.hedge


def _compress(task: SyntheticTask, a: Fact, b: Fact) -> str:
    """Two facts as one sentence: "A is a film directed by P, who was born in C." when the second
    is about the first's object, else "A ..., and B ..."."""
    first = RELATIONS[a.relation].render(a.subject, a.obj, a.phrasing).rstrip(".")
    template = RELATIONS[b.relation].phrasings[b.phrasing]
    pronoun = _PRONOUN.get(task.types.get(b.subject, ""), "which")
    if b.subject == a.obj and template.startswith("{s} "):
        rest = template[len("{s} ") :].format(o=b.obj)
        return f"{first}, {pronoun} {rest}"
    return _lead(f"{first}, and ", RELATIONS[b.relation].render(b.subject, b.obj, b.phrasing))
