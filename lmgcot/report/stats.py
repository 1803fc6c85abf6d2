"""The bootstrap the comparison's intervals and tests come from: question means, two-stage (seeds,
then questions) means, their 95% percentile intervals and paired tests; pure numpy."""

from __future__ import annotations

import numpy as np

ALPHA = 0.05
# Bootstrap draws held in memory at once (question indices), to bound memory on large test sets.
CHUNK = 4_000_000


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
    mean, _, low, high = _mean_and_replicates(per_seed, n_boot, rng)
    return mean, low, high


def paired_bootstrap(
    diffs_per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(mean difference, low, high, two-sided p) of per-question differences, paired within seeds
    (each array holds one seed's differences on the questions both sides answered); seeds, then
    questions within each drawn seed, are resampled as in `hierarchical_means`.

    p is twice the smaller share of resampled means on either side of 0 (at least 1/n_boot).
    """
    mean, boots, low, high = _mean_and_replicates(diffs_per_seed, n_boot, rng)
    tail = min(np.mean(boots <= 0), np.mean(boots >= 0))
    p = float(min(1.0, max(2 * tail, 1.0 / n_boot)))
    return mean, low, high, p


def _mean_and_replicates(
    per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, float, float]:
    """(mean, replicates, low, high): the mean over seeds of each seed's question mean, its
    `hierarchical_means` replicates, and their 95% percentile interval."""
    mean = float(np.mean([x.mean() for x in per_seed]))
    boots = hierarchical_means(per_seed, n_boot, rng)
    low, high = np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2])
    return mean, boots, float(low), float(high)
