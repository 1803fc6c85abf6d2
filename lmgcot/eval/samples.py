"""Sampled student outputs, generated once and shared: self-consistency, best-of-k, weighted
self-consistency and the oracle all read the same k samples of a student, so a run evaluating
several of them (or a later `stages=[evaluate]` adding one) never generates them twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from lmgcot.utils.io import read_jsonl, write_jsonl


class SampleStore:
    """One student's sampled outputs, keyed by the inputs and the sampling settings.

    `identity` names the student (its stage's fingerprint); `folder` keeps the samples on disk
    across invocations on the same run directory (None: this process only). `generated` counts
    the sets actually generated, for tests and logs.
    """

    def __init__(self, folder: Path | None, identity: str):
        self.folder = Path(folder) if folder is not None else None
        self.identity = identity
        self.generated = 0
        self._memo: dict[str, list[list[str]]] = {}

    def get(
        self, inputs: list[str], settings: dict, generate: Callable[[], list[list[str]]]
    ) -> list[list[str]]:
        """The outputs for `inputs` sampled under `settings`: from memory, the run directory, or
        `generate()` (then kept in both)."""
        key = self.key(inputs, settings)
        if key in self._memo:
            return self._memo[key]
        path = self.folder / f"{key}.jsonl" if self.folder is not None else None
        outputs = None
        if path is not None and path.exists():
            rows = read_jsonl(path)
            # A file cut short by a killed run is made again, not trusted.
            if len(rows) == len(inputs):
                outputs = [list(r["outputs"]) for r in rows]
        if outputs is None:
            outputs = generate()
            self.generated += 1
            if path is not None:
                write_jsonl(path, ({"outputs": o} for o in outputs))
        self._memo[key] = outputs
        return outputs

    def key(self, inputs: list[str], settings: dict) -> str:
        h = hashlib.sha256(self.identity.encode())
        h.update(json.dumps(settings, sort_keys=True).encode())
        for text in inputs:
            h.update(b"\x1f" + text.encode())
        return h.hexdigest()[:16]
