"""`lmgcot-compare SWEEP_DIR`: compare the runs of a sweep with honest statistics.

Reads every run under a directory (each with `results.json`, its `.hydra/overrides.yaml`,
`eval/<method>.jsonl` predictions and `eval/quality/<source>.jsonl` per-question aspect scores),
groups runs into configurations by their overrides minus the seed, and writes `comparison.md`,
`comparison.csv`, `comparison.png` and `tradeoff.png` into the directory.

Every interval is a 95% percentile interval of a two-stage (hierarchical) bootstrap: a resample
draws the seeds with replacement, then each drawn seed's test questions with replacement, so the
interval carries the seed-to-seed spread of from-scratch students as well as the test set's. With
one seed only the questions are resampled. The comparison holds:

* per configuration and method: EM and F1 (mean over seeds of each seed's question mean);
  `lm_guided_rl` rows say in how many seeds the refine stage exported the distilled student;
* per configuration and rationale source: rationale quality (the mean of the aspects per question,
  or one aspect with `--quality-aspect`) next to that method's EM, the trade-off `tradeoff.png`
  plots for `lm_guided_rl` against `lm_guided_kd`; runs without per-question aspect files fall back
  to `results.json`'s means, resampling seeds only;
* against a baseline configuration (`--baseline`, by default the one whose overrides contain
  `reward=task`): paired bootstraps, within seeds, of the per-question EM differences of every
  method and of each aspect's differences for the `lm_guided_rl` rationales, with two-sided
  p-values; the single-aspect mixes (`reward=<aspect>`) are read on their own aspect.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lmgcot.eval.methods import METHODS, RL_METHODS
from lmgcot.rewards.aspects import ASPECTS
from lmgcot.utils.io import atomic_write_text

ALPHA = 0.05
# eval/quality/<source>.jsonl: the rationale sources the pipeline scores, in table order.
QUALITY_SOURCES = ("cot", "lm_guided_kd", "lm_guided_rl")
# The trade-off plot: the refined student against the distilled one it started from.
TRADEOFF_SOURCES = ("lm_guided_kd", "lm_guided_rl")
# Whose rationales the aspect tests read: the reward mix only acts on the refined student.
ASPECT_SOURCE = "lm_guided_rl"
# Bootstrap draws held in memory at once (question indices), to bound memory on large test sets.
CHUNK = 4_000_000
FULL = "seeds and questions"  # what a usual interval resamples (see `_resampled`)


@dataclass
class Run:
    path: Path
    config: str  # the overrides without the seed: what identifies a configuration
    seed: int
    results: dict
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # scores[method][question id] = {"em": float, "f1": float}
    quality: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # quality[source][question id] = {aspect: score}, null scores left out


class CompareError(Exception):
    pass


@dataclass(frozen=True)
class Measure:
    """A number measured on a run: per test question when the run has the per-question file
    (`per_question` returns None otherwise), and the run's summary in `results.json` (`summary`,
    None when the run lacks it). `name` seeds its bootstrap (see `_estimate`)."""

    name: str
    per_question: Callable[[Run], dict[str, float] | None]
    summary: Callable[[Run], float | None]


def load_runs(root: Path) -> list[Run]:
    """Every run below `root` (a directory holding `results.json`)."""
    runs = []
    for results_file in sorted(root.rglob("results.json")):
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
        for method in results["methods"]:
            preds = run_dir / "eval" / f"{method}.jsonl"
            if preds.exists():
                rows = _read_jsonl(preds, ("id", "em", "f1"))
                run.scores[method] = {r["id"]: {"em": r["em"], "f1": r["f1"]} for r in rows}
        for path in sorted((run_dir / "eval" / "quality").glob("*.jsonl")):
            run.quality[path.stem] = _aspect_scores(path)
        runs.append(run)
    if not runs:
        raise CompareError(f"{root}: no results.json below it")
    # A configuration is named by the overrides that vary across the sweep.
    shared = set.intersection(*(set(r.config.split()) for r in runs))
    for r in runs:
        r.config = " ".join(o for o in r.config.split() if o not in shared) or "(all runs)"
    return runs


def question_means(x: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """m bootstrap means of `x`: each the mean of len(x) values drawn from x with replacement."""
    n = len(x)
    values, counts = np.unique(x, return_counts=True)
    if len(values) * 16 <= n:
        # Few distinct scores (EM is 0 or 1): a resample's mean depends only on how often each
        # value is drawn, a multinomial count, which is far cheaper to draw than n indices.
        return rng.multinomial(n, counts / n, size=m) @ values / n
    out = np.empty(m)
    step = max(1, CHUNK // n)
    # int32 indices: drawing them is several times faster than numpy's default int64.
    for start in range(0, m, step):
        stop = min(m, start + step)
        out[start:stop] = x[rng.integers(0, n, size=(stop - start, n), dtype=np.int32)].mean(1)
    return out


def hierarchical_means(
    per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """n_boot two-stage bootstrap replicates of the mean over seeds of each seed's question mean.

    A replicate draws k = len(per_seed) seeds with replacement, then for every draw,
    independently, that seed's questions with replacement (`question_means`); it is the mean over
    the draws. A seed drawn twice gets two independent question resamples. With one seed no seed
    is drawn: the result is exactly `question_means(per_seed[0], n_boot, rng)`.

    With between-seed variance b and within-seed variance w of a seed's question mean, the mean
    over seeds has variance (b + w) / k; the replicates have about ((k-1)/k b + (2k-1)/k w) / k
    (the seed means it resamples already hold test-set noise): a little narrow on the seed part
    and wide on the question part when seeds are few.
    """
    k = len(per_seed)
    picks = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), int)
    totals = np.zeros(n_boot)
    for s, x in enumerate(per_seed):
        rows = np.nonzero(picks == s)[0]  # the replicate of each draw of seed s
        totals += np.bincount(rows, weights=question_means(x, len(rows), rng), minlength=n_boot)
    return totals / k


def bootstrap_mean(
    per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds of each seed's question mean, and its 95% percentile
    interval from the two-stage bootstrap (`hierarchical_means`)."""
    mean = float(np.mean([x.mean() for x in per_seed]))
    low, high = np.quantile(hierarchical_means(per_seed, n_boot, rng), [ALPHA / 2, 1 - ALPHA / 2])
    return mean, float(low), float(high)


def paired_bootstrap(
    diffs_per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(mean difference, low, high, two-sided p) of per-question differences, paired within seeds
    (each array holds one seed's differences on the questions both sides answered); seeds, then
    questions within each drawn seed, are resampled as in `hierarchical_means`.

    p is twice the smaller share of resampled means on either side of 0 (at least 1/n_boot).
    """
    mean = float(np.mean([x.mean() for x in diffs_per_seed]))
    boots = hierarchical_means(diffs_per_seed, n_boot, rng)
    low, high = np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2])
    tail = min(np.mean(boots <= 0), np.mean(boots >= 0))
    p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
    return mean, float(low), float(high), p


def compare(
    runs: list[Run],
    baseline: str | None,
    n_boot: int,
    seed: int,
    quality_aspect: str | None = None,
) -> dict:
    """The comparison as a dict (see the module docstring): `rows` per (config, method), `tests` of
    EM against the baseline, `tradeoff` (quality and EM per config and rationale source),
    `aspect_tests` per (config, aspect) against the baseline, and `quality` (mean aspect scores).

    `quality_aspect` names the aspect that measures rationale quality; None: the mean, per
    question, of every aspect the sweep scored.
    """
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(run.config, []).append(run)
    if baseline is None:
        baseline = next((c for c in sorted(configs) if "reward=task" in c.split()), None)
    elif baseline not in configs:
        raise CompareError(
            f"--baseline {baseline!r}: no such configuration; have {sorted(configs)}"
        )
    order = sorted(configs, key=lambda c: (c != baseline, c))
    aspects = _aspects(runs)
    if quality_aspect is not None and quality_aspect not in aspects:
        raise CompareError(f"--quality-aspect {quality_aspect!r}: no run scored it; have {aspects}")
    chosen = (quality_aspect,) if quality_aspect else tuple(aspects)
    base_by_seed = {r.seed: r for r in configs[baseline]} if baseline else {}
    rows, tests, tradeoff, aspect_tests, quality = [], [], [], [], []
    for config in order:
        group = configs[config]
        methods = _in_order({m for r in group for m in r.results["methods"]}, METHODS)
        for method in methods:
            em, f1 = (
                _estimate(group, _metric(method, m), None, n_boot, seed) for m in ("em", "f1")
            )
            row = {"config": config, "method": method, "seeds": em["seeds"]}
            row["resampled"] = em["resampled"]
            for name, est in (("em", em), ("f1", f1)):
                row.update(
                    {name: est["mean"], f"{name}_low": est["low"], f"{name}_high": est["high"]}
                )
            if method in RL_METHODS:
                # Runs whose refine stage exported the distilled student (rl.keep_best).
                row["distilled_seeds"] = sum(
                    method in r.results["methods"]
                    and (r.results.get("refine") or {}).get("selected") == "distilled"
                    for r in group
                )
            rows.append(row)
            if base_by_seed and config != baseline:
                test = _estimate(group, _metric(method, "em"), base_by_seed, n_boot, seed)
                if test["seeds"]:
                    tests.append({"config": config, "method": method, **test})
        by_method = {r["method"]: r for r in rows if r["config"] == config}
        for source in QUALITY_SOURCES:
            est = _estimate(group, _quality(source, chosen), None, n_boot, seed)
            if est["seeds"] and source in by_method:
                em = {k: by_method[source][k] for k in ("em", "em_low", "em_high")}
                em["em_resampled"] = by_method[source]["resampled"]
                tradeoff.append({"config": config, "source": source, **est, **em})
        if base_by_seed and config != baseline:
            for aspect in aspects:
                test = _estimate(
                    group, _quality(ASPECT_SOURCE, (aspect,)), base_by_seed, n_boot, seed
                )
                if test["seeds"]:
                    aspect_tests.append({"config": config, "aspect": aspect, **test})
        quality += _mean_quality(config, group)
    return {
        "baseline": baseline,
        "configs": order,
        "aspects": aspects,
        "quality_aspect": quality_aspect,
        "rows": rows,
        "tests": tests,
        "tradeoff": tradeoff,
        "aspect_tests": aspect_tests,
        "quality": quality,
        "n_boot": n_boot,
    }


# -- writing ---------------------------------------------------------------------------------------


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
        + (", [tradeoff.png](tradeoff.png)" if _tradeoff_points(report) else "")
        + ".\n\n"
    )
    _write_em_tests(out, report)
    _write_aspect_tests(out, report)
    _write_tradeoff(out, report)
    out.write("\n## EM and F1\n\n")
    out.write("| configuration | method | seeds | EM | EM 95% CI | F1 | F1 95% CI |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    for r in report["rows"]:
        method = r["method"]
        if r.get("distilled_seeds"):
            method += f" (the distilled student in {r['distilled_seeds']} of {r['seeds']} seeds)"
        out.write(
            f"| {_config_cell(r['config'], report)} | {method} | {_seeds_cell(r)} | "
            f"{r['em']:.3f} | {_interval(r['em_low'], r['em_high'])} | {r['f1']:.3f} | "
            f"{_interval(r['f1_low'], r['f1_high'])} |\n"
        )
    if report["quality"]:
        aspects = _in_order(
            {k for q in report["quality"] for k in q} - {"config", "source"}, ASPECTS
        )
        out.write("\n## Rationale quality per aspect (mean over seeds, from results.json)\n\n")
        out.write("| configuration | source | " + " | ".join(aspects) + " |\n")
        out.write("|---|---|" + "---|" * len(aspects) + "\n")
        for q in report["quality"]:
            cells = " | ".join(f"{q[a]:.3f}" if a in q else "n/a" for a in aspects)
            out.write(f"| {_config_cell(q['config'], report)} | {q['source']} | {cells} |\n")
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


def plot_comparison(report: dict, path: Path) -> None:
    """comparison.png. Left: EM with 95% intervals, a row per configuration (the baseline first)
    and a point per method, offset vertically and coloured by method. Right: each configuration's
    paired EM difference to the baseline, hollow when within noise; methods with the baseline's
    very scores in every configuration are named in the title instead of drawn."""
    plt = _pyplot()
    configs = report["configs"]
    methods = _in_order({r["method"] for r in report["rows"]}, METHODS)
    untouched = _untouched(report)
    tests = [t for t in report["tests"] if t["method"] not in untouched]
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    step = min(0.2, 0.8 / len(methods))
    offset = {m: (j - (len(methods) - 1) / 2) * step for j, m in enumerate(methods)}
    row_of = {c: i for i, c in enumerate(configs)}
    height = 1.8 + len(configs) * (0.25 + 0.11 * len(methods))
    fig, axes = plt.subplots(
        1, 2 if tests else 1, figsize=(13 if tests else 7.5, height), sharey=True, squeeze=False
    )
    fig.set_layout_engine("constrained")
    ax = axes[0][0]
    for m in methods:
        points = [r for r in report["rows"] if r["method"] == m]
        ys = [row_of[r["config"]] + offset[m] for r in points]
        xs = [r["em"] for r in points]
        errs = _errors([(r["em"], r["em_low"], r["em_high"]) for r in points])
        ax.errorbar(xs, ys, xerr=errs, fmt="o", ms=4, capsize=2, color=colors[m], label=m)
    ax.set_yticks(range(len(configs)), [_config_label(c, report) for c in configs], fontsize=8)
    ax.set_ylim(len(configs) - 0.5, -0.5)  # the first configuration on top
    ax.set_xlabel("exact match (mean over seeds, 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("EM per configuration and method", fontsize=10)
    if tests:
        ax2 = axes[0][1]
        ax2.axvline(0, color="black", lw=0.8)
        for t in tests:
            noise = t["verdict"] not in ("better", "worse")
            ax2.errorbar(
                [t["mean"]],
                [row_of[t["config"]] + offset[t["method"]]],
                xerr=_errors([(t["mean"], t["low"], t["high"])]),
                fmt="o",
                ms=5,
                capsize=2,
                color=colors[t["method"]],
                mfc="white" if noise else colors[t["method"]],
            )
        if report["baseline"] in row_of:
            ax2.text(0, row_of[report["baseline"]], " baseline", va="center", fontsize=8)
        ax2.set_xlabel(f"EM minus {report['baseline']} (paired: same seeds and questions)")
        ax2.grid(axis="x", alpha=0.3)
        title = "difference to the baseline (hollow: 95% CI contains 0)"
        if untouched:
            title += "\nnot drawn, identical to the baseline: " + ", ".join(
                _in_order(untouched, METHODS)
            )
        ax2.set_title(title, fontsize=9)
    for panel in axes[0]:  # a thin line between configurations
        for y in range(1, len(configs)):
            panel.axhline(y - 0.5, color="0.85", lw=0.6)
    fig.legend(loc="outside lower center", ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.suptitle(
        f"lmgcot comparison\n95% CIs resample: {_intervals_note(report['rows'], 'resampled')}",
        fontsize=10,
    )
    _save(fig, path)


def plot_tradeoff(report: dict, path: Path) -> bool:
    """tradeoff.png: per configuration, rationale quality (x) against EM (y) of `lm_guided_rl`, in
    a colour of its own and labelled with the configuration, joined by a dotted line to the grey
    `lm_guided_kd` point it was refined from; all with 95% intervals. False, and nothing written,
    when no run has rationale scores for those sources."""
    points = _tradeoff_points(report)
    if not points:
        return False
    plt = _pyplot()
    from matplotlib.lines import Line2D

    height = max(4.5, 1.8 + 0.24 * len(report["configs"]))
    fig, ax = plt.subplots(figsize=(9.5, height))
    fig.subplots_adjust(left=0.09, right=0.66, top=0.9, bottom=0.22)
    distilled = {p["config"]: p for p in points if p["source"] == "lm_guided_kd"}
    refined = [p for p in points if p["source"] == "lm_guided_rl"]
    handles = []
    if distilled:
        # One marker per distinct point: configurations usually share the distilled student.
        unique = {
            tuple(p[k] for k in ("mean", "low", "high", "em", "em_low", "em_high")): p
            for p in distilled.values()
        }
        _cross(ax, list(unique.values()), "0.45", marker="s", ms=5)
        handles.append(
            Line2D([], [], color="0.45", marker="s", ls="", label="lm_guided_kd (distilled)")
        )
    if refined:
        handles.append(
            Line2D(
                [],
                [],
                color="0.2",
                marker="o",
                ls="",
                label="lm_guided_rl (refined), per configuration",
            )
        )
    colors = {p["config"]: _color(plt, i) for i, p in enumerate(refined)}
    for p in refined:
        if p["config"] in distilled:  # where refinement moved this configuration's student
            start = distilled[p["config"]]
            ax.plot(
                [start["mean"], p["mean"]],
                [start["em"], p["em"]],
                color=colors[p["config"]],
                lw=0.8,
                ls=":",
                zorder=1,
            )
        edge = "black" if p["config"] == report["baseline"] else colors[p["config"]]
        _cross(ax, [p], colors[p["config"]], marker="o", ms=6, mec=edge)
    ax.margins(0.08)
    low, high = ax.get_ylim()
    # One 8-pt label line (11 pt with spacing) in data units: the axes are height * fraction tall.
    gap = 11 / 72 / (height * ax.get_position().height) * (high - low)
    for p, y in zip(refined, _spread([p["em"] for p in refined], gap), strict=True):
        ax.annotate(
            _config_label(p["config"], report),
            xy=(p["mean"], p["em"]),
            xytext=(1.03, y),
            textcoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
            color=colors[p["config"]],
            fontweight="bold" if p["config"] == report["baseline"] else "normal",
            arrowprops={"arrowstyle": "-", "color": colors[p["config"]], "lw": 0.6, "alpha": 0.7},
            annotation_clip=False,
        )
    ax.set_ylim(low, high)
    ax.set_xlabel(f"rationale quality: {_quality_name(report)} (95% CI)")
    ax.set_ylabel("exact match (95% CI)")
    ax.grid(alpha=0.3)
    notes = (
        f"95% CIs resample, quality: {_intervals_note(points, 'resampled')}; "
        f"EM: {_intervals_note(points, 'em_resampled')}"
    )
    ax.set_title(f"Task accuracy vs rationale quality\n{notes}", fontsize=10)
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    _save(fig, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lmgcot-compare",
        description="Compare the runs under a sweep directory: comparison.md, .csv, .png and "
        "tradeoff.png.",
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="a directory with runs (results.json) below it"
    )
    parser.add_argument("--baseline", help="configuration to test against (default: reward=task)")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--quality-aspect",
        metavar="NAME",
        help="the aspect that measures rationale quality in the trade-off (default: the mean of "
        "every aspect scored)",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: the sweep directory)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and plots to a W&B run in the sweep's group (offline unless "
        "WANDB_MODE=online)",
    )
    parser.add_argument("--wandb-project", default="lmgcot", help="W&B project (default: lmgcot)")
    args = parser.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise CompareError(f"{args.sweep_dir}: not a directory")
        if args.n_boot < 100:
            raise CompareError(f"--n-boot {args.n_boot}: use at least 100 resamples")
        runs = load_runs(args.sweep_dir)
        report = compare(runs, args.baseline, args.n_boot, args.seed, args.quality_aspect)
    except CompareError as err:
        print(f"lmgcot-compare: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", to_markdown(report))
    atomic_write_text(out / "comparison.csv", to_csv(report))
    plot_comparison(report, out / "comparison.png")
    written = ["comparison.md", "comparison.csv", "comparison.png"]
    if plot_tradeoff(report, out / "tradeoff.png"):
        written.append("tradeoff.png")
    print(to_markdown(report))
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    if args.wandb:
        group = sweep_name(args.sweep_dir)
        where = log_to_wandb(out, group, args.wandb_project)
        print(f"logged to W&B (group {group}): {where}")
    return 0


def sweep_name(sweep_dir: Path) -> str:
    """The `sweep_name` its runs were made with (the W&B group of their runs), else the dir name."""
    for config in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        name = (yaml.safe_load(config.read_text()) or {}).get("sweep_name")
        if name:
            return str(name)
    return sweep_dir.resolve().name


def log_to_wandb(out: Path, group: str, project: str) -> str:
    """Log comparison.csv as a table, the plots and comparison.md to a new W&B run; its directory."""
    import os

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = os.environ.get("WANDB_MODE", "offline")
    with open(out / "comparison.csv", newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    run = wandb.init(
        project=project,
        group=group,
        job_type="comparison",
        name=f"comparison-{group}",
        dir=str(out),
        mode=mode,
    )
    try:
        logged = {
            "comparison/table": wandb.Table(columns=header, data=rows),
            "comparison/plot": wandb.Image(str(out / "comparison.png")),
        }
        if (out / "tradeoff.png").exists():
            logged["comparison/tradeoff"] = wandb.Image(str(out / "tradeoff.png"))
        run.log(logged)
        run.save(str(out / "comparison.md"), base_path=str(out), policy="now")
        return str(run.dir)
    finally:
        run.finish()


# -- helpers ---------------------------------------------------------------------------------------


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
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


def _metric(method: str, metric: str) -> Measure:
    """A method's EM or F1."""
    return Measure(
        f"{method} {metric}",
        lambda run: (
            {q: s[metric] for q, s in run.scores[method].items()} if method in run.scores else None
        ),
        lambda run: run.results["methods"].get(method, {}).get(metric),
    )


def _quality(source: str, aspects: tuple[str, ...]) -> Measure:
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


def _estimate(
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
    samples = by_question if per_question else summaries
    est = {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "seeds": len(samples)}
    est["resampled"] = _resampled(len(samples), per_question)
    if base_by_seed is not None:
        est.update(p=float("nan"), verdict="n/a")
    if not samples:
        return est
    key = f"{measure.name} {'paired' if base_by_seed is not None else 'alone'}"
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if base_by_seed is None:
        est["mean"], est["low"], est["high"] = bootstrap_mean(samples, n_boot, rng)
    else:
        est["mean"], est["low"], est["high"], est["p"] = paired_bootstrap(samples, n_boot, rng)
    if not per_question and len(samples) == 1:  # one run's summary: nothing to resample
        est.update(low=float("nan"), high=float("nan"))
        if base_by_seed is not None:
            est["p"] = float("nan")
    if base_by_seed is not None:
        same = per_question and not any(s.any() for s in samples)
        est["verdict"] = _verdict(est["mean"], est["low"], est["high"], same)
    return est


def _resampled(seeds: int, per_question: bool) -> str:
    """What an interval over `seeds` runs resampled."""
    if per_question:
        return FULL if seeds > 1 else "1 seed: questions only"
    return "seeds only: run means" if seeds > 1 else "1 seed: run means, no interval"


def _verdict(diff: float, low: float, high: float, identical: bool) -> str:
    if identical:
        return "identical"
    if np.isnan(low):
        return "n/a"
    if low <= 0 <= high:
        return "within noise"
    return "better" if diff > 0 else "worse"


def _mean_quality(config: str, group: list[Run]) -> list[dict]:
    """Per rationale source: each aspect's mean over the runs of `results.json`'s means."""
    out = []
    for source in sorted({s for r in group for s in r.results.get("rationale_quality", {})}):
        per = [
            r.results["rationale_quality"][source]
            for r in group
            if source in r.results.get("rationale_quality", {})
        ]
        names = sorted({a for p in per for a in p if p[a] is not None})
        means = {a: float(np.mean([p[a] for p in per if p.get(a) is not None])) for a in names}
        out.append({"config": config, "source": source, **means})
    return out


def _aspects(runs: list[Run]) -> list[str]:
    """The aspects any run scored (per question or in results.json), in the scorer's order."""
    names = {a for r in runs for rows in r.quality.values() for s in rows.values() for a in s}
    for r in runs:
        for means in r.results.get("rationale_quality", {}).values():
            names |= {a for a, v in means.items() if v is not None}
    return _in_order(names, ASPECTS)


def _in_order(names: set[str], known: Iterable[str]) -> list[str]:
    """`names` in the order of `known` (the pipeline's methods, the scorer's aspects), unknown
    ones after them alphabetically."""
    rank = {name: i for i, name in enumerate(known)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _untouched(report: dict) -> set[str]:
    """Methods whose scores equal the baseline's on every question of every configuration: those
    the swept settings do not reach (in a reward sweep, everything before refine)."""
    methods = {t["method"] for t in report["tests"]}
    return {
        m
        for m in methods
        if all(t["verdict"] == "identical" for t in report["tests"] if t["method"] == m)
    }


def _own_aspect(config: str) -> str | None:
    """The aspect a single-aspect reward mix (`reward=<aspect>`) rewards; None for other configs."""
    for override in config.split():
        key, _, value = override.partition("=")
        if key == "reward" and value in ASPECTS:
            return value
    return None


def _tradeoff_points(report: dict) -> list[dict]:
    return [p for p in report["tradeoff"] if p["source"] in TRADEOFF_SOURCES]


def _quality_name(report: dict) -> str:
    if report["quality_aspect"]:
        return report["quality_aspect"]
    return f"mean of {len(report['aspects'])} aspects per question"


def _config_label(config: str, report: dict) -> str:
    return f"{config} (baseline)" if config == report["baseline"] else config


def _config_cell(config: str, report: dict) -> str:
    return f"**{config}** (baseline)" if config == report["baseline"] else config


def _intervals_note(estimates: list[dict], key: str) -> str:
    """What the plotted intervals resampled (`estimates[...][key]`), for a plot's title."""
    kinds = sorted({e[key] for e in estimates}, key=lambda k: k != FULL)
    return "; ".join(kinds)


def _seeds_cell(est: dict) -> str:
    """`3`, or the seed count with what its interval resampled when that is less."""
    if est["resampled"] == FULL:
        return str(est["seeds"])
    return est["resampled"] if est["seeds"] == 1 else f"{est['seeds']} {est['resampled']}"


def _interval(low: float, high: float, signed: bool = False) -> str:
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


def _write_em_tests(out: io.StringIO, report: dict) -> None:
    out.write("## EM against the baseline\n\n")
    if report["baseline"] is None:
        out.write("No baseline configuration (none has `reward=task`; pass --baseline).\n")
        return
    if not report["tests"]:
        out.write(f"Baseline `{report['baseline']}`: no other configuration shares its seeds.\n")
        return
    untouched = _untouched(report)
    out.write(
        f"Baseline `{report['baseline']}`. EM difference on the same questions and seeds, paired "
        "bootstrap; 'within noise' means the 95% interval contains 0.\n"
    )
    if untouched:
        out.write(
            f"The same scores as the baseline on every question in every configuration (not in "
            f"the table): {', '.join(_in_order(untouched, METHODS))}.\n"
        )
    out.write("\n| configuration | method | seeds | EM diff | 95% CI | p | verdict |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    for t in report["tests"]:
        if t["method"] in untouched:
            continue
        out.write(
            f"| {t['config']} | {t['method']} | {_seeds_cell(t)} | {t['mean']:+.3f} | "
            f"{_interval(t['low'], t['high'], signed=True)} | "
            f"{'n/a' if np.isnan(t['p']) else format(t['p'], '.3f')} | {t['verdict']} |\n"
        )


def _write_aspect_tests(out: io.StringIO, report: dict) -> None:
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
    out.write("| configuration | seeds | " + " | ".join(aspects) + " |\n")
    out.write("|---|---|" + "---|" * len(aspects) + "\n")
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
    if not report["tradeoff"]:
        return
    out.write("\n## Task accuracy vs rationale quality\n\n")
    out.write(
        f"Quality: {_quality_name(report)} (aspects: {', '.join(report['aspects'])}) of each "
        "source's rationales; EM of the method that answers with them. Runs without "
        "eval/quality/<source>.jsonl use results.json's mean scores, resampling seeds only.\n\n"
    )
    if _tradeoff_points(report):
        out.write("![trade-off](tradeoff.png)\n\n")
    out.write("| configuration | source | seeds | quality | 95% CI | EM | EM 95% CI |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    for p in report["tradeoff"]:
        out.write(
            f"| {_config_cell(p['config'], report)} | {p['source']} | {_seeds_cell(p)} | "
            f"{p['mean']:.3f} | {_interval(p['low'], p['high'])} | {p['em']:.3f} | "
            f"{_interval(p['em_low'], p['em_high'])} |\n"
        )


def _errors(points: list[tuple[float, float, float]]) -> list[list[float]]:
    """matplotlib's xerr/yerr for (value, low, high) points; no bar where the interval is n/a."""
    return [
        [0.0 if np.isnan(lo) else v - lo for v, lo, _ in points],
        [0.0 if np.isnan(hi) else hi - v for v, _, hi in points],
    ]


def _cross(ax, points: list[dict], color, **style) -> None:
    """Trade-off points with their quality (x) and EM (y) intervals, the bars paler than the
    marker so that clustered points stay visible."""
    from matplotlib.colors import to_rgba

    ax.errorbar(
        [p["mean"] for p in points],
        [p["em"] for p in points],
        xerr=_errors([(p["mean"], p["low"], p["high"]) for p in points]),
        yerr=_errors([(p["em"], p["em_low"], p["em_high"]) for p in points]),
        ls="",
        color=color,
        ecolor=to_rgba(color, 0.45),
        elinewidth=0.9,
        capsize=2,
        zorder=2,
        **style,
    )


def _color(plt, i: int):
    """The i-th configuration's colour: tab10's ten, then Dark2's eight (dark enough for text)."""
    colors = [*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors]
    return colors[i % len(colors)]


def _spread(targets: list[float], gap: float) -> list[float]:
    """Label positions as close as possible (least squares) to `targets`, keeping their order and at
    least `gap` apart: labels of nearby points stack instead of overlapping."""
    order = np.argsort(targets, kind="stable")
    shifted = np.asarray(targets, float)[order] - gap * np.arange(len(order))
    # Pool adjacent violators: the closest non-decreasing sequence to `shifted`.
    blocks: list[list[float]] = []  # [mean, size]
    for value in shifted:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    fitted = np.repeat([b[0] for b in blocks], [int(b[1]) for b in blocks])
    out = np.empty(len(order))
    out[order] = fitted + gap * np.arange(len(order))
    return out.tolist()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Write the figure atomically; the tight box keeps legends and labels outside the axes."""
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    fig.clf()
    _pyplot().close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
