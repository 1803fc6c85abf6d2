"""The comparison's `comparison.png` (EM and the differences to the baseline), and the helpers it
shares with `tradeoff.png` (`lmgcot.report.tradeoff_plot`). matplotlib is imported on first use,
with Agg."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmgcot.eval.methods import METHODS
from lmgcot.report.common import (
    FULL,
    config_label,
    in_order,
    untouched_methods,
)


def plot_comparison(report: dict, path: Path) -> None:
    """comparison.png (`comparison_figure`)."""
    save_figure(comparison_figure(report), path)


def comparison_figure(report: dict):
    """comparison.png's figure. Left: EM with 95% intervals, a row per configuration (the baseline first)
    and a point per method, offset vertically and coloured by method. Right: each configuration's
    paired EM difference to the baseline, hollow when within noise; methods with the baseline's
    very scores in every configuration are named in the title instead of drawn."""
    plt = pyplot()
    configs = report["configs"]
    methods = in_order({r["method"] for r in report["rows"]}, METHODS)
    untouched = untouched_methods(report)
    tests = [t for t in report["tests"] if t["method"] not in untouched]
    step = min(0.2, 0.8 / len(methods))
    rows = _Rows(
        row={c: i for i, c in enumerate(configs)},
        offset={m: (j - (len(methods) - 1) / 2) * step for j, m in enumerate(methods)},
        color={m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)},
    )
    height = 1.8 + len(configs) * (0.25 + 0.11 * len(methods))
    fig, axes = plt.subplots(
        1, 2 if tests else 1, figsize=(13 if tests else 7.5, height), sharey=True, squeeze=False
    )
    fig.set_layout_engine("constrained")
    _draw_em(axes[0][0], report, methods, rows)
    if tests:
        _draw_differences(axes[0][1], report, tests, untouched, rows)
    for panel in axes[0]:  # a thin line between configurations
        for y in range(1, len(configs)):
            panel.axhline(y - 0.5, color="0.85", lw=0.6)
    fig.legend(loc="outside lower center", ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.suptitle(
        f"lmgcot comparison\n95% CIs resample: {intervals_note(report['rows'], 'resampled')}",
        fontsize=10,
    )
    return fig


# -- comparison.png --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """Where comparison.png draws: a row per configuration, offset within it and coloured by
    method."""

    row: dict[str, int]
    offset: dict[str, float]
    color: dict[str, tuple]

    def y(self, config: str, method: str) -> float:
        return self.row[config] + self.offset[method]


def _draw_em(ax, report: dict, methods: list[str], rows: _Rows) -> None:
    """The left panel: EM with its interval per configuration and method, labelled by method."""
    configs = report["configs"]
    for m in methods:
        points = [r for r in report["rows"] if r["method"] == m]
        ys = [rows.y(r["config"], m) for r in points]
        xs = [r["em"] for r in points]
        errs = error_bars([(r["em"], r["em_low"], r["em_high"]) for r in points])
        ax.errorbar(xs, ys, xerr=errs, fmt="o", ms=4, capsize=2, color=rows.color[m], label=m)
    ax.set_yticks(range(len(configs)), [config_label(c, report) for c in configs], fontsize=8)
    ax.set_ylim(len(configs) - 0.5, -0.5)  # the first configuration on top
    ax.set_xlabel("exact match (mean over seeds, 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("EM per configuration and method", fontsize=10)


def _draw_differences(
    ax, report: dict, tests: list[dict], untouched: set[str], rows: _Rows
) -> None:
    """The right panel: the paired EM differences `tests` to the baseline, hollow within noise;
    the `untouched` methods named in the title."""
    ax.axvline(0, color="black", lw=0.8)
    for t in tests:
        noise = t["verdict"] not in ("better", "worse")
        color = rows.color[t["method"]]
        ax.errorbar(
            [t["mean"]],
            [rows.y(t["config"], t["method"])],
            xerr=error_bars([(t["mean"], t["low"], t["high"])]),
            fmt="o",
            ms=5,
            capsize=2,
            color=color,
            mfc="white" if noise else color,
        )
    if report["baseline"] in rows.row:
        ax.text(0, rows.row[report["baseline"]], " baseline", va="center", fontsize=8)
    ax.set_xlabel(f"EM minus {report['baseline']} (paired: same seeds and questions)")
    # Differences are often a fraction of a point: the default nine ticks need four decimals
    # each and crowd the narrower panel.
    ax.xaxis.set_major_locator(_few_ticks())
    ax.grid(axis="x", alpha=0.3)
    title = "difference to the baseline (hollow: 95% CI contains 0)"
    if untouched:
        title += "\nnot drawn, identical to the baseline: " + ", ".join(
            in_order(untouched, METHODS)
        )
    ax.set_title(title, fontsize=9)


# -- shared with tradeoff.png ----------------------------------------------------------------------


def error_bars(points: list[tuple[float, float, float]]) -> list[list[float]]:
    """matplotlib's xerr/yerr for (value, low, high) points; no bar where the interval is n/a."""
    return [
        [0.0 if np.isnan(lo) else v - lo for v, lo, _ in points],
        [0.0 if np.isnan(hi) else hi - v for v, _, hi in points],
    ]


def intervals_note(estimates: list[dict], key: str) -> str:
    """What the plotted intervals resampled (`estimates[...][key]`), for a plot's title."""
    kinds = sorted({e[key] for e in estimates}, key=lambda k: k != FULL)
    return "; ".join(kinds)


def _few_ticks():
    """A tick locator for a narrow axis: at most five ticks at round steps."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10])


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write the figure atomically; the tight box keeps legends and labels outside the axes."""
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    fig.clf()
    pyplot().close(fig)
    tmp.replace(path)
