"""Rationale quality against answer accuracy: does a better rationale give a right answer more
often, and what does choosing among k samples by quality buy? (The LM-Guided CoT paper's third
finding: the highest-quality rationales do not always give the best answers.)

`python -m lmgcot.report.selection DIR` (and `lmgcot-compare DIR`, when its runs evaluated a
method that chooses among samples) reads every run below DIR and writes:

* `selection.md`: per configuration, every method's EM and F1 over seeds with 95% intervals, and
  its paired difference to `lm_guided_kd` (same seeds and questions) with a two-sided p; the
  oracle (it reads the gold answer) apart, below the methods;
* `selection_k.png`: EM against k (1, 2, 4, 8: those the runs' k allows) for best-of-k,
  self-consistency, weighted self-consistency and the oracle, read from the samples the `_wsc`
  methods kept: each k is the mean over the disjoint blocks of k of a question's samples, so one
  run at k=8 gives the whole curve on the very samples the methods used;
* `selection_deciles.png`: EM of the large LM's answer by decile of each sampled rationale's
  selection score and of each aspect (ties can merge deciles), and by decile of the greedy
  `lm_guided_kd` rationale's aspects.

Intervals of the table and the k-curve are the two-stage bootstrap of `lmgcot-compare` (seeds,
then questions). A decile pools the rationales of every seed; its interval resamples questions
(a question's k samples together), so it carries the test set's noise, not the seeds'.
"""

from __future__ import annotations

import argparse
import io
import sys
import zlib
from pathlib import Path

import numpy as np

from lmgcot.artifacts import RunDir
from lmgcot.eval.methods import METHODS, ORACLES
from lmgcot.eval.selection import best_index, vote_index
from lmgcot.report.common import in_order
from lmgcot.report.estimates import estimate, metric_measure
from lmgcot.report.plots import pyplot, save_figure
from lmgcot.report.runs import CompareError, Run, load_runs
from lmgcot.report.stats import ALPHA, paired_bootstrap
from lmgcot.rewards.aspects import ASPECTS
from lmgcot.utils.io import atomic_write_text, read_jsonl

BASELINE = "lm_guided_kd"
# Predictions that keep every sample's answer, its EM and its quality.
SAMPLE_SOURCES = ("lm_guided_kd_wsc", "lm_guided_rl_wsc")
GREEDY_SOURCE = "lm_guided_kd"
KS = (1, 2, 4, 8)
SELECTORS = ("best-of-k", "self-consistency", "weighted SC", "oracle")
SCORE = "selection reward"
N_BINS = 10


def has_selection(runs: list[Run]) -> bool:
    """Whether any run evaluated a method that chooses among samples (or the oracle)."""
    chooses = {n for n, m in METHODS.items() if "select_reward" in m.settings or m.oracle}
    return any(chooses & set(r.results["methods"]) for r in runs)


def selection_report(runs: list[Run], n_boot: int, seed: int) -> dict:
    """{"n_boot", "configs": [{"config", "rows", "k_curve", "deciles"}]}: see the module
    docstring. The same arguments give the same dict (every bootstrap is seeded by `seed` and
    what it measures)."""
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(run.config, []).append(run)
    out = []
    for config in sorted(configs):
        group = sorted(configs[config], key=lambda r: r.seed)
        samples = {s: [_records(r, s) for r in group] for s in SAMPLE_SOURCES}
        samples = {s: [r for r in recs if r] for s, recs in samples.items()}
        out.append(
            {
                "config": config,
                "rows": _method_rows(group, n_boot, seed),
                "k_curve": [
                    p
                    for s, recs in samples.items()
                    if recs
                    for p in _k_curve(s, recs, n_boot, seed)
                ],
                "deciles": _deciles(group, samples, n_boot, seed),
            }
        )
    return {"n_boot": n_boot, "configs": out}


def write_selection(runs: list[Run], out: Path, n_boot: int, seed: int) -> list[str]:
    """Write selection.md, selection_k.png and selection_deciles.png (those with anything to
    show) into `out`; the names written."""
    report = selection_report(runs, n_boot, seed)
    written = ["selection.md"]
    if any(c["k_curve"] for c in report["configs"]):
        save_figure(k_curve_figure(report), out / "selection_k.png")
        written.append("selection_k.png")
    if any(c["deciles"] for c in report["configs"]):
        save_figure(deciles_figure(report), out / "selection_deciles.png")
        written.append("selection_deciles.png")
    atomic_write_text(out / "selection.md", to_markdown(report, written))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmgcot.report.selection",
        description="Rationale quality against EM: selection.md, selection_k.png, "
        "selection_deciles.png.",
    )
    parser.add_argument("runs_dir", type=Path, help="a directory with runs (results.json) below it")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", type=Path, help="output directory (default: runs_dir)")
    args = parser.parse_args(argv)
    try:
        if not args.runs_dir.is_dir():
            raise CompareError(f"{args.runs_dir}: not a directory")
        if args.n_boot < 100:
            raise CompareError(f"--n-boot {args.n_boot}: use at least 100 resamples")
        runs = load_runs(args.runs_dir)
    except CompareError as err:
        print(f"lmgcot-selection: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.runs_dir
    out.mkdir(parents=True, exist_ok=True)
    written = write_selection(runs, out, args.n_boot, args.seed)
    print((out / "selection.md").read_text(encoding="utf-8"))
    print(f"wrote {', '.join(str(out / n) for n in written)}")
    return 0


# -- the numbers -----------------------------------------------------------------------------------


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _method_rows(group: list[Run], n_boot: int, seed: int) -> list[dict]:
    """A row per method: EM, F1 and the paired EM difference to `BASELINE`; oracles last."""
    names = in_order({m for r in group for m in r.results["methods"]}, METHODS)
    names = [n for n in names if n not in ORACLES] + [n for n in names if n in ORACLES]
    rows = []
    for method in names:
        row = {"method": method, "oracle": method in ORACLES}
        for metric in ("em", "f1"):
            est = estimate(group, metric_measure(method, metric), None, n_boot, seed)
            row.update({metric: est["mean"], f"{metric}_low": est["low"]})
            row.update({f"{metric}_high": est["high"], "seeds": est["seeds"]})
        diffs = [
            np.array([s[q]["em"] - base[q]["em"] for q in sorted(s) if q in base])
            for r in group
            if (s := r.scores.get(method)) is not None
            and (base := r.scores.get(BASELINE)) is not None
        ]
        if method != BASELINE and diffs:
            rng = _rng(seed, f"{method} vs {BASELINE}")
            mean, low, high, p = paired_bootstrap(diffs, n_boot, rng)
            row.update(diff=mean, diff_low=low, diff_high=high, p=p)
        rows.append(row)
    return rows


def _records(run: Run, source: str) -> list[dict]:
    """A source's predictions that hold every sample's answer EM and selection score."""
    path = RunDir(run.path).eval.predictions(source)
    if source not in run.results["methods"] or not path.exists():
        return []
    rows = read_jsonl(path)
    return [r for r in rows if r.get("answer_em") is not None and r.get("scores") is not None]


def curve_values(record: dict, k: int) -> dict[str, float]:
    """One question's EM under each selector at k: the mean over the disjoint blocks of k of its
    samples (the last samples left out when k does not divide their number)."""
    answers, ems = record["answers"], record["answer_em"]
    scores = [float("-inf") if s is None else s for s in record["scores"]]
    blocks = len(ems) // k
    out = dict.fromkeys(SELECTORS, 0.0)
    for b in range(blocks):
        span = slice(b * k, (b + 1) * k)
        a, e, s = answers[span], ems[span], scores[span]
        voted, _ = vote_index(a)
        weighted, _ = vote_index(a, [max(0.0, v) for v in s])
        out["best-of-k"] += e[best_index(s)]
        out["self-consistency"] += e[voted] if voted >= 0 else 0.0
        out["weighted SC"] += e[weighted] if weighted >= 0 else 0.0
        out["oracle"] += max(e)
    return {name: v / blocks for name, v in out.items()}


def _k_curve(source: str, per_run: list[list[dict]], n_boot: int, seed: int) -> list[dict]:
    """Points (source, selector, k, mean, low, high, seeds) for every k all runs' samples allow."""
    most = min(min(len(r["answer_em"]) for r in recs) for recs in per_run)
    points = []
    for k in (k for k in KS if k <= most):
        values = [[curve_values(r, k) for r in recs] for recs in per_run]
        for name in SELECTORS:
            arrays = [np.array([v[name] for v in run_values]) for run_values in values]
            est = _bootstrap(arrays, n_boot, _rng(seed, f"{source} {name} {k}"))
            points.append({"source": source, "selector": name, "k": k, **est})
    return points


def _bootstrap(arrays: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> dict:
    from lmgcot.report.stats import bootstrap_mean

    mean, low, high = bootstrap_mean(arrays, n_boot, rng)
    return {"mean": mean, "low": low, "high": high, "seeds": len(arrays)}


def _deciles(group: list[Run], samples: dict, n_boot: int, seed: int) -> list[dict]:
    """Per (source, measure, bin): the score range, the number of rationales and their EM with a
    question-resampling interval."""
    points = []
    for source, per_run in samples.items():
        # Each sampled rationale: (run, question) cluster, EM of its own answer, its scores.
        rows = [
            (i, rec["id"], j, rec)
            for i, recs in enumerate(per_run)
            for rec in recs
            for j in range(len(rec["answer_em"]))
        ]
        if not rows:
            continue
        measures = [
            SCORE,
            *in_order(set(rows[0][3].get("components") or {}) & set(ASPECTS), ASPECTS),
        ]
        ems = np.array([rec["answer_em"][j] for _, _, j, rec in rows], dtype=float)
        clusters = np.array([f"{i} {q}" for i, q, _, _ in rows])
        for measure in measures:
            values = [
                rec["scores"][j] if measure == SCORE else rec["components"][measure][j]
                for _, _, j, rec in rows
            ]
            points += _binned(source, measure, values, ems, clusters, n_boot, seed)
    greedy = [
        (i, q, r.quality[GREEDY_SOURCE][q], s["em"])
        for i, r in enumerate(group)
        if GREEDY_SOURCE in r.quality and GREEDY_SOURCE in r.scores
        for q, s in r.scores[GREEDY_SOURCE].items()
        if q in r.quality[GREEDY_SOURCE]
    ]
    if greedy:
        ems = np.array([g[3] for g in greedy], dtype=float)
        clusters = np.array([f"{g[0]} {g[1]}" for g in greedy])
        for aspect in in_order({a for g in greedy for a in g[2]} & set(ASPECTS), ASPECTS):
            values = [g[2].get(aspect) for g in greedy]
            points += _binned(
                f"{GREEDY_SOURCE} (greedy)", aspect, values, ems, clusters, n_boot, seed
            )
    return points


def _binned(
    source: str,
    measure: str,
    values: list,
    ems: np.ndarray,
    clusters: np.ndarray,
    n_boot: int,
    seed: int,
) -> list[dict]:
    """EM per decile of `values` (None left out); tied quantiles merge deciles."""
    keep = np.array([v is not None for v in values])
    if not keep.any():
        return []
    x = np.array([v for v in values if v is not None], dtype=float)
    y, c = ems[keep], clusters[keep]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, N_BINS + 1))[1:-1])
    bins = np.searchsorted(edges, x, side="right")
    out = []
    rng = _rng(seed, f"{source} {measure}")
    for b in np.unique(bins):
        mask = bins == b
        low, high = cluster_interval(y[mask], c[mask], n_boot, rng)
        out.append(
            {
                "source": source,
                "measure": measure,
                "bin": int(b),
                "bins": len(edges) + 1,
                "score_low": float(x[mask].min()),
                "score_high": float(x[mask].max()),
                "score_mean": float(x[mask].mean()),
                "n": int(mask.sum()),
                "em": float(y[mask].mean()),
                "em_low": low,
                "em_high": high,
            }
        )
    return out


def cluster_interval(
    values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[float, float]:
    """95% percentile interval of the mean of `values`, resampling whole clusters (a question's
    samples together) with replacement."""
    _, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(float)
    n = len(sums)
    if n < 2:
        return float("nan"), float("nan")
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    means = (draws @ sums) / np.maximum(draws @ counts, 1e-12)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


# -- the markdown and the figures ------------------------------------------------------------------


def to_markdown(report: dict, written: list[str]) -> str:
    out = io.StringIO()
    out.write("# Rationale quality and answer accuracy\n\n")
    out.write(
        f"Intervals: 95% percentile intervals, {report['n_boot']} bootstrap resamples; method rows "
        "and the k-curve resample seeds, then questions; deciles resample questions of the pooled "
        "seeds. `p`: two-sided, paired on the same seeds and questions against "
        f"`{BASELINE}`." + "".join(f" [{n}]({n})" for n in written[1:]) + "\n"
    )
    for c in report["configs"]:
        out.write(f"\n## {c['config']}\n\n")
        out.write(
            f"| method | seeds | EM | EM 95% CI | F1 | EM − {BASELINE} | 95% CI | p |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        for i, r in enumerate(c["rows"]):
            if r["oracle"] and (i == 0 or not c["rows"][i - 1]["oracle"]):
                out.write("| *bound: chooses with the gold answer (not a method)* |||||||| \n")
            diff = (
                f"{r['diff']:+.3f} | {_interval(r['diff_low'], r['diff_high'], True)} | "
                f"{r['p']:.3f}"
                if "diff" in r
                else " | | "
            )
            out.write(
                f"| {r['method']} | {r['seeds']} | {r['em']:.3f} | "
                f"{_interval(r['em_low'], r['em_high'])} | {r['f1']:.3f} | {diff} |\n"
            )
        if c["k_curve"]:
            out.write("\n**EM against k** (mean [95% CI]):\n\n")
            for source in dict.fromkeys(p["source"] for p in c["k_curve"]):
                ks = sorted({p["k"] for p in c["k_curve"] if p["source"] == source})
                out.write(
                    f"\n`{source}` samples\n\n| selector | " + " | ".join(f"k={k}" for k in ks)
                )
                out.write(" |\n|---|" + "---|" * len(ks) + "\n")
                for name in SELECTORS:
                    cells = [
                        f"{p['mean']:.3f} {_interval(p['low'], p['high'])}"
                        for k in ks
                        for p in c["k_curve"]
                        if p["source"] == source and p["selector"] == name and p["k"] == k
                    ]
                    out.write(f"| {name} | " + " | ".join(cells) + " |\n")
        if c["deciles"]:
            out.write(
                "\n**EM by quality decile** (lowest to highest; n: rationales in the decile):\n\n"
                "| source | measure | EM per decile | lowest decile | highest decile |\n"
                "|---|---|---|---|---|\n"
            )
            groups: dict[tuple[str, str], list[dict]] = {}
            for p in c["deciles"]:
                groups.setdefault((p["source"], p["measure"]), []).append(p)
            for (source, measure), pts in groups.items():
                ems = " ".join(f"{p['em']:.2f}" for p in pts)
                ends = " | ".join(
                    f"{p['em']:.3f} {_interval(p['em_low'], p['em_high'])} (n {p['n']})"
                    for p in (pts[0], pts[-1])
                )
                out.write(f"| {source} | {measure} | {ems} | {ends} |\n")
    return out.getvalue()


def _interval(low: float, high: float, signed: bool = False) -> str:
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def k_curve_figure(report: dict):
    """EM against k, a panel per (configuration, sample source), a line per selector."""
    plt = pyplot()
    panels = [
        (c, s) for c in report["configs"] for s in dict.fromkeys(p["source"] for p in c["k_curve"])
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    styles = {"oracle": "--", "best-of-k": "-", "self-consistency": "-", "weighted SC": "-"}
    for ax, (c, source) in zip(axes[0], panels):
        for name in SELECTORS:
            pts = sorted(
                (p for p in c["k_curve"] if p["source"] == source and p["selector"] == name),
                key=lambda p: p["k"],
            )
            k = np.array([p["k"] for p in pts])
            mean = np.array([p["mean"] for p in pts])
            err = np.array([[p["mean"] - p["low"], p["high"] - p["mean"]] for p in pts]).T
            ax.errorbar(k, mean, yerr=err, marker="o", capsize=3, ls=styles[name], label=name)
        base = next((r for r in c["rows"] if r["method"] == BASELINE), None)
        if base is not None:
            ax.axhspan(base["em_low"], base["em_high"], color="grey", alpha=0.2)
            ax.axhline(base["em"], color="grey", lw=1, label=f"{BASELINE} (greedy)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["k"] for p in c["k_curve"]}))
        ax.set_xticklabels([str(k) for k in sorted({p["k"] for p in c["k_curve"]})])
        ax.set_xlabel("k (samples per question)")
        ax.set_ylabel("test EM (95% CI)")
        ax.set_title(
            f"{source} samples" + ("" if c["config"] == "(all runs)" else f"\n{c['config']}")
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def deciles_figure(report: dict):
    """EM by quality decile, a panel per measure, a line per (configuration, source)."""
    plt = pyplot()
    points = [{**p, "config": c["config"]} for c in report["configs"] for p in c["deciles"]]
    measures = [SCORE, *in_order({p["measure"] for p in points} - {SCORE}, ASPECTS)]
    measures = [m for m in measures if any(p["measure"] == m for p in points)]
    cols = min(3, len(measures))
    rows = -(-len(measures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, measure in zip(axes.flat, measures):
        lines: dict[tuple[str, str], list[dict]] = {}
        for p in points:
            if p["measure"] == measure:
                lines.setdefault((p["config"], p["source"]), []).append(p)
        for (config, source), pts in lines.items():
            x = np.array([p["score_mean"] for p in pts])
            y = np.array([p["em"] for p in pts])
            err = np.array([[p["em"] - p["em_low"], p["em_high"] - p["em"]] for p in pts]).T
            err = np.nan_to_num(err)
            label = source if config == "(all runs)" else f"{source} {config}"
            ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, label=label)
        ax.set_title(measure)
        ax.set_xlabel("mean score in the decile")
        ax.set_ylabel("EM (95% CI)")
        ax.set_ylim(-0.02, 1.02)
    for ax in list(axes.flat)[len(measures) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    sys.exit(main())
