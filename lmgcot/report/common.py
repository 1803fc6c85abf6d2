"""What the comparison's modules share: the rationale sources it reads, the order of names, and
the queries on the comparison (the dict `compare.compare` returns) that tables and plots both make.
"""

from __future__ import annotations

from collections.abc import Iterable

# eval/quality/<source>.jsonl: the rationale sources the pipeline scores, in table order.
QUALITY_SOURCES = ("cot", "lm_guided_kd", "lm_guided_rl")
# The trade-off plot: the refined student against the distilled one it started from.
TRADEOFF_SOURCES = ("lm_guided_kd", "lm_guided_rl")
# Whose rationales the aspect tests read: the reward mix only acts on the refined student.
ASPECT_SOURCE = "lm_guided_rl"
FULL = "seeds and questions"  # what a usual interval resamples (see `estimates.estimate`)


def in_order(names: set[str], known: Iterable[str]) -> list[str]:
    """`names` in the order of `known` (the pipeline's methods, the scorer's aspects), unknown
    ones after them alphabetically."""
    rank = {name: i for i, name in enumerate(known)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def untouched_methods(report: dict) -> set[str]:
    """Methods whose scores equal the baseline's on every question of every configuration: those
    the swept settings do not reach (in a reward sweep, everything before refine)."""
    methods = {t["method"] for t in report["tests"]}
    return {
        m
        for m in methods
        if all(t["verdict"] == "identical" for t in report["tests"] if t["method"] == m)
    }


def tradeoff_points(report: dict) -> list[dict]:
    """The trade-off points `tradeoff.png` draws: those of the `TRADEOFF_SOURCES`."""
    return [p for p in report["tradeoff"] if p["source"] in TRADEOFF_SOURCES]


def quality_name(report: dict) -> str:
    """What the trade-off's rationale quality is: the chosen aspect, or the mean of them all."""
    if report["quality_aspect"]:
        return report["quality_aspect"]
    return f"mean of {len(report['aspects'])} aspects per question"


def config_label(config: str, report: dict) -> str:
    """A configuration's name in a plot, marked when it is the baseline."""
    return f"{config} (baseline)" if config == report["baseline"] else config
