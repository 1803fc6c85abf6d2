"""The comparison's `tradeoff.png`: rationale quality against EM, per configuration. matplotlib is
imported on first use, with Agg (`lmgcot.report.plots.pyplot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmgcot.report.common import config_label, quality_name, tradeoff_points
from lmgcot.report.plots import error_bars, intervals_note, pyplot, save_figure

# The narrowest span an axis of scores in [0, 1] shows: identical points (all 0, say) would
# otherwise get an axis of a few hundredths around them.
MIN_SPAN = 0.1
EDGE = 0.02


def plot_tradeoff(report: dict, path: Path) -> bool:
    """tradeoff.png (`tradeoff_figure`); False, and nothing written, when there is nothing to
    draw."""
    fig = tradeoff_figure(report)
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def tradeoff_figure(report: dict):
    """tradeoff.png's figure: per configuration, rationale quality (x) against EM (y) of `lm_guided_rl`, in
    a colour of its own and labelled with the configuration, joined by a dotted line to the grey
    `lm_guided_kd` point it was refined from; all with 95% intervals. None when no run has
    rationale scores for those sources."""
    points = tradeoff_points(report)
    if not points:
        return None
    plt = pyplot()
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
        # Above the refined circles (zorder 2), which would otherwise hide them where they meet.
        _cross(ax, list(unique.values()), "0.45", marker="s", ms=5, zorder=3)
    colors = {p["config"]: _color(plt, i) for i, p in enumerate(refined)}
    for p in refined:
        _draw_refined(ax, p, distilled.get(p["config"]), colors[p["config"]], report)
    ax.margins(0.08)
    _score_axis(ax, "x")
    _score_axis(ax, "y")
    _label_refined(ax, refined, colors, report, height)
    ax.set_xlabel(f"rationale quality: {quality_name(report)} (95% CI)")
    ax.set_ylabel("exact match (95% CI)")
    ax.grid(alpha=0.3)
    notes = (
        f"95% CIs resample, quality: {intervals_note(points, 'resampled')}; "
        f"EM: {intervals_note(points, 'em_resampled')}"
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
    return fig


def _score_axis(ax, axis: str) -> None:
    """Keep a score axis within the scores' range [0, 1] (plus a small margin: nothing is drawn
    outside it), at least `MIN_SPAN` wide around its points."""
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    low, high = max(low, -EDGE), min(high, 1 + EDGE)
    if high - low < MIN_SPAN:
        middle = (low + high) / 2
        low = min(max(middle - MIN_SPAN / 2, -EDGE), 1 + EDGE - MIN_SPAN)
        high = low + MIN_SPAN
    (ax.set_xlim if axis == "x" else ax.set_ylim)(low, high)


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
    where points are close; the axes keep their limits."""
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
        xerr=error_bars([(p["mean"], p["low"], p["high"]) for p in points]),
        yerr=error_bars([(p["em"], p["em_low"], p["em_high"]) for p in points]),
        ls="",
        color=color,
        ecolor=to_rgba(color, 0.45),
        elinewidth=0.9,
        capsize=2,
        **{"zorder": 2, **style},
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
