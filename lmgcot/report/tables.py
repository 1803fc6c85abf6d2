"""The comparison as text: `comparison.md` (markdown tables) and `comparison.csv`."""

from __future__ import annotations

import csv
import io

import numpy as np

from lmgcot.eval.methods import METHODS
from lmgcot.report.common import (
    ASPECT_SOURCE,
    FULL,
    in_order,
    quality_name,
    tradeoff_points,
    untouched_methods,
)
from lmgcot.report.stats import ALPHA
from lmgcot.rewards.aspects import ASPECTS

# Fluency is a likelihood under a reference model, and each run's reference is its own distilled
# student: the very same rationales (the large LM's own CoT, say) score differently in runs whose
# distilled students differ. Said where it is shown, rather than read as a bug.
FLUENCY_NOTE = (
    "fluency is exp(mean token log-prob) under each run's own distilled student (refine's "
    "reference), so the same rationales (e.g. `cot`'s) score differently in runs whose distilled "
    "students differ (another seed, teacher or distillation setting): compare fluency between "
    "sources of one run, or between runs that share their distilled student."
)


def to_markdown(report: dict) -> str:
    """comparison.md: the statistics note, then the tests against the baseline (the answers), the
    trade-off, and the full EM/F1 and quality tables."""
    out = io.StringIO()
    out.write("# Comparison\n\n")
    out.write(
        f"Intervals are 95% percentile intervals of a two-stage bootstrap ({report['n_boot']} "
        "resamples): seeds drawn with replacement, then test questions with replacement within "
        "each drawn seed, so they carry the spread between seeds as well as the test set's. "
        "Means are over seeds of each seed's question mean. The seeds column says when an "
        "interval resampled less (1 seed: questions only; runs without per-question scores: "
        "their means). Plots: [comparison.png](comparison.png)"
        + (", [tradeoff.png](tradeoff.png)" if tradeoff_points(report) else "")
        + ".\n\n"
    )
    _write_em_tests(out, report)
    _write_aspect_tests(out, report)
    _write_tradeoff(out, report)
    _write_em_f1(out, report)
    _write_quality(out, report)
    return out.getvalue()


def to_csv(report: dict) -> str:
    """comparison.csv: a row per (configuration, method) with EM/F1, the rationale quality of the
    method's rationales, and the paired differences to the baseline (EM, and every aspect on the
    `lm_guided_rl` row); cells that do not apply are empty."""
    out = io.StringIO()
    keys = ["config", "method", "seeds", "em", "em_low", "em_high", "f1", "f1_low", "f1_high"]
    test_keys = ["em_diff_vs_baseline", "em_diff_low", "em_diff_high", "p_vs_baseline"]
    quality_keys = ["quality", "quality_low", "quality_high"]
    aspect_keys = [f"{a}_{k}" for a in report["aspects"] for k in ("diff_vs_baseline", "p")]
    fields = [*keys, "resampled", *test_keys, *quality_keys, *aspect_keys]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    tests = {(t["config"], t["method"]): t for t in report["tests"]}
    points = {(t["config"], t["source"]): t for t in report["tradeoff"]}
    for r in report["rows"]:
        row = {k: r[k] for k in [*keys, "resampled"]}
        if t := tests.get((r["config"], r["method"])):
            row.update(zip(test_keys, (t["mean"], t["low"], t["high"], t["p"]), strict=True))
        if q := points.get((r["config"], r["method"])):
            row.update(zip(quality_keys, (q["mean"], q["low"], q["high"]), strict=True))
        if r["method"] == ASPECT_SOURCE:
            for t in (t for t in report["aspect_tests"] if t["config"] == r["config"]):
                row[f"{t['aspect']}_diff_vs_baseline"] = t["mean"]
                row[f"{t['aspect']}_p"] = t["p"]
        writer.writerow(row)
    return out.getvalue()


# -- the markdown sections -------------------------------------------------------------------------


def _write_em_tests(out: io.StringIO, report: dict) -> None:
    """The paired EM differences to the baseline, untouched methods named instead of listed."""
    out.write("## EM against the baseline\n\n")
    if report["baseline"] is None:
        out.write("No baseline configuration (none has `reward=task`; pass --baseline).\n")
        return
    if not report["tests"]:
        out.write(f"Baseline `{report['baseline']}`: no other configuration shares its seeds.\n")
        return
    untouched = untouched_methods(report)
    out.write(
        f"Baseline `{report['baseline']}`. EM difference on the same questions and seeds, paired "
        "bootstrap; 'within noise' means the 95% interval contains 0.\n"
    )
    if untouched:
        out.write(
            f"The same scores as the baseline on every question in every configuration (not in "
            f"the table): {', '.join(in_order(untouched, METHODS))}.\n"
        )
    out.write("\n")
    out.write(_header(["configuration", "method", "seeds", "EM diff", "95% CI", "p", "verdict"]))
    for t in report["tests"]:
        if t["method"] in untouched:
            continue
        out.write(
            f"| {t['config']} | {t['method']} | {_seeds_cell(t)} | {t['mean']:+.3f} | "
            f"{_interval(t['low'], t['high'], signed=True)} | "
            f"{'n/a' if np.isnan(t['p']) else format(t['p'], '.3f')} | {t['verdict']} |\n"
        )


def _write_aspect_tests(out: io.StringIO, report: dict) -> None:
    """Per configuration, each aspect's paired difference to the baseline for `ASPECT_SOURCE`'s
    rationales, a single-aspect mix's own aspect in bold; nothing without aspect tests."""
    tests = report["aspect_tests"]
    if not tests:
        return
    aspects = report["aspects"]
    out.write(f"\n## Rationale quality of {ASPECT_SOURCE} against the baseline, per aspect\n\n")
    out.write(
        f"Each cell: the mean per-question difference of the aspect's score to `{report['baseline']}`"
        " (same seeds and questions), its 95% paired-bootstrap interval, and `*` when p < 0.05 "
        "(the interval excludes 0). Bold: the aspect a single-aspect mix (`reward=<aspect>`) "
        "rewards. p-values are in comparison.csv.\n\n"
    )
    by = {(t["config"], t["aspect"]): t for t in tests}
    single = {c: a for c in report["configs"] if c != report["baseline"] and (a := _own_aspect(c))}
    above = [c for c, a in single.items() if (c, a) in by and by[(c, a)]["low"] > 0]
    if single:
        rest = [c for c in single if c not in above]
        out.write(
            f"Single-aspect mixes above the baseline on their own aspect: {len(above)} of "
            f"{len(single)} ({', '.join(above) or 'none'}); not: {', '.join(rest) or 'none'}.\n\n"
        )
    out.write(_header(["configuration", "seeds"], aspects))
    for config in report["configs"]:
        mine = [by[(config, a)] for a in aspects if (config, a) in by]
        if not mine:
            continue
        cells = []
        for a in aspects:
            cell = _diff_cell(by[(config, a)]) if (config, a) in by else "n/a"
            cells.append(f"**{cell}**" if a == single.get(config) else cell)
        seeds = _seeds_cell(mine[0])
        out.write(f"| {config} | {seeds} | " + " | ".join(cells) + " |\n")


def _write_tradeoff(out: io.StringIO, report: dict) -> None:
    """Rationale quality next to EM per configuration and source; nothing without quality."""
    if not report["tradeoff"]:
        return
    out.write("\n## Task accuracy vs rationale quality\n\n")
    out.write(
        f"Quality: {quality_name(report)} (aspects: {', '.join(report['aspects'])}) of each "
        "source's rationales; EM of the method that answers with them. Runs without "
        "eval/quality/<source>.jsonl use results.json's mean scores, resampling seeds only."
        + (f" Note: {FLUENCY_NOTE}" if "fluency" in report["aspects"] else "")
        + "\n\n"
    )
    if tradeoff_points(report):
        out.write("![trade-off](tradeoff.png)\n\n")
    out.write(_header(["configuration", "source", "seeds", "quality", "95% CI", "EM", "EM 95% CI"]))
    for p in report["tradeoff"]:
        out.write(
            f"| {_config_cell(p['config'], report)} | {p['source']} | {_seeds_cell(p)} | "
            f"{_value_cells(p['mean'], p['low'], p['high'])} | "
            f"{_value_cells(p['em'], p['em_low'], p['em_high'])} |\n"
        )


def _write_em_f1(out: io.StringIO, report: dict) -> None:
    """EM and F1 with their intervals per configuration and method."""
    out.write("\n## EM and F1\n\n")
    out.write(_header(["configuration", "method", "seeds", "EM", "EM 95% CI", "F1", "F1 95% CI"]))
    for r in report["rows"]:
        method = r["method"]
        if r.get("distilled_seeds"):
            method += f" (the distilled student in {r['distilled_seeds']} of {r['seeds']} seeds)"
        out.write(
            f"| {_config_cell(r['config'], report)} | {method} | {_seeds_cell(r)} | "
            f"{_value_cells(r['em'], r['em_low'], r['em_high'])} | "
            f"{_value_cells(r['f1'], r['f1_low'], r['f1_high'])} |\n"
        )


def _write_quality(out: io.StringIO, report: dict) -> None:
    """Each aspect's mean from results.json per configuration and source; nothing without any."""
    if not report["quality"]:
        return
    aspects = in_order({k for q in report["quality"] for k in q} - {"config", "source"}, ASPECTS)
    out.write("\n## Rationale quality per aspect (mean over seeds, from results.json)\n\n")
    if "fluency" in aspects:
        out.write(f"Note: {FLUENCY_NOTE}\n\n")
    out.write(_header(["configuration", "source"], aspects))
    for q in report["quality"]:
        cells = " | ".join(f"{q[a]:.3f}" if a in q else "n/a" for a in aspects)
        out.write(f"| {_config_cell(q['config'], report)} | {q['source']} | {cells} |\n")


# -- cells -----------------------------------------------------------------------------------------


def _header(columns: list[str], aspects: list[str] | None = None) -> str:
    """A markdown table's header and separator lines. `aspects`, when given, are the columns after
    `columns`: as in the rows, an empty list still leaves its (empty) cell in the header."""
    cells = columns if aspects is None else [*columns, " | ".join(aspects)]
    width = len(columns) + len(aspects or ())
    return "| " + " | ".join(cells) + " |\n|" + "---|" * width + "\n"


def _own_aspect(config: str) -> str | None:
    """The aspect a single-aspect reward mix (`reward=<aspect>`) rewards; None for other configs."""
    for override in config.split():
        key, _, value = override.partition("=")
        if key == "reward" and value in ASPECTS:
            return value
    return None


def _config_cell(config: str, report: dict) -> str:
    """A configuration's cell, bold and marked when it is the baseline."""
    return f"**{config}** (baseline)" if config == report["baseline"] else config


def _seeds_cell(est: dict) -> str:
    """`3`, or the seed count with what its interval resampled when that is less."""
    if est["resampled"] == FULL:
        return str(est["seeds"])
    return est["resampled"] if est["seeds"] == 1 else f"{est['seeds']} {est['resampled']}"


def _value_cells(value: float, low: float, high: float) -> str:
    """`0.312 | [0.301, 0.323]`: a value's cell and its interval's."""
    return f"{value:.3f} | {_interval(low, high)}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    """`[0.301, 0.323]` (`[+0.012, +0.050]` when `signed`), or n/a without an interval."""
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def _diff_cell(test: dict) -> str:
    """`+0.031 [+0.012, +0.050]*`: the difference, its interval, `*` when p < 0.05; the
    difference alone when there is no interval."""
    if np.isnan(test["low"]):
        return f"{test['mean']:+.3f}"
    star = "*" if test["p"] < ALPHA else ""
    return f"{test['mean']:+.3f} {_interval(test['low'], test['high'], signed=True)}{star}"
