"""The comparison's plots: `comparison.png` (EM and the differences to the baseline) and
`tradeoff.png` (rationale quality against EM). matplotlib is imported on first use, with Agg."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmgcot.eval.methods import METHODS
from lmgcot.report.common import (
    FULL,
    config_label,
    in_order,
    quality_name,
    tradeoff_points,
    untouched_methods,
)


def plot_comparison(report: dict, path: Path) -> None:
    """comparison.png. Left: EM with 95% intervals, a row per configuration (the baseline first)
    and a point per method, offset vertically and coloured by method. Right: each configuration's
    paired EM difference to the baseline, hollow when within noise; methods with the baseline's
    very scores in every configuration are named in the title instead of drawn."""
    plt = _pyplot()
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
        f"lmgcot comparison\n95% CIs resample: {_intervals_note(report['rows'], 'resampled')}",
        fontsize=10,
    )
    _save(fig, path)


def plot_tradeoff(report: dict, path: Path) -> bool:
    """tradeoff.png: per configuration, rationale quality (x) against EM (y) of `lm_guided_rl`, in
    a colour of its own and labelled with the configuration, joined by a dotted line to the grey
    `lm_guided_kd` point it was refined from; all with 95% intervals. False, and nothing written,
    when no run has rationale scores for those sources."""
    points = tradeoff_points(report)
    if not points:
        return False
    plt = _pyplot()
    height = max(4.5, 1.8 + 0.24 * len(report["configs"]))
    fig, ax = plt.subplots(figsize=(9.5, height))
    fig.subplots_adjust(left=0.09, right=0.66, top=0.9, bottom=0.22)
    distilled = {p["config"]: p for p in points if p["source"] == "lm_guided_kd"}
    refined = [p for p in points if p["source"] == "lm_guided_rl"]
    if distilled:
        # One marker per distinct point: configurations usually share the distilled student.
        unique = {
            tuple(p[k] for k in ("mean", "low", "high", "em", "em_low", "em_high")): p
            for p in distilled.values()
        }
        _cross(ax, list(unique.values()), "0.45", marker="s", ms=5)
    colors = {p["config"]: _color(plt, i) for i, p in enumerate(refined)}
    for p in refined:
        _draw_refined(ax, p, distilled.get(p["config"]), colors[p["config"]], report)
    _label_refined(ax, refined, colors, report, height)
    ax.set_xlabel(f"rationale quality: {quality_name(report)} (95% CI)")
    ax.set_ylabel("exact match (95% CI)")
    ax.grid(alpha=0.3)
    notes = (
        f"95% CIs resample, quality: {_intervals_note(points, 'resampled')}; "
        f"EM: {_intervals_note(points, 'em_resampled')}"
    )
    ax.set_title(f"Task accuracy vs rationale quality\n{notes}", fontsize=10)
    ax.legend(
        handles=_tradeoff_handles(bool(distilled), bool(refined)),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    _save(fig, path)
    return True


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
        errs = _errors([(r["em"], r["em_low"], r["em_high"]) for r in points])
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
            xerr=_errors([(t["mean"], t["low"], t["high"])]),
            fmt="o",
            ms=5,
            capsize=2,
            color=color,
            mfc="white" if noise else color,
        )
    if report["baseline"] in rows.row:
        ax.text(0, rows.row[report["baseline"]], " baseline", va="center", fontsize=8)
    ax.set_xlabel(f"EM minus {report['baseline']} (paired: same seeds and questions)")
    ax.grid(axis="x", alpha=0.3)
    title = "difference to the baseline (hollow: 95% CI contains 0)"
    if untouched:
        title += "\nnot drawn, identical to the baseline: " + ", ".join(
            in_order(untouched, METHODS)
        )
    ax.set_title(title, fontsize=9)


# -- tradeoff.png ----------------------------------------------------------------------------------


def _draw_refined(ax, point: dict, start: dict | None, color, report: dict) -> None:
    """A configuration's refined point, joined by a dotted line to its distilled `start` (where
    refinement moved the student), edged in black for the baseline."""
    if start is not None:
        ax.plot(
            [start["mean"], point["mean"]],
            [start["em"], point["em"]],
            color=color,
            lw=0.8,
            ls=":",
            zorder=1,
        )
    edge = "black" if point["config"] == report["baseline"] else color
    _cross(ax, [point], color, marker="o", ms=6, mec=edge)


def _label_refined(ax, refined: list[dict], colors: dict, report: dict, height: float) -> None:
    """Label each refined point with its configuration right of the axes, the labels stacked
    where points are close; the axes keep their margins."""
    ax.margins(0.08)
    low, high = ax.get_ylim()
    # One 8-pt label line (11 pt with spacing) in data units: the axes are height * fraction tall.
    gap = 11 / 72 / (height * ax.get_position().height) * (high - low)
    for p, y in zip(refined, _spread([p["em"] for p in refined], gap), strict=True):
        color = colors[p["config"]]
        ax.annotate(
            config_label(p["config"], report),
            xy=(p["mean"], p["em"]),
            xytext=(1.03, y),
            textcoords=("axes fraction", "data"),
            va="center",
            fontsize=8,
            color=color,
            fontweight="bold" if p["config"] == report["baseline"] else "normal",
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7},
            annotation_clip=False,
        )
    ax.set_ylim(low, high)


def _tradeoff_handles(distilled: bool, refined: bool) -> list:
    """The trade-off legend's entries for the sources drawn."""
    from matplotlib.lines import Line2D

    handles = []
    if distilled:
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
    return handles


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


# -- both ------------------------------------------------------------------------------------------


def _errors(points: list[tuple[float, float, float]]) -> list[list[float]]:
    """matplotlib's xerr/yerr for (value, low, high) points; no bar where the interval is n/a."""
    return [
        [0.0 if np.isnan(lo) else v - lo for v, lo, _ in points],
        [0.0 if np.isnan(hi) else hi - v for v, _, hi in points],
    ]


def _intervals_note(estimates: list[dict], key: str) -> str:
    """What the plotted intervals resampled (`estimates[...][key]`), for a plot's title."""
    kinds = sorted({e[key] for e in estimates}, key=lambda k: k != FULL)
    return "; ".join(kinds)


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
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
