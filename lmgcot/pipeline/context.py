"""What the stages share during a run, and the results.json they add up to."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from lmgcot.artifacts import RunDir
from lmgcot.data.example import Splits
from lmgcot.eval.methods import METHODS
from lmgcot.llm.base import LargeLM
from lmgcot.prompts import PromptTemplates
from lmgcot.utils.io import read_json
from lmgcot.utils.versions import package_versions

log = logging.getLogger("lmgcot")

SUMMARY_STAGES = ("teacher", "distill", "refine")


@dataclass
class RunContext:
    cfg: DictConfig
    run: RunDir
    dataset_name: str
    splits: Splits
    prompts: PromptTemplates
    large_lm: LargeLM
    loggers: list
    timings: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)
    methods: dict[str, dict] = field(default_factory=dict)
    quality: dict[str, dict] = field(default_factory=dict)
    # Fingerprint of the artifact behind each number: methods, rationale-quality sources, stages.
    provenance: dict[str, dict] = field(
        default_factory=lambda: {"methods": {}, "rationale_quality": {}}
    )

    def results(self, expected: dict[str, dict]) -> dict:
        """This run's numbers over the run directory's earlier ones. An earlier method or quality
        row is kept only where its recorded fingerprint is what this config would give it
        (`expected`), so that every row of the file comes from the same configuration."""
        previous = self._previous_results()
        prov = previous.get("provenance", {})
        kept = {
            part: self._kept(previous, prov, part, expected)
            for part in ("methods", "rationale_quality")
        }
        methods = {**kept["methods"][0], **self.methods}
        stage_fps = {s: self.run.stage(s).fingerprint for s in SUMMARY_STAGES}
        return {
            "methods": {m: methods[m] for m in METHODS if m in methods},
            "rationale_quality": {**kept["rationale_quality"][0], **self.quality},
            "llm": self.large_lm.usage.as_dict(),
            **{s: self.summaries.get(s) or previous.get(s, {}) for s in SUMMARY_STAGES},
            "timings_s": {**previous.get("timings_s", {}), **self.timings},
            "setup": {
                "dataset": self.dataset_name,
                "student": self.cfg.student.get("name"),
                "objective": self.cfg.distill.get("objective", "rationale"),
                "large_lm": f"{self.large_lm.backend}:{self.large_lm.model}",
                "seed": int(self.cfg.seed),
                "n": {split: len(xs) for split, xs in self.splits.items()},
                "threads": torch.get_num_threads(),
            },
            "provenance": {
                "methods": {**kept["methods"][1], **self.provenance["methods"]},
                "rationale_quality": {
                    **kept["rationale_quality"][1],
                    **self.provenance["rationale_quality"],
                },
                "stages": {s: fp for s, fp in stage_fps.items() if fp},
            },
            "versions": package_versions(),
            "run_dir": str(self.run.root),
        }

    def _kept(self, previous: dict, prov: dict, part: str, expected: dict) -> tuple[dict, dict]:
        rows, fps = previous.get(part, {}), prov.get(part, {})
        keep = {
            name: row
            for name, row in rows.items()
            if fps.get(name) is not None and fps.get(name) == expected[part].get(name)
        }
        dropped = sorted(set(rows) - set(keep) - set(getattr(self, _OWN[part])))
        if dropped:
            log.warning(
                "results.json: dropped %s %s: made under another configuration than this run's",
                part,
                ", ".join(dropped),
            )
        return keep, {name: fps[name] for name in keep}

    def _previous_results(self) -> dict:
        path = self.run.results
        return read_json(path) if path.exists() else {}


_OWN = {"methods": "methods", "rationale_quality": "quality"}
