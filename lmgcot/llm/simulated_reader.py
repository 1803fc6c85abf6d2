"""How the `simulated` large LM answers a synthetic question given a rationale: a reliable
single-hop reader and an unreliable composer of hops, that a rationale can help and mislead.

It trusts the facts a rationale states (a right bridge entity turns two hops into a lookup, a wrong
one leads it astray), and reads the rationale as text, with the effects `ReaderEffects` sizes:

* facts the rationale states off its own chain (distractors) can pull it away, the more of them the
  likelier; a stated fact of the asked relation about another entity hands it a wrong answer;
* a rationale that states one fact two ways, or a fact the context states otherwise, can make it
  distrust the rationale and answer on its own;
* a hedged fact ("I think ...") is used less often than a plain one;
* in a long rationale it can lose a hop (the first fact of its chain);
* text in no phrasing it knows is ignored.

None of this reads the rationale-quality measures (`lmgcot.rewards`): the reader sees facts,
hedges and length, and what quality scores make of the same text is for the data to show.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields

from lmgcot.errors import BackendError
from lmgcot.llm.simulated_prompt import Statement, SyntheticQuestion, SyntheticTask, read_statements

Draw = Callable[[str], float]


@dataclass(frozen=True)
class ReaderEffects:
    """Sizes of the reader's effects (see large_lm.reader in conf/large_lm/simulated.yaml for why
    each is there). Shares are within [0, 1]; `length_free_words` is >= 0."""

    distractor_pull: float = 0.0  # per stated off-chain fact: the chance it leads the reader away
    context_conflict_fallback: float = 0.0  # a fact the context states otherwise: answer alone
    self_contradiction_fallback: float = 0.0  # one fact stated two ways: answer alone
    hedge_trust: float = 1.0  # the chance a hedged fact is used
    length_free_words: int = 10_000  # words read without losing track
    length_hop_loss: float = 0.0  # per word beyond them: the chance of losing a hop

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "length_free_words":
                if int(value) != value or value < 0:
                    raise BackendError(f"large_lm.reader.{f.name}={value}: must be an integer >= 0")
            elif not 0.0 <= float(value) <= 1.0:
                raise BackendError(f"large_lm.reader.{f.name}={value}: must be within [0, 1]")

    @classmethod
    def from_mapping(cls, values) -> ReaderEffects:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values or {}) - set(known))
        if unknown:
            raise BackendError(
                f"large_lm.reader: unknown key(s) {unknown}; allowed: {sorted(known)}"
            )
        return cls(**{k: v for k, v in (values or {}).items()})


def answer_with_rationale(
    task: SyntheticTask, effects: ReaderEffects, cutoff: float, lucky: bool, u: Draw
) -> str:
    """The answer to `task` given its rationale. `lucky`: whether, left to itself, the reader
    composes the hops right (a property of the question, so a useless rationale scores like none);
    `u` draws this prompt's effects."""
    q = task.question_kind
    statements = _snapped(task, read_statements(task.rationale or ""), cutoff)
    stated: dict[tuple[str, str], set[str]] = {}
    for st in statements:
        stated.setdefault((st.relation, st.subject), set()).add(st.obj)
    if any(len(objs) > 1 for objs in stated.values()):
        if u("self_contradiction") < effects.self_contradiction_fallback:
            return unassisted_answer(task, lucky)
    conflicts = [
        st for st in statements if task.lookup(st.relation, st.subject) not in (None, st.obj)
    ]
    if conflicts and u("context_conflict") < effects.context_conflict_fallback:
        return unassisted_answer(task, lucky)
    used = [
        st
        for i, st in enumerate(statements)
        if not st.hedged or u(f"hedge_{i}") < effects.hedge_trust
    ]
    facts: dict[tuple[str, str], str] = {}
    for st in used:
        facts.setdefault((st.relation, st.subject), st.obj)
    chain = _chain_keys(q, facts)
    words = len((task.rationale or "").split())
    lose = min(1.0, max(0, words - effects.length_free_words) * effects.length_hop_loss)
    if lose > 0 and u("length") < lose:
        facts.pop(chain[0], None)
    extras = [st for st in used if (st.relation, st.subject) not in chain]
    pull = 1.0 - (1.0 - effects.distractor_pull) ** len(extras)
    if extras and u("distractor") < pull:
        offered = [st.obj for st in extras if q.kind == "bridge" and st.relation == q.relations[1]]
        return offered[0] if offered else unassisted_answer(task, lucky)
    return _compose(task, facts, lucky)


def unassisted_answer(task: SyntheticTask, lucky: bool) -> str:
    """The reader's own answer, with no rationale: right when `lucky`, else what a reader who lost
    the chain says (a distractor's second hop, the other option)."""
    return _compose(task, {}, lucky)


def _compose(task: SyntheticTask, facts: dict[tuple[str, str], str], lucky: bool) -> str:
    """Stated facts where there are some, the reader's own composition for the other hops."""
    q = task.question_kind
    if q.kind == "bridge":
        r1, r2 = q.relations
        start = q.entities[0]
        bridge = facts.get((r1, start))
        if bridge is None:
            truth = task.lookup(r1, start)
            bridge = truth if lucky else (task.other_subject(r2, truth) or truth)
        answer = task.lookup(r2, bridge) if bridge else None
        if answer is None:
            answer = facts.get((r2, bridge))
        return answer or "unknown"
    values = [facts.get((q.relations[0], e)) for e in q.entities]
    if all(v is not None for v in values):
        return decide(q, values) or "unknown"
    truth = decide(q, [task.lookup(q.relations[0], e) for e in q.entities])
    if truth is None:
        return "unknown"
    return truth if lucky else _other_option(q, truth)


def _chain_keys(q: SyntheticQuestion, facts: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
    """The (relation, subject) facts the reader's chain goes through, first hop first: for a
    bridge question, the start's first hop and the second hop of the bridge the rationale names."""
    if q.kind == "bridge":
        r1, r2 = q.relations
        first = (r1, q.entities[0])
        return [first, (r2, facts[first])] if first in facts else [first]
    return [(q.relations[0], e) for e in q.entities]


def _snapped(task: SyntheticTask, statements: list[Statement], cutoff: float) -> list[Statement]:
    """Statements with names matched to the closest context entity, as a reader recovers from a
    typo; a statement about no entity of the context is dropped."""
    known = task.entities
    out = []
    for st in statements:
        subject = _closest(st.subject, known, cutoff)
        if subject is None:
            continue
        obj = st.obj if st.obj.isdigit() else (_closest(st.obj, known, cutoff) or st.obj)
        out.append(Statement(st.relation, subject, obj, st.hedged))
    return out


def _closest(name: str, known: list[str], cutoff: float) -> str | None:
    if name in known:
        return name
    match = difflib.get_close_matches(name, known, n=1, cutoff=cutoff)
    return match[0] if match else None


def decide(q: SyntheticQuestion, values: list[str | None]) -> str | None:
    if any(v is None for v in values):
        return None
    if q.kind == "yes_no":
        return "yes" if values[0] == values[1] else "no"
    try:
        a, b = (int(v) for v in values)  # type: ignore[arg-type]
    except ValueError:
        return None
    return q.entities[0] if a < b else q.entities[1]


def _other_option(q: SyntheticQuestion, truth: str) -> str:
    if q.kind == "yes_no":
        return "no" if truth == "yes" else "yes"
    return q.entities[1] if truth == q.entities[0] else q.entities[0]
