"""`lmgcot-compare SWEEP_DIR`: compare the runs of a sweep with honest statistics.

Reads every run under a directory (each with `results.json`, its `.hydra/overrides.yaml` and
`eval/<method>.jsonl` predictions), groups runs into configurations by their overrides minus the
seed, and writes `comparison.md`, `comparison.csv` and `comparison.png` into the directory:

* per configuration and method: mean EM and F1 over seeds, with a 95% bootstrap interval that
  resamples test questions within each seed's run (seeds keep their weight); `lm_guided_rl` rows
  say in how many seeds the refine stage exported the distilled student unchanged;
* per configuration: the eight rationale-quality scores of each rationale source, mean over seeds;
* for each configuration against a baseline configuration (`--baseline`, by default the one whose
  overrides contain `reward=task`): a paired bootstrap of the EM difference on the same questions
  and seeds, with a two-sided p-value, and a plain verdict when the difference is within noise.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lmgcot.eval.methods import METHODS, RL_METHODS
from lmgcot.utils.io import atomic_write_text

ALPHA = 0.05


@dataclass
class Run:
    path: Path
    config: str  # the overrides without the seed: what identifies a configuration
    seed: int
    results: dict
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # scores[method][question id] = {"em": float, "f1": float}


class CompareError(Exception):
    pass


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
                rows = [json.loads(line) for line in preds.read_text().splitlines() if line.strip()]
                run.scores[method] = {r["id"]: {"em": r["em"], "f1": r["f1"]} for r in rows}
        runs.append(run)
    if not runs:
        raise CompareError(f"{root}: no results.json below it")
    # A configuration is named by the overrides that vary across the sweep.
    shared = set.intersection(*(set(r.config.split()) for r in runs))
    for r in runs:
        r.config = " ".join(o for o in r.config.split() if o not in shared) or "(all runs)"
    return runs


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def _boot_means(per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot resampled means over seeds, questions drawn with replacement within every seed."""
    boots = np.zeros(n_boot)
    for x in per_seed:
        idx = rng.integers(0, len(x), size=(n_boot, len(x)))
        boots += x[idx].mean(axis=1)
    return boots / len(per_seed)


def bootstrap_mean(
    per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds of each seed's question mean, and its 95%
    percentile interval from resampling questions with replacement within every seed."""
    mean = float(np.mean([x.mean() for x in per_seed]))
    low, high = np.quantile(_boot_means(per_seed, n_boot, rng), [ALPHA / 2, 1 - ALPHA / 2])
    return mean, float(low), float(high)


def paired_bootstrap(
    diffs_per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(mean difference, low, high, two-sided p) of per-question differences, paired within seeds.

    p is twice the smaller share of resampled means on either side of 0 (at least 1/n_boot).
    """
    mean = float(np.mean([x.mean() for x in diffs_per_seed]))
    boots = _boot_means(diffs_per_seed, n_boot, rng)
    low, high = np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2])
    tail = min(np.mean(boots <= 0), np.mean(boots >= 0))
    p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
    return mean, float(low), float(high), p


def compare(runs: list[Run], baseline: str | None, n_boot: int, seed: int) -> dict:
    """The comparison as a dict: rows per (config, method), quality, and tests vs the baseline."""
    rng = np.random.default_rng(seed)
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(run.config, []).append(run)
    if baseline is None:
        baseline = next((c for c in configs if "reward=task" in c.split()), None)
    elif baseline not in configs:
        raise CompareError(
            f"--baseline {baseline!r}: no such configuration; have {sorted(configs)}"
        )
    rows, quality, tests = [], [], []
    for config, group in sorted(configs.items()):
        methods = _ordered({m for r in group for m in r.results["methods"]})
        for method in methods:
            row = {"config": config, "method": method, "seeds": 0}
            for metric in ("em", "f1"):
                per_seed = [
                    np.array([s[metric] for s in r.scores[method].values()])
                    for r in group
                    if r.scores.get(method)
                ]
                if per_seed:
                    m, lo, hi = bootstrap_mean(per_seed, n_boot, rng)
                else:  # no per-question file: the summary only, without an interval
                    vals = [
                        r.results["methods"][method][metric]
                        for r in group
                        if method in r.results["methods"]
                    ]
                    m, lo, hi = float(np.mean(vals)), float("nan"), float("nan")
                row.update({metric: m, f"{metric}_low": lo, f"{metric}_high": hi})
            row["seeds"] = sum(method in r.results["methods"] for r in group)
            if method in RL_METHODS:
                # Runs whose refine stage exported the distilled student (rl.keep_best).
                row["distilled_seeds"] = sum(
                    method in r.results["methods"]
                    and (r.results.get("refine") or {}).get("selected") == "distilled"
                    for r in group
                )
            rows.append(row)
        for source in sorted({s for r in group for s in r.results.get("rationale_quality", {})}):
            per = [
                r.results["rationale_quality"][source]
                for r in group
                if source in r.results.get("rationale_quality", {})
            ]
            aspects = sorted({a for p in per for a in p})
            quality.append(
                {
                    "config": config,
                    "source": source,
                    **{a: float(np.mean([p[a] for p in per if a in p])) for a in aspects},
                }
            )
    if baseline is not None:
        base_runs = {r.seed: r for r in configs[baseline]}
        for config, group in sorted(configs.items()):
            if config == baseline:
                continue
            for method in _ordered({m for r in group for m in r.scores}):
                diffs = []
                for run in group:
                    base = base_runs.get(run.seed)
                    if base is None or method not in base.scores or method not in run.scores:
                        continue
                    shared = sorted(set(run.scores[method]) & set(base.scores[method]))
                    if shared:
                        diffs.append(
                            np.array(
                                [
                                    run.scores[method][q]["em"] - base.scores[method][q]["em"]
                                    for q in shared
                                ]
                            )
                        )
                if not diffs:
                    continue
                d, lo, hi, p = paired_bootstrap(diffs, n_boot, rng)
                tests.append(
                    {
                        "config": config,
                        "method": method,
                        "seeds": len(diffs),
                        "em_diff": d,
                        "low": lo,
                        "high": hi,
                        "p": p,
                        "verdict": "within noise"
                        if lo <= 0 <= hi
                        else ("better" if d > 0 else "worse"),
                    }
                )
    return {
        "baseline": baseline,
        "rows": rows,
        "quality": quality,
        "tests": tests,
        "n_boot": n_boot,
    }


# -- writing ---------------------------------------------------------------------------------------


def to_markdown(report: dict) -> str:
    out = io.StringIO()
    out.write("# Comparison\n\n")
    out.write(
        f"EM/F1: mean over seeds; [low, high] is a 95% bootstrap interval ({report['n_boot']} "
        "resamples of test questions within each seed).\n\n"
    )
    out.write("| configuration | method | seeds | EM | EM 95% CI | F1 | F1 95% CI |\n")
    out.write("|---|---|---|---|---|---|---|\n")
    for r in report["rows"]:
        method = r["method"]
        if r.get("distilled_seeds"):
            method += f" (the distilled student in {r['distilled_seeds']} of {r['seeds']} seeds)"
        out.write(
            f"| {r['config']} | {method} | {r['seeds']} | {r['em']:.3f} | "
            f"{_interval(r['em_low'], r['em_high'])} | {r['f1']:.3f} | "
            f"{_interval(r['f1_low'], r['f1_high'])} |\n"
        )
    if report["quality"]:
        aspects = [k for k in report["quality"][0] if k not in ("config", "source")]
        out.write("\n## Rationale quality (mean over seeds)\n\n")
        out.write("| configuration | source | " + " | ".join(aspects) + " |\n")
        out.write("|---|---|" + "---|" * len(aspects) + "\n")
        for q in report["quality"]:
            cells = " | ".join(f"{q.get(a, float('nan')):.3f}" for a in aspects)
            out.write(f"| {q['config']} | {q['source']} | {cells} |\n")
    out.write("\n## Against the baseline\n\n")
    if report["baseline"] is None:
        out.write("No baseline configuration (none has `reward=task`; pass --baseline).\n")
    elif not report["tests"]:
        out.write(f"Baseline `{report['baseline']}`: no other configuration shares its seeds.\n")
    else:
        out.write(
            f"Baseline `{report['baseline']}`. EM difference on the same questions and seeds, "
            "paired bootstrap; 'within noise' means the 95% interval contains 0.\n\n"
        )
        out.write("| configuration | method | seeds | EM diff | 95% CI | p | verdict |\n")
        out.write("|---|---|---|---|---|---|---|\n")
        for t in report["tests"]:
            out.write(
                f"| {t['config']} | {t['method']} | {t['seeds']} | {t['em_diff']:+.3f} | "
                f"{_interval(t['low'], t['high'], signed=True)} | {t['p']:.3f} | {t['verdict']} |\n"
            )
    return out.getvalue()


def to_csv(report: dict) -> str:
    out = io.StringIO()
    keys = ["config", "method", "seeds", "em", "em_low", "em_high", "f1", "f1_low", "f1_high"]
    writer = csv.DictWriter(out, fieldnames=[*keys, "em_diff_vs_baseline", "p_vs_baseline"])
    writer.writeheader()
    tests = {(t["config"], t["method"]): t for t in report["tests"]}
    for r in report["rows"]:
        t = tests.get((r["config"], r["method"]), {})
        writer.writerow(
            {
                **{k: r[k] for k in keys},
                "em_diff_vs_baseline": t.get("em_diff", ""),
                "p_vs_baseline": t.get("p", ""),
            }
        )
    return out.getvalue()


def plot(report: dict, path: Path) -> None:
    """Left: EM with 95% intervals per configuration (a row each); methods whose EM is the same in
    every configuration (those the swept settings do not touch) are vertical reference lines.
    Right: each configuration's paired EM difference against the baseline, hollow when within noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({r["config"] for r in report["rows"]})
    methods = _ordered({r["method"] for r in report["rows"]})
    by = {(r["config"], r["method"]): r for r in report["rows"]}
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    constant = {
        m
        for m in methods
        if len(configs) > 1
        and len({round(by[(c, m)]["em"], 9) for c in configs if (c, m) in by}) == 1
    }
    varying = [m for m in methods if m not in constant]
    tests = [t for t in report["tests"] if t["method"] in varying]
    panels = 2 if tests else 1
    height = max(3.0, 1.4 + 0.42 * len(configs))
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, height), sharey=True, squeeze=False)
    ax = axes[0][0]
    rows = {c: i for i, c in enumerate(configs)}
    step = 0.7 / max(len(varying), 1)
    for m in sorted(constant, key=methods.index):
        r = next(by[(c, m)] for c in configs if (c, m) in by)
        ax.axvline(r["em"], color=colors[m], lw=1.2, ls="--", label=f"{m} (every config)")
        if not (np.isnan(r["em_low"]) or np.isnan(r["em_high"])):
            ax.axvspan(r["em_low"], r["em_high"], color=colors[m], alpha=0.08, lw=0)
    for j, m in enumerate(varying):
        ys, xs, errs = [], [], [[], []]
        for c in configs:
            r = by.get((c, m))
            if r is None:
                continue
            ys.append(rows[c] + (j - (len(varying) - 1) / 2) * step)
            xs.append(r["em"])
            errs[0].append(0 if np.isnan(r["em_low"]) else r["em"] - r["em_low"])
            errs[1].append(0 if np.isnan(r["em_high"]) else r["em_high"] - r["em"])
        ax.errorbar(xs, ys, xerr=errs, fmt="o", ms=4, capsize=2, color=colors[m], label=m)
    ax.set_yticks(range(len(configs)))
    ax.set_yticklabels(configs, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("exact match (mean over seeds, 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("EM per configuration", fontsize=10)
    if tests:
        ax2 = axes[0][1]
        ax2.axvline(0, color="black", lw=0.8)
        for j, m in enumerate(varying):
            for t in (t for t in tests if t["method"] == m):
                y = rows[t["config"]] + (j - (len(varying) - 1) / 2) * step
                noise = t["verdict"] == "within noise"
                ax2.errorbar(
                    [t["em_diff"]],
                    [y],
                    xerr=[[t["em_diff"] - t["low"]], [t["high"] - t["em_diff"]]],
                    fmt="o",
                    ms=5,
                    capsize=2,
                    color=colors[m],
                    mfc="white" if noise else colors[m],
                )
        ax2.set_xlabel(f"EM minus {report['baseline']} (paired, same seeds and questions)")
        ax2.grid(axis="x", alpha=0.3)
        ax2.set_title("difference to the baseline (hollow: within noise)", fontsize=10)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="lower center",
        ncol=min(4, len(methods)),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("lmgcot comparison", fontsize=11)
    fig.tight_layout(rect=(0, 0.1 if len(methods) > 4 else 0.06, 1, 1))
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _ordered(methods: set[str]) -> list[str]:
    """Methods in the pipeline's order, unknown ones after them alphabetically."""
    return sorted(methods, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))


def _interval(low: float, high: float, signed: bool = False) -> str:
    if np.isnan(low) or np.isnan(high):
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(low)}, {fmt.format(high)}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lmgcot-compare",
        description="Compare the runs under a sweep directory: comparison.md, .csv and .png.",
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="a directory with runs (results.json) below it"
    )
    parser.add_argument("--baseline", help="configuration to test against (default: reward=task)")
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", type=Path, help="output directory (default: the sweep directory)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the table and plot to a W&B run in the sweep's group (offline unless "
        "WANDB_MODE=online)",
    )
    parser.add_argument("--wandb-project", default="lmgcot", help="W&B project (default: lmgcot)")
    args = parser.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise CompareError(f"{args.sweep_dir}: not a directory")
        if args.n_boot < 100:
            raise CompareError(f"--n-boot {args.n_boot}: use at least 100 resamples")
        report = compare(load_runs(args.sweep_dir), args.baseline, args.n_boot, args.seed)
    except CompareError as err:
        print(f"lmgcot-compare: error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", to_markdown(report))
    atomic_write_text(out / "comparison.csv", to_csv(report))
    plot(report, out / "comparison.png")
    print(to_markdown(report))
    print(f"wrote {out / 'comparison.md'}, comparison.csv, comparison.png")
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
    """Log comparison.csv as a table, the plot and comparison.md to a new W&B run; its directory."""
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
        run.log(
            {
                "comparison/table": wandb.Table(columns=header, data=rows),
                "comparison/plot": wandb.Image(str(out / "comparison.png")),
            }
        )
        run.save(str(out / "comparison.md"), base_path=str(out), policy="now")
        return str(run.dir)
    finally:
        run.finish()


if __name__ == "__main__":
    sys.exit(main())
