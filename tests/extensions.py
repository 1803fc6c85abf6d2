"""A large-LM backend and a dataset written the way a user adds their own (a class each; their
YAML options are written by tests/test_extending.py): invented capitals, looked up by name."""

from __future__ import annotations

from lmgcot.data.base import QADataset
from lmgcot.data.example import Example, Splits
from lmgcot.llm.base import Completion, LargeLM, Request

CAPITALS = {
    "Veldoria": "Amsel",
    "Quorra": "Tessin",
    "Brindal": "Olmo",
    "Castrevia": "Pellar",
    "Dunmoor": "Rask",
    "Elvane": "Sorrow Gate",
}


class CapitalsQA(QADataset):
    """Where is the seat of government of an invented country."""

    name = "capitals"

    def load_splits(self) -> Splits:
        examples = [
            Example(
                id=f"cap-{i}",
                question=f"What is the capital of {country}?",
                answer=city,
                context=(),
            )
            for i, (country, city) in enumerate(sorted(CAPITALS.items()))
        ]
        return self.split(examples)


class AtlasLM(LargeLM):
    """Answers a capital question by looking the country up; anything else gets "unknown"."""

    backend = "atlas"

    def _complete(self, requests: list[Request]) -> list[Completion]:
        out = []
        for request in requests:
            hits = [city for country, city in CAPITALS.items() if country in request.prompt]
            out.append(Completion(text=hits[-1] if hits else "unknown", output_tokens=1))
        return out
