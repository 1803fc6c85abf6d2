"""`simulated`: a deterministic stand-in for a frozen large LM on the synthetic multi-hop dataset.

It exists so that the whole method can be run and studied offline in minutes, with numbers that move
for the right reasons. It reads prompts built by `lmgcot.prompts` (sections `Context:`, `Question:`,
optional `Rationale:`; a prompt ending in "Let's think step by step." asks for a rationale) and parses
facts written with the sentence templates of `lmgcot.data.synthetic.RELATIONS`
(`lmgcot.llm.simulated_prompt` does the reading).

Its behaviour, by role (the world's parameters and why each has its value:
`conf/large_lm/simulated.yaml`):

* **CoT teacher** (prompt ends with the CoT trigger): writes the facts of its reasoning chain, then
  a conclusion ("So the answer is X."). With probability `error_rate` the chain goes through a wrong
  entity: a bridge question follows a distractor, a comparison states a wrong value; such
  rationales usually conclude wrongly, so answer filtering has work to do. The chain is written in
  one of many forms, each with a probability in `style` (`lmgcot.llm.simulated_writer`):
  paraphrases, either order, a restated question, connectives, both hops in one sentence, off-chain
  context facts, hedges, a missing hop, a self-contradiction, other conclusion phrases.
* **Answerer with a rationale** (`Rationale:` section): a reliable single-hop reader and an
  unreliable composer of hops (`lmgcot.llm.simulated_reader`). It trusts the facts a rationale
  states, even against the context: a right bridge entity turns two hops into a lookup, a wrong one
  leads it astray; misspelled names are matched to the closest context entity
  (`name_match_cutoff`). It reads the rationale as text, with the effects sized by `reader`: stated
  off-chain facts pull it away, conflicts with the context or within the rationale make it answer
  on its own, hedged facts are used less, long rationales lose a hop, and unreadable text is
  ignored. For hops the rationale does not give it, it answers without help.
* **Answerer without help** (standard prompting, or a rationale with nothing usable): it answers
  correctly with probability `unassisted_accuracy`, otherwise it takes a distractor's second hop or
  picks the wrong option. The draw depends on the question and context only, so a useless rationale
  scores exactly like no rationale.
* **Zero-shot-CoT's answer step** (`Answer:` section = the CoT trigger, the step-1 completion, then
  "Therefore, the answer is"): the answerer with that completion as its rationale, so it scores like
  the guided prompt with it.

`large_lm=simulated_v1` is the first world: one form, and a reader that only looks up names.

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
from collections.abc import Mapping
from dataclasses import asdict

from lmgcot.errors import BackendError
from lmgcot.llm.base import Completion, LargeLM, Request
from lmgcot.llm.simulated_prompt import read_prompt
from lmgcot.llm.simulated_reader import ReaderEffects, answer_with_rationale, unassisted_answer
from lmgcot.llm.simulated_reasoning import (
    is_reasoning_prompt,
    read_reasoning_prompt,
    respond_reasoning,
)
from lmgcot.llm.simulated_writer import RationaleStyle, write_rationale


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
        style: Mapping | None = None,
        reader: Mapping | None = None,
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
        self.style = RationaleStyle.from_mapping(style)
        self.reader = ReaderEffects.from_mapping(reader)

    def cache_identity(self) -> dict:
        return {
            "error_rate": self.error_rate,
            "unassisted_accuracy": self.unassisted_accuracy,
            "name_match_cutoff": self.name_match_cutoff,
            "seed": self.seed,
            "style": asdict(self.style),
            "reader": asdict(self.reader),
        }

    # Its token counts are its own: words of the prompt (below), so a plan's are exact.
    exact_token_counts = True

    def count_tokens(self, request: Request) -> int:
        return len(request.prompt.split())

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
            corrupt = self._uniform("teacher", prompt, salt) < self.error_rate
            return write_rationale(
                task, self.style, corrupt, lambda name: self._uniform("form", name, prompt, salt)
            )
        # Whether the model composes hops correctly on its own depends only on what it was asked.
        lucky = (
            self._uniform("unassisted", task.question, task.context_text) < self.unassisted_accuracy
        )
        if not task.rationale:
            return unassisted_answer(task, lucky)
        return answer_with_rationale(
            task,
            self.reader,
            self.name_match_cutoff,
            lucky,
            lambda name: self._uniform("reader", name, prompt),
        )

    def _uniform(self, *parts: str) -> float:
        digest = hashlib.sha256("\x1f".join((str(self.seed), *parts)).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
