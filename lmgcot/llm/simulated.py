"""`simulated`: a deterministic stand-in for a frozen large LM on the synthetic multi-hop dataset.

It exists so that the whole method can be run and studied offline in minutes, with numbers that move
for the right reasons. It reads prompts built by `lmgcot.prompts` (sections `Context:`, `Question:`,
optional `Rationale:`; a prompt ending in "Let's think step by step." asks for a rationale) and parses
facts written with the sentence templates of `lmgcot.data.synthetic.RELATIONS`
(`lmgcot.llm.simulated_prompt` does the reading).

Its behaviour, by role:

* **CoT teacher** (prompt ends with the CoT trigger): writes a rationale that restates the supporting
  facts of the reasoning chain, then "So the answer is X.". With probability `error_rate` the chain is
  corrupted: a bridge question follows a distractor entity, a comparison states a wrong value. Such
  rationales usually end in a wrong answer, so answer filtering has work to do. Comparison facts are
  stated in the order the context gives them.
* **Answerer with a rationale** (`Rationale:` section): it is a reliable single-hop reader but an
  unreliable composer of hops. Facts stated in the rationale are trusted, even when they contradict the
  context: a rationale naming the right bridge entity turns a two-hop question into a lookup (correct
  answer); naming a wrong one leads it astray. Misspelled names are matched to the closest context
  entity (`name_match_cutoff`), as a large LM would recover from a typo. For hops the rationale does not
  cover, it falls back to answering without help.
* **Answerer without help** (standard prompting, or a rationale with nothing usable): it answers
  correctly with probability `unassisted_accuracy`, otherwise it takes a distractor's second hop or
  picks the wrong option. The draw depends on the question and context only, so a useless rationale scores
  exactly like no rationale.
* **Zero-shot-CoT's answer step** (`Answer:` section = the CoT trigger, the step-1 completion, then
  "Therefore, the answer is"): the answerer with that completion as its rationale, so it scores like
  the guided prompt with it.

The generated reasoning tasks (dataset=last_letter, coin_flip) come in the reasoning preset's
`Q: ...\nA: ...` format, without a `Context:` section; such prompts are served by
`lmgcot.llm.simulated_reasoning`, which documents its roles there.

Randomness is a hash of (seed, prompt, temperature, sample index), so every answer is reproducible, a
temperature of 0 ignores the sample index, and samples at temperature > 0 differ. Token counts are
whitespace-separated words. Prompts it cannot read (another dataset, another template) raise a
`BackendError` naming what it could not find.
"""

from __future__ import annotations

import hashlib

from lmgcot.data.synthetic import RELATIONS
from lmgcot.errors import BackendError
from lmgcot.llm.base import Completion, LargeLM, Request
from lmgcot.llm.simulated_prompt import SyntheticQuestion, SyntheticTask, read_prompt
from lmgcot.llm.simulated_reasoning import (
    is_reasoning_prompt,
    read_reasoning_prompt,
    respond_reasoning,
)


class SimulatedLargeLM(LargeLM):
    backend = "simulated"

    def __init__(
        self,
        model: str = "simulated-v1",
        cache=None,
        batch_size: int = 256,
        error_rate: float = 0.2,
        unassisted_accuracy: float = 0.5,
        name_match_cutoff: float = 0.75,
        seed: int = 0,
    ):
        super().__init__(model, cache=cache, batch_size=batch_size)
        for key, value in (
            ("error_rate", error_rate),
            ("unassisted_accuracy", unassisted_accuracy),
            ("name_match_cutoff", name_match_cutoff),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise BackendError(f"large_lm.{key}={value}: must be within [0, 1]")
        self.error_rate = float(error_rate)
        self.unassisted_accuracy = float(unassisted_accuracy)
        self.name_match_cutoff = float(name_match_cutoff)
        self.seed = int(seed)

    def cache_identity(self) -> dict:
        return {
            "error_rate": self.error_rate,
            "unassisted_accuracy": self.unassisted_accuracy,
            "name_match_cutoff": self.name_match_cutoff,
            "seed": self.seed,
        }

    def check_prompt(self, prompt: str) -> None:
        if is_reasoning_prompt(prompt):
            read_reasoning_prompt(prompt)
        else:
            read_prompt(prompt)

    def _complete(self, requests: list[Request]) -> list[Completion]:
        out = []
        for r in requests:
            text = self.respond(r.prompt, r.params.temperature, r.sample_index)
            out.append(Completion(text, len(r.prompt.split()), len(text.split())))
        return out

    def respond(self, prompt: str, temperature: float = 0.0, sample_index: int = 0) -> str:
        salt = f"{temperature}:{sample_index}" if temperature > 0 else "greedy"
        if is_reasoning_prompt(prompt):  # last_letter / coin_flip: lmgcot.llm.simulated_reasoning
            return respond_reasoning(self, prompt, salt, greedy=temperature <= 0)
        task = read_prompt(prompt)
        if task.wants_rationale:
            draw = self._uniform("teacher", prompt, salt)
            return self._write_rationale(task, corrupt=draw < self.error_rate)
        return self._answer(task, salt)

    # -- roles ---------------------------------------------------------------------------------

    def _write_rationale(self, task: SyntheticTask, corrupt: bool) -> str:
        q = task.question_kind
        if q.kind == "bridge":
            start = q.entities[0]
            bridge = task.lookup(q.relations[0], start)
            if corrupt:
                bridge = task.other_subject(q.relations[1], bridge) or bridge
            answer = task.lookup(q.relations[1], bridge) if bridge else None
            facts = [RELATIONS[q.relations[0]].render(start, bridge or "someone unknown")]
            if answer:
                facts.append(RELATIONS[q.relations[1]].render(bridge, answer))
            return " ".join(facts) + f" So the answer is {answer or 'unknown'}."
        values = [task.lookup(q.relations[0], e) for e in q.entities]
        if corrupt and all(values):
            i = int(self._uniform("which", task.question) * 2)
            values[i] = task.wrong_value(values[i], self._uniform("val", task.question))
        answer = _decide(q, values) or "unknown"
        # Facts in the order the context gives them, as a reader going through it would.
        pairs = sorted(zip(q.entities, values), key=lambda ev: task.position(ev[0]))
        facts = [RELATIONS[q.relations[0]].render(e, v or "unknown") for e, v in pairs]
        return " ".join(facts) + f" So the answer is {answer}."

    def _answer(self, task: SyntheticTask, salt: str) -> str:
        q = task.question_kind
        stated = task.rationale_facts(self.name_match_cutoff)
        # Whether the model composes hops correctly on its own depends only on what it was asked.
        lucky = (
            self._uniform("unassisted", task.question, task.context_text) < self.unassisted_accuracy
        )
        if q.kind == "bridge":
            r1, r2 = q.relations
            start = q.entities[0]
            bridge = stated.get((r1, start))
            if bridge is None:
                truth = task.lookup(r1, start)
                bridge = truth if lucky else (task.other_subject(r2, truth) or truth)
            answer = task.lookup(r2, bridge) if bridge else None
            if answer is None:
                answer = stated.get((r2, bridge))
            return answer or "unknown"
        values = [stated.get((q.relations[0], e)) for e in q.entities]
        if all(v is not None for v in values):
            return _decide(q, values) or "unknown"
        truth = _decide(q, [task.lookup(q.relations[0], e) for e in q.entities])
        if truth is None:
            return "unknown"
        return truth if lucky else _other_option(q, truth)

    def _uniform(self, *parts: str) -> float:
        digest = hashlib.sha256("\x1f".join((str(self.seed), *parts)).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


def _decide(q: SyntheticQuestion, values: list[str | None]) -> str | None:
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
