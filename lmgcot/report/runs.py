"""Loading a sweep's runs: `results.json`, the Hydra overrides that name a run's configuration,
and the per-question score files under `eval/`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmgcot.artifacts import RESULTS, RunDir
from lmgcot.report.common import in_order
from lmgcot.rewards.aspects import ASPECTS
from lmgcot.rewards.wellformed import WELLFORMED


@dataclass
class Run:
    """One run of a sweep: a directory holding `results.json`."""

    path: Path
    config: str  # the overrides without the seed: what identifies a configuration
    seed: int
    results: dict
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # scores[method][question id] = {"em": float, "f1": float}
    quality: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # quality[source][question id] = {aspect: score}, null scores left out


class CompareError(Exception):
    """A problem with the sweep directory or the arguments; `lmgcot-compare` prints it as one
    line and exits with status 2."""


def load_runs(root: Path) -> list[Run]:
    """Every run below `root` (a directory holding `results.json`).

    A run's configuration is its overrides (`.hydra/overrides.yaml`) without the seed and Hydra's
    own, less those every run shares; "(all runs)" when nothing is left. `scores` holds the
    methods with `eval/<method>.jsonl`, `quality` the sources with `eval/quality/<source>.jsonl`.
    CompareError when there is no run or a file is malformed.
    """
    runs = [_load_run(results_file) for results_file in sorted(root.rglob(RESULTS))]
    if not runs:
        raise CompareError(f"{root}: no results.json below it")
    # A configuration is named by the overrides that vary across the sweep.
    shared = set.intersection(*(set(r.config.split()) for r in runs))
    for r in runs:
        r.config = " ".join(o for o in r.config.split() if o not in shared) or "(all runs)"
    return runs


def run_aspects(runs: list[Run]) -> list[str]:
    """The aspects any run scored (per question or in results.json), in the scorer's order. The
    well-formedness gate is not one: it already multiplies every aspect."""
    names = {a for r in runs for rows in r.quality.values() for s in rows.values() for a in s}
    for r in runs:
        for means in r.results.get("rationale_quality", {}).values():
            names |= {a for a, v in means.items() if v is not None}
    return in_order(names - {WELLFORMED}, ASPECTS)


# -- helpers ---------------------------------------------------------------------------------------


def _load_run(results_file: Path) -> Run:
    """The run of a `results.json`, its configuration still every override but the seed's."""
    run_dir = results_file.parent
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CompareError(f"{results_file}: not valid JSON ({err.msg})") from None
    if "methods" not in results:
        raise CompareError(f"{results_file}: no 'methods' key; not an lmgcot results file")
    overrides = [o for o in _overrides(run_dir) if not o.startswith(("seed=", "hydra."))]
    seed = results.get("setup", {}).get("seed", 0)
    run = Run(run_dir, " ".join(overrides), int(seed), results)
    layout = RunDir(run_dir)
    for method in results["methods"]:
        preds = layout.eval.predictions(method)
        if preds.exists():
            rows = _read_jsonl(preds, ("id", "em", "f1"))
            run.scores[method] = {r["id"]: {"em": r["em"], "f1": r["f1"]} for r in rows}
    for path in layout.eval.quality_files():
        run.quality[path.stem] = _aspect_scores(path)
    return run


def _overrides(run_dir: Path) -> list[str]:
    """The run's Hydra overrides, as strings; none without `.hydra/overrides.yaml`."""
    path = RunDir(run_dir).overrides
    if not path.exists():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def _read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The rows of a JSONL file, each an object with `keys`; CompareError naming the line else."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CompareError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise CompareError(f"{path}:{number}: no {', '.join(map(repr, missing))}")
        rows.append(row)
    return rows


def _aspect_scores(path: Path) -> dict[str, dict[str, float]]:
    """eval/quality/<source>.jsonl as {question id: {aspect: score}}, null scores left out."""
    out = {}
    for row in _read_jsonl(path, ("id",)):
        scores = {k: v for k, v in row.items() if k != "id" and v is not None}
        for name, value in scores.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CompareError(f"{path}: question {row['id']}: {name} is not a number")
        out[row["id"]] = {k: float(v) for k, v in scores.items()}
    return out
