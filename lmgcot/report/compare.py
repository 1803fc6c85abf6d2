"""`lmgcot-compare SWEEP_DIR`: compare the runs of a sweep with honest statistics.

Reads every run under a directory (each with `results.json`, its `.hydra/overrides.yaml`,
`eval/<method>.jsonl` predictions and `eval/quality/<source>.jsonl` per-question aspect scores),
groups runs into configurations by their overrides minus the seed, and writes `comparison.md`,
`comparison.csv`, `comparison.png` and `tradeoff.png` into the directory; when the runs evaluated
methods that choose among samples, also `selection.md` and its figures (`lmgcot.report.selection`).

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
import sys
from pathlib import Path

import numpy as np

from lmgcot.eval.methods import METHODS, RL_METHODS
from lmgcot.report.common import ASPECT_SOURCE, QUALITY_SOURCES, in_order
from lmgcot.report.estimates import Measure, estimate, metric_measure, quality_measure
from lmgcot.report.plots import plot_comparison
from lmgcot.report.runs import CompareError, Run, load_runs, run_aspects
from lmgcot.report.selection import has_selection, write_selection
from lmgcot.report.tables import to_csv, to_markdown
from lmgcot.report.tradeoff_plot import plot_tradeoff
from lmgcot.report.wandb_log import log_to_wandb, sweep_name
from lmgcot.utils.io import atomic_write_text


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
    question, of every aspect the sweep scored. CompareError for an unknown `baseline` or
    `quality_aspect`. The bootstrap is seeded by `seed`: the same arguments give the same dict.
    """
    configs: dict[str, list[Run]] = {}
    for run in runs:
        configs.setdefault(run.config, []).append(run)
    baseline = _baseline(configs, baseline)
    aspects = run_aspects(runs)
    if quality_aspect is not None and quality_aspect not in aspects:
        raise CompareError(f"--quality-aspect {quality_aspect!r}: no run scored it; have {aspects}")
    chosen = (quality_aspect,) if quality_aspect else tuple(aspects)
    base_by_seed = {r.seed: r for r in configs[baseline]} if baseline else {}
    report = {
        "baseline": baseline,
        "configs": sorted(configs, key=lambda c: (c != baseline, c)),
        "aspects": aspects,
        "quality_aspect": quality_aspect,
        "rows": [],
        "tests": [],
        "tradeoff": [],
        "aspect_tests": [],
        "quality": [],
        "n_boot": n_boot,
    }
    for config in report["configs"]:
        group = configs[config]
        rows = _method_rows(config, group, n_boot, seed)
        report["rows"] += rows
        report["tradeoff"] += _tradeoff(config, group, rows, chosen, n_boot, seed)
        report["quality"] += _mean_quality(config, group)
        if base_by_seed and config != baseline:
            ems = {r["method"]: metric_measure(r["method"], "em") for r in rows}
            report["tests"] += _tests(config, group, "method", ems, base_by_seed, n_boot, seed)
            quality = {a: quality_measure(ASPECT_SOURCE, (a,)) for a in aspects}
            report["aspect_tests"] += _tests(
                config, group, "aspect", quality, base_by_seed, n_boot, seed
            )
    return report


def main(argv: list[str] | None = None) -> int:
    """`lmgcot-compare`: write comparison.md, .csv, .png and (with rationale scores) tradeoff.png
    and print the markdown; 0, or 2 with a one-line error on stderr."""
    args = _parser().parse_args(argv)
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
    markdown = to_markdown(report)
    atomic_write_text(out / "comparison.md", markdown)
    atomic_write_text(out / "comparison.csv", to_csv(report))
    plot_comparison(report, out / "comparison.png")
    written = ["comparison.md", "comparison.csv", "comparison.png"]
    if plot_tradeoff(report, out / "tradeoff.png"):
        written.append("tradeoff.png")
    if has_selection(runs):  # methods that choose among samples: quality against EM
        written += write_selection(runs, out, args.n_boot, args.seed)
    print(markdown)
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    if args.wandb:
        group = sweep_name(args.sweep_dir)
        where = log_to_wandb(out, group, args.wandb_project)
        print(f"logged to W&B (group {group}): {where}")
    return 0


# -- helpers ---------------------------------------------------------------------------------------


def _baseline(configs: dict[str, list[Run]], baseline: str | None) -> str | None:
    """The baseline configuration: `baseline`, CompareError when there is no such one; by default
    the first (by name) whose overrides contain `reward=task`, None when none does."""
    if baseline is None:
        return next((c for c in sorted(configs) if "reward=task" in c.split()), None)
    if baseline not in configs:
        raise CompareError(
            f"--baseline {baseline!r}: no such configuration; have {sorted(configs)}"
        )
    return baseline


def _method_rows(config: str, group: list[Run], n_boot: int, seed: int) -> list[dict]:
    """A row per method the configuration's runs evaluated, in the pipeline's order: EM and F1
    with their intervals; `lm_guided_rl` rows also count the seeds that kept the distilled
    student."""
    rows = []
    for method in in_order({m for r in group for m in r.results["methods"]}, METHODS):
        em, f1 = (
            estimate(group, metric_measure(method, m), None, n_boot, seed) for m in ("em", "f1")
        )
        row = {"config": config, "method": method, "seeds": em["seeds"]}
        row["resampled"] = em["resampled"]
        for name, est in (("em", em), ("f1", f1)):
            row.update({name: est["mean"], f"{name}_low": est["low"], f"{name}_high": est["high"]})
        if method in RL_METHODS:
            # Runs whose refine stage exported the distilled student (rl.keep_best).
            row["distilled_seeds"] = sum(
                method in r.results["methods"]
                and (r.results.get("refine") or {}).get("selected") == "distilled"
                for r in group
            )
        rows.append(row)
    return rows


def _tradeoff(
    config: str,
    group: list[Run],
    rows: list[dict],
    aspects: tuple[str, ...],
    n_boot: int,
    seed: int,
) -> list[dict]:
    """Per rationale source with scores and an EM row in `rows`: the quality estimate (the mean of
    `aspects`) with that method's EM and its interval."""
    by_method = {r["method"]: r for r in rows}
    points = []
    for source in QUALITY_SOURCES:
        est = estimate(group, quality_measure(source, aspects), None, n_boot, seed)
        if est["seeds"] and source in by_method:
            em = {k: by_method[source][k] for k in ("em", "em_low", "em_high")}
            em["em_resampled"] = by_method[source]["resampled"]
            points.append({"config": config, "source": source, **est, **em})
    return points


def _tests(
    config: str,
    group: list[Run],
    key: str,
    measures: dict[str, Measure],
    base_by_seed: dict[int, Run],
    n_boot: int,
    seed: int,
) -> list[dict]:
    """The paired estimate against the baseline of each of `measures`, as {"config", key: its name,
    **estimate}; those with no seed in common left out."""
    tests = []
    for name, measure in measures.items():
        test = estimate(group, measure, base_by_seed, n_boot, seed)
        if test["seeds"]:
            tests.append({"config": config, key: name, **test})
    return tests


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


def _parser() -> argparse.ArgumentParser:
    """The command line of `lmgcot-compare`."""
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
    return parser


if __name__ == "__main__":
    sys.exit(main())
