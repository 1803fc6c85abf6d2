"""What the comparison measures on a run (`Measure`: a method's EM or F1, a source's rationale
quality) and its bootstrap estimate over a configuration's runs, alone or paired with the
baseline's."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lmgcot.report.common import FULL
from lmgcot.report.runs import Run
from lmgcot.report.stats import bootstrap_mean, paired_bootstrap


@dataclass(frozen=True)
class Measure:
    """A number measured on a run: per test question when the run has the per-question file
    (`per_question` returns None otherwise), and the run's summary in `results.json` (`summary`,
    None when the run lacks it). `name` seeds its bootstrap (see `estimate`)."""

    name: str
    per_question: Callable[[Run], dict[str, float] | None]
    summary: Callable[[Run], float | None]


def metric_measure(method: str, metric: str) -> Measure:
    """A method's EM or F1."""
    return Measure(
        f"{method} {metric}",
        lambda run: (
            {q: s[metric] for q, s in run.scores[method].items()} if method in run.scores else None
        ),
        lambda run: run.results["methods"].get(method, {}).get(metric),
    )


def quality_measure(source: str, aspects: tuple[str, ...]) -> Measure:
    """The mean of `aspects` for a source's rationales: per question over the aspects it has a
    score for (a question with none is left out); per run over the aspects `results.json` has."""

    def mean(scores: dict[str, float]) -> float | None:
        values = [scores[a] for a in aspects if scores.get(a) is not None]
        return sum(values) / len(values) if values else None  # not np.mean: called per question

    def per_question(run: Run) -> dict[str, float] | None:
        if source not in run.quality:
            return None
        means = {q: mean(s) for q, s in run.quality[source].items()}
        return {q: v for q, v in means.items() if v is not None}

    return Measure(
        f"{source} quality {'+'.join(aspects)}",
        per_question,
        lambda run: mean(run.results.get("rationale_quality", {}).get(source, {})),
    )


def estimate(
    group: list[Run],
    measure: Measure,
    base_by_seed: dict[int, Run] | None,
    n_boot: int,
    seed: int,
) -> dict:
    """The bootstrap estimate of `measure` over a configuration's runs, or, with `base_by_seed`,
    of its difference to the baseline run of the same seed on the questions both have.

    The bootstrap's generator is seeded by `seed` and the measure's name, not the configuration:
    configurations with the very same scores (methods a sweep does not touch) get the very same
    interval instead of ones that differ by resampling noise.

    Uses per-question values when every run that has the measure has them, else one summary value
    per run (seeds resampled only; no interval from one). Keys: mean, low, high, seeds (0: nothing
    to estimate), resampled; with a baseline also p and verdict.
    """
    paired = base_by_seed is not None
    samples, per_question = _samples(group, measure, base_by_seed)
    est = {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "seeds": len(samples)}
    est["resampled"] = _resampled(len(samples), per_question)
    if paired:
        est.update(p=float("nan"), verdict="n/a")
    if not samples:
        return est
    key = f"{measure.name} {'paired' if paired else 'alone'}"
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if paired:
        est["mean"], est["low"], est["high"], est["p"] = paired_bootstrap(samples, n_boot, rng)
    else:
        est["mean"], est["low"], est["high"] = bootstrap_mean(samples, n_boot, rng)
    if not per_question and len(samples) == 1:  # one run's summary: nothing to resample
        est.update(low=float("nan"), high=float("nan"))
        if paired:
            est["p"] = float("nan")
    if paired:
        same = per_question and not any(s.any() for s in samples)
        est["verdict"] = _verdict(est["mean"], est["low"], est["high"], same)
    return est


# -- helpers ---------------------------------------------------------------------------------------


def _samples(
    group: list[Run], measure: Measure, base_by_seed: dict[int, Run] | None
) -> tuple[list[np.ndarray], bool]:
    """(an array per run, per_question): the runs' per-question values (questions sorted by id)
    when every run that has the measure has them, else each run's summary as a 1-array. With
    `base_by_seed`, differences to the baseline run of the same seed (runs without one left out),
    on the questions both have."""
    by_question, summaries = [], []
    for run in group:
        base = None if base_by_seed is None else base_by_seed.get(run.seed)
        if base_by_seed is not None and base is None:
            continue
        values = measure.per_question(run)
        if base is not None and values:
            ref = measure.per_question(base) or {}
            values = {q: v - ref[q] for q, v in values.items() if q in ref}
        if values:
            by_question.append(np.array([values[q] for q in sorted(values)]))
        value = measure.summary(run)
        if base is not None and value is not None:
            ref_value = measure.summary(base)
            value = None if ref_value is None else value - ref_value
        if value is not None:
            summaries.append(np.array([value]))
    per_question = bool(by_question) and len(by_question) >= len(summaries)
    return (by_question if per_question else summaries), per_question


def _resampled(seeds: int, per_question: bool) -> str:
    """What an interval over `seeds` runs resampled."""
    if per_question:
        return FULL if seeds > 1 else "1 seed: questions only"
    return "seeds only: run means" if seeds > 1 else "1 seed: run means, no interval"


def _verdict(diff: float, low: float, high: float, identical: bool) -> str:
    """A paired difference's verdict: identical (every difference 0), n/a (no interval), within
    noise (the interval contains 0), else better or worse."""
    if identical:
        return "identical"
    if np.isnan(low):
        return "n/a"
    if low <= 0 <= high:
        return "within noise"
    return "better" if diff > 0 else "worse"
