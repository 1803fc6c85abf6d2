"""`lmgcot-compare`: statistics on hand-made sweep directories, and the files it writes."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmgcot.report.compare import compare, main
from lmgcot.report.plots import comparison_figure, plot_comparison
from lmgcot.report.runs import load_runs
from lmgcot.report.stats import bootstrap_mean, hierarchical_means, paired_bootstrap, question_means
from lmgcot.report.tables import to_markdown
from lmgcot.report.tradeoff_plot import _spread, plot_tradeoff, tradeoff_figure

pytestmark = pytest.mark.unit

N_BOOT = 4000


def write_run(root: Path, name: str, overrides: list[str], seed: int, em: list[float]) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    (run / "eval").mkdir()
    rows = [{"id": f"q{seed}-{i}", "em": e, "f1": e} for i, e in enumerate(em)]
    (run / "eval" / "lm_guided_kd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {
        "methods": {
            "lm_guided_kd": {"em": float(np.mean(em)), "f1": float(np.mean(em)), "n": len(em)}
        },
        "rationale_quality": {"lm_guided_kd": {"factuality": 0.5 + seed / 10, "fluency": 0.9}},
        "setup": {"seed": seed},
    }
    (run / "results.json").write_text(json.dumps(results))
    return run


def pattern(n: int, share: float, offset: int = 0) -> list[float]:
    """n scores with exactly round(n * share) ones, spread evenly."""
    ones = round(n * share)
    return [1.0 if ((i + offset) * ones) % n < ones else 0.0 for i in range(n)]


def gain(scores: list[float], residue: int = 1) -> list[float]:
    """Every tenth question (i % 10 == residue) answered right."""
    return [1.0 if i % 10 == residue else e for i, e in enumerate(scores)]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    n = 2000
    for seed in (0, 1):
        base = pattern(n, 0.3, seed)
        better = gain(base)
        write_run(tmp_path, f"{seed}a", ["reward=task"], seed, base)
        write_run(tmp_path, f"{seed}b", ["reward=all"], seed, better)
        write_run(tmp_path, f"{seed}c", ["reward=fluency"], seed, list(base))
    return tmp_path


def test_means_are_over_seeds_and_intervals_match_the_normal_approximation(sweep):
    report = compare(load_runs(sweep), None, N_BOOT, seed=0)
    assert report["baseline"] == "reward=task"
    rows = {r["config"]: r for r in report["rows"]}
    base = rows["reward=task"]
    assert base["seeds"] == 2 and base["em"] == pytest.approx(0.3)
    # Mean of two seeds' question means; each seed has variance p(1-p)/n.
    half = 1.96 * math.sqrt(0.3 * 0.7 / 2000 / 2)
    assert base["em_low"] == pytest.approx(0.3 - half, abs=0.004)
    assert base["em_high"] == pytest.approx(0.3 + half, abs=0.004)
    better = rows["reward=all"]
    assert better["em"] == pytest.approx(
        np.mean([np.mean(gain(pattern(2000, 0.3, s))) for s in (0, 1)])
    )
    quality = {q["config"]: q for q in report["quality"]}
    assert quality["reward=task"]["factuality"] == pytest.approx(0.55)


def test_paired_test_finds_a_real_gain_and_calls_a_copy_identical(sweep):
    report = compare(load_runs(sweep), None, N_BOOT, seed=0)
    tests = {t["config"]: t for t in report["tests"]}
    rows = {r["config"]: r for r in report["rows"]}
    better = tests["reward=all"]
    assert better["mean"] == pytest.approx(rows["reward=all"]["em"] - rows["reward=task"]["em"])
    assert better["mean"] > 0.03 and better["low"] > 0 and better["p"] <= 2 / N_BOOT
    assert better["verdict"] == "better" and better["seeds"] == 2
    same = tests["reward=fluency"]
    assert same["mean"] == 0 and same["p"] == 1.0 and same["verdict"] == "identical"


def test_a_gain_in_one_seed_of_two_is_within_noise(tmp_path):
    # The question-only bootstrap called this significant: seed 0 gains nothing, seed 1 gains 0.1.
    for seed in (0, 1):
        base = pattern(2000, 0.3, seed)
        write_run(tmp_path, f"{seed}a", ["reward=task"], seed, base)
        write_run(tmp_path, f"{seed}b", ["reward=all"], seed, gain(base, residue=0))
    [test] = compare(load_runs(tmp_path), None, N_BOOT, seed=0)["tests"]
    assert test["mean"] == pytest.approx(0.05)
    # A quarter of the resamples draw seed 0 twice: a difference of exactly 0, so p = 2 / 4.
    assert test["low"] == 0.0 and test["high"] > 0.09
    assert test["p"] == pytest.approx(0.5, abs=0.03) and test["verdict"] == "within noise"


def test_constant_scores_have_a_zero_width_interval_when_seeds_agree():
    rng = np.random.default_rng(0)
    assert bootstrap_mean([np.ones(50), np.ones(30)], 500, rng) == (1.0, 1.0, 1.0)
    d, low, high, p = paired_bootstrap([np.zeros(40)], 500, rng)
    assert (d, low, high, p) == (0.0, 0.0, 0.0, 1.0)


def test_two_constant_seeds_resample_to_three_values_by_hand():
    # Seeds drawn with replacement: (0, 0) 1/4, (0, 1) or (1, 0) 1/2, (1, 1) 1/4.
    boots = hierarchical_means([np.zeros(50), np.ones(30)], 20000, np.random.default_rng(0))
    values, counts = np.unique(boots, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    assert counts / 20000 == pytest.approx([0.25, 0.5, 0.25], abs=0.015)
    assert bootstrap_mean([np.zeros(50), np.ones(30)], 2000, np.random.default_rng(0)) == (
        0.5,
        0.0,
        1.0,
    )


def test_one_seed_is_exactly_the_question_bootstrap():
    x = np.random.default_rng(1).random(300)
    boots = hierarchical_means([x], 500, np.random.default_rng(7))
    assert np.array_equal(boots, question_means(x, 500, np.random.default_rng(7)))
    # By hand: two questions, 0 and 1; a resample's mean is 0, 0.5 or 1 with 1/4, 1/2, 1/4.
    boots = hierarchical_means([np.array([0.0, 1.0])], 20000, np.random.default_rng(0))
    assert np.mean(boots == 0.5) == pytest.approx(0.5, abs=0.015)


def test_intervals_are_the_2_5_and_97_5_percentiles_of_the_same_replicates():
    per_seed = [np.random.default_rng(2).random(40), np.random.default_rng(3).random(40)]
    boots = hierarchical_means(per_seed, 4000, np.random.default_rng(5))
    expected = np.quantile(boots, [0.025, 0.975])
    _, low, high = bootstrap_mean(per_seed, 4000, np.random.default_rng(5))
    assert (low, high) == (expected[0], expected[1])
    _, low, high, _ = paired_bootstrap(per_seed, 4000, np.random.default_rng(5))
    assert (low, high) == (expected[0], expected[1])


def test_drawing_in_chunks_gives_the_draws_of_one_chunk(monkeypatch):
    import lmgcot.report.stats as stats

    x = np.random.default_rng(1).random(50)  # 50 distinct values: drawn as indices
    whole = question_means(x, 10, np.random.default_rng(3))
    monkeypatch.setattr(stats, "CHUNK", 100)  # two replicates a chunk: five chunks
    assert np.array_equal(question_means(x, 10, np.random.default_rng(3)), whole)


def test_the_multinomial_shortcut_resamples_like_drawing_indices():
    rng = np.random.default_rng(0)
    binary = np.array([0.0, 1.0] * 32)  # two distinct values: drawn as multinomial counts
    jittered = binary + np.arange(64) * 1e-9  # 64 distinct values: drawn as indices
    for x in (binary, jittered):
        boots = question_means(x, 20000, rng)
        assert boots.mean() == pytest.approx(x.mean(), abs=0.002)
        assert boots.std() == pytest.approx(0.5 / math.sqrt(64), rel=0.03)


def test_the_interval_carries_the_spread_between_seeds():
    rng = np.random.default_rng(0)
    per_seed = [m + rng.normal(0, 0.001, 400) for m in (0.2, 0.5, 0.8)]
    mean, low, high = bootstrap_mean(per_seed, N_BOOT, np.random.default_rng(0))
    # Questions only (the seeds fixed): the mean over seeds of each seed's question resamples.
    fixed = np.mean([question_means(x, N_BOOT, rng) for x in per_seed], axis=0)
    q_low, q_high = np.quantile(fixed, [0.025, 0.975])
    assert mean == pytest.approx(0.5, abs=0.001) and q_high - q_low < 0.001
    # All three draws of the lowest seed happen in 1/27 > 2.5% of resamples, so the interval
    # reaches the extreme seed means.
    assert low < 0.21 and high > 0.79 and (high - low) > 500 * (q_high - q_low)


def test_paired_seeds_that_disagree_in_sign_are_within_noise():
    # Seed differences +0.06, -0.04, +0.05: a resample's mean is <= 0 when it draws the negative
    # seed three times (1/27) or twice (6/27), so p = 2 * 7/27 whatever the number of questions.
    per_seed = [d + np.array([-0.001, 0.001] * 100) for d in (0.06, -0.04, 0.05)]
    d, low, high, p = paired_bootstrap(per_seed, 20000, np.random.default_rng(0))
    assert d == pytest.approx(0.07 / 3)
    assert low < 0 < high and p == pytest.approx(14 / 27, abs=0.02)
    # Each seed alone is far from 0.
    for x in per_seed:
        assert paired_bootstrap([x], 1000, np.random.default_rng(0))[3] == pytest.approx(1 / 1000)


def test_the_bootstrap_is_seeded(sweep):
    runs = load_runs(sweep)
    assert compare(runs, None, 500, seed=3) == compare(runs, None, 500, seed=3)
    assert compare(runs, None, 500, seed=3) != compare(runs, None, 500, seed=4)


def test_cli_writes_markdown_csv_and_png(sweep, capsys):
    assert main([str(sweep), "--n-boot", "500"]) == 0
    md = (sweep / "comparison.md").read_text()
    assert "| reward=all | lm_guided_kd | 2 |" in md and "identical" in md and "better" in md
    lines = (sweep / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("config,method,seeds,em,em_low,em_high")
    assert len(lines) == 4
    assert (sweep / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_logs_the_comparison_to_wandb_offline(sweep, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main([str(sweep), "--n-boot", "200", "--wandb"]) == 0
    [record] = (sweep / "wandb").glob("offline-run-*/run-*.wandb")
    # W&B's service process may still be writing the file on a loaded machine: wait for it.
    deadline = time.monotonic() + 300  # bounds a hang only
    while b"comparison/plot" not in (data := record.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"comparison/table" in data and b"comparison/plot" in data
    assert sweep.name.encode() in data  # the group: no sweep_name in these runs, so the dir's name


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main([str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "r" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{")
    assert main([str(tmp_path)]) == 2
    assert str(bad) in capsys.readouterr().err
    write_run(tmp_path / "ok", "x", ["reward=task"], 0, [1.0, 0.0])
    bad.unlink()
    assert main([str(tmp_path), "--baseline", "reward=nope"]) == 2
    assert "reward=nope" in capsys.readouterr().err


def test_rl_rows_say_when_refine_kept_the_distilled_student(tmp_path):
    for seed, selected in ((0, "distilled"), (1, "rl")):
        run = write_run(tmp_path, f"r{seed}", ["reward=task"], seed, pattern(40, 0.5, seed))
        eval_dir = run / "eval"
        (eval_dir / "lm_guided_rl.jsonl").write_text((eval_dir / "lm_guided_kd.jsonl").read_text())
        results = json.loads((run / "results.json").read_text())
        results["methods"]["lm_guided_rl"] = results["methods"]["lm_guided_kd"]
        results["refine"] = {"selected": selected}
        (run / "results.json").write_text(json.dumps(results))
    report = compare(load_runs(tmp_path), None, 200, seed=0)
    rows = {r["method"]: r for r in report["rows"]}
    assert (
        rows["lm_guided_rl"]["distilled_seeds"] == 1
        and "distilled_seeds" not in rows["lm_guided_kd"]
    )
    assert main([str(tmp_path), "--n-boot", "200"]) == 0
    md = (tmp_path / "comparison.md").read_text()
    assert "| lm_guided_rl (the distilled student in 1 of 2 seeds) | 2 |" in md
    assert "| lm_guided_kd | 2 |" in md


# -- rationale quality: the trade-off and the aspects against the baseline ---------------------------

N_Q = 200


def aspect_rows(seed: int, coherence_gain: float) -> list[dict]:
    """Per-question aspect scores: coherence varies by question (plus a varying gain), factuality
    is constant, fluency is null on every fourth question."""
    return [
        {
            "id": f"q{seed}-{i}",
            "coherence": 0.5
            + 0.02 * (i % 5)
            + (coherence_gain + 0.01 * (i % 3) if coherence_gain else 0),
            "factuality": 0.6,
            "fluency": None if i % 4 == 0 else 0.8,
        }
        for i in range(N_Q)
    ]


def write_mix_run(root: Path, reward: str, seed: int, coherence_gain: float) -> Path:
    """A run with lm_guided_kd and lm_guided_rl (the same answers), and per-question aspect scores
    for both: the distilled student's are the baseline's, the refined one's gain on coherence."""
    run = write_run(root, f"{reward}-{seed}", [f"reward={reward}"], seed, pattern(N_Q, 0.5, seed))
    eval_dir = run / "eval"
    (eval_dir / "lm_guided_rl.jsonl").write_text((eval_dir / "lm_guided_kd.jsonl").read_text())
    (eval_dir / "quality").mkdir()
    results = json.loads((run / "results.json").read_text())
    results["methods"]["lm_guided_rl"] = results["methods"]["lm_guided_kd"]
    for source, rows in (
        ("lm_guided_kd", aspect_rows(seed, 0.0)),
        ("lm_guided_rl", aspect_rows(seed, coherence_gain)),
    ):
        (eval_dir / "quality" / f"{source}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
        results["rationale_quality"][source] = {
            a: float(np.mean([r[a] for r in rows if r[a] is not None]))
            for a in ("coherence", "factuality", "fluency")
        }
    (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.fixture
def mixes(tmp_path: Path) -> Path:
    for seed in (0, 1):
        write_mix_run(tmp_path, "task", seed, 0.0)
        write_mix_run(tmp_path, "coherence", seed, 0.05)
    return tmp_path


def question_quality(rows: list[dict], aspects: tuple[str, ...]) -> float:
    """By hand: the mean over questions of each question's mean over its non-null aspects."""
    means = [np.mean([r[a] for a in aspects if r[a] is not None]) for r in rows]
    return float(np.mean(means))


def test_single_aspect_mix_is_tested_on_its_own_aspect(mixes):
    report = compare(load_runs(mixes), None, N_BOOT, seed=0)
    assert report["aspects"] == ["factuality", "coherence", "fluency"]  # the scorer's order
    tests = {t["aspect"]: t for t in report["aspect_tests"] if t["config"] == "reward=coherence"}
    # 0.05 plus 0.01 * (i % 3): 67 zeros, 67 ones and 66 twos in 200 questions.
    assert tests["coherence"]["mean"] == pytest.approx(0.05 + 0.01 * (67 + 2 * 66) / 200)
    assert tests["coherence"]["low"] > 0.05 and tests["coherence"]["p"] == 1 / N_BOOT
    assert tests["coherence"]["verdict"] == "better" and tests["coherence"]["seeds"] == 2
    assert (
        tests["factuality"]["verdict"] == "identical" and tests["fluency"]["verdict"] == "identical"
    )
    md = to_markdown(report)
    assert "on their own aspect: 1 of 1 (reward=coherence); not: none." in md
    [row] = [line for line in md.splitlines() if line.startswith("| reward=coherence | 2 | ")]
    cells = row.split(" | ")
    assert cells[2] == "+0.000 [+0.000, +0.000]"  # factuality, not bold
    assert cells[3].startswith("**+0.060 [+0.05") and cells[3].endswith("]***")  # bold, p < 0.05


def test_tradeoff_quality_is_the_mean_of_the_aspects_per_question(mixes):
    report = compare(load_runs(mixes), None, N_BOOT, seed=0)
    points = {(p["config"], p["source"]): p for p in report["tradeoff"]}
    rl = points[("reward=coherence", "lm_guided_rl")]
    all_three = ("coherence", "factuality", "fluency")
    expected = np.mean([question_quality(aspect_rows(s, 0.05), all_three) for s in (0, 1)])
    assert rl["mean"] == pytest.approx(expected)
    assert rl["low"] < rl["mean"] < rl["high"] and rl["resampled"] == "seeds and questions"
    assert rl["em"] == pytest.approx(0.5) and rl["em_low"] < 0.5 < rl["em_high"]
    kd = points[("reward=coherence", "lm_guided_kd")]
    assert kd["mean"] < rl["mean"]
    # Configurations with the same distilled student get the very same point and interval.
    assert {k: v for k, v in kd.items() if k != "config"} == {
        k: v for k, v in points[("reward=task", "lm_guided_kd")].items() if k != "config"
    }
    one = compare(load_runs(mixes), None, N_BOOT, seed=0, quality_aspect="coherence")
    rl = {(p["config"], p["source"]): p for p in one["tradeoff"]}[
        ("reward=coherence", "lm_guided_rl")
    ]
    coherence = np.mean([question_quality(aspect_rows(s, 0.05), ("coherence",)) for s in (0, 1)])
    assert rl["mean"] == pytest.approx(coherence)
    assert "Quality: mean of 3 aspects per question (aspects:" in to_markdown(report)
    assert "Quality: coherence (aspects:" in to_markdown(one)


def test_without_per_question_scores_quality_falls_back_to_run_means(mixes):
    for path in mixes.glob("*/eval/quality/*.jsonl"):
        path.unlink()
    report = compare(load_runs(mixes), None, N_BOOT, seed=0)
    rl = {(p["config"], p["source"]): p for p in report["tradeoff"]}[
        ("reward=coherence", "lm_guided_rl")
    ]
    means = [json.loads((mixes / f"coherence-{s}" / "results.json").read_text()) for s in (0, 1)]
    by_run = [np.mean(list(m["rationale_quality"]["lm_guided_rl"].values())) for m in means]
    assert rl["mean"] == pytest.approx(np.mean(by_run))
    assert rl["resampled"] == "seeds only: run means" and rl["low"] <= rl["high"]
    test = {t["aspect"]: t for t in report["aspect_tests"]}["coherence"]
    assert test["resampled"] == "seeds only: run means"
    assert "| 2 seeds only: run means |" in to_markdown(report)
    # One seed: a run's mean has nothing to resample, so no interval and no p.
    for path in mixes.glob("*-1"):
        for f in sorted(path.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        path.rmdir()
    report = compare(load_runs(mixes), None, N_BOOT, seed=0)
    test = {t["aspect"]: t for t in report["aspect_tests"]}["coherence"]
    assert math.isnan(test["low"]) and math.isnan(test["p"]) and test["verdict"] == "n/a"
    md = to_markdown(report)
    assert (
        "| 1 seed: run means, no interval |" in md and "| 1 seed: questions only |" in md
    )  # EM: per question


def test_cli_writes_the_tradeoff_plot_and_aspect_columns(mixes, capsys):
    assert main([str(mixes), "--n-boot", "200", "--quality-aspect", "coherence"]) == 0
    assert (mixes / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![trade-off](tradeoff.png)" in (mixes / "comparison.md").read_text()
    rows = list(csv.DictReader(io.StringIO((mixes / "comparison.csv").read_text())))
    rl = next(
        r for r in rows if r["config"] == "reward=coherence" and r["method"] == "lm_guided_rl"
    )
    assert float(rl["coherence_diff_vs_baseline"]) == pytest.approx(0.05995)
    assert (
        float(rl["quality"]) > float(rl["quality_low"]) and rl["resampled"] == "seeds and questions"
    )
    kd = next(
        r for r in rows if r["config"] == "reward=coherence" and r["method"] == "lm_guided_kd"
    )
    assert kd["coherence_diff_vs_baseline"] == "" and kd["quality"] != ""


def test_quality_errors_are_one_line_naming_the_problem(mixes, capsys):
    assert main([str(mixes), "--quality-aspect", "wit"]) == 2
    err = capsys.readouterr().err
    assert "--quality-aspect 'wit'" in err and "coherence" in err and err.count("\n") == 1
    bad = mixes / "task-0" / "eval" / "quality" / "lm_guided_rl.jsonl"
    bad.write_text('{"id": "q0-0", "coherence": 0.5}\n{"coherence": 0.5}\n')
    assert main([str(mixes)]) == 2
    assert f"{bad}:2: no 'id'" in capsys.readouterr().err
    bad.write_text("{oops\n")
    assert main([str(mixes)]) == 2
    assert f"{bad}:1: not valid JSON" in capsys.readouterr().err


def test_comparison_plot_grows_with_the_configurations(tmp_path):
    def height(configs: int) -> int:
        root = tmp_path / str(configs)
        for c in range(configs):
            write_run(
                root, f"r{c}", [f"reward=r{c}" if c else "reward=task"], 0, pattern(40, 0.5, c)
            )
        report = compare(load_runs(root), None, 200, seed=0)
        plot_comparison(report, root / "c.png")
        assert not plot_tradeoff({**report, "tradeoff": []}, root / "t.png")
        assert not (root / "t.png").exists()
        return struct.unpack(">II", (root / "c.png").read_bytes()[16:24])[1]

    assert height(8) > height(2) + 200  # 0.36 inch (43 pixels) a configuration


def test_labels_spread_apart_in_order():
    spots = _spread([0.02, 1.0, 0.0, 0.01], gap=0.1)
    # The three close targets keep their mean and order, 0.1 apart; the far one does not move.
    assert spots == pytest.approx([0.11, 1.0, -0.09, 0.01])
    assert _spread([0.0, 0.5], gap=0.1) == [0.0, 0.5]


def test_fluency_is_said_to_be_scored_under_each_run_s_own_student(mixes, tmp_path):
    md = to_markdown(compare(load_runs(mixes), None, 200, seed=0))
    note = "fluency is exp(mean token log-prob) under each run's own distilled student"
    quality = md.split("## Rationale quality per aspect")[1]
    tradeoff = md.split("## Task accuracy vs rationale quality")[1].split("\n## ")[0]
    assert note in quality and note in tradeoff
    # Without a fluency score there is nothing to say.
    for path in [*mixes.glob("*/eval/quality/*.jsonl"), *mixes.glob("*/results.json")]:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if path.name == "results.json":
            for scores in rows[0]["rationale_quality"].values():
                scores.pop("fluency")
        else:
            for row in rows:
                row.pop("fluency")
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert note not in to_markdown(compare(load_runs(mixes), None, 200, seed=0))


# -- what the plots show -------------------------------------------------------------------------


def test_distilled_squares_are_drawn_above_refined_circles(mixes):
    fig = tradeoff_figure(compare(load_runs(mixes), None, 200, seed=0))
    ax = fig.axes[0]
    zorder = {
        line.get_marker(): line.get_zorder()
        for line in ax.get_lines()
        if line.get_marker() != "None"
    }
    assert zorder["s"] > zorder["o"], zorder


def test_identical_quality_scores_still_get_a_readable_axis(mixes):
    report = compare(load_runs(mixes), None, 200, seed=0)
    for p in report["tradeoff"]:
        p.update(mean=0.0, low=0.0, high=0.0)
    low, high = tradeoff_figure(report).axes[0].get_xlim()
    # Quality is in [0, 1]: not a few hundredths either side of 0.
    assert high - low >= 0.1 and -0.05 <= low <= 0.0 < high


def test_small_differences_get_few_well_spaced_tick_labels(tmp_path):
    """Differences of a fraction of a point: the right panel of comparison.png shows a few
    round ticks, each label clear of the next (not nine four-decimal ones)."""
    n = 400
    for seed in (0, 1):
        base = pattern(n, 0.3, seed)
        write_run(tmp_path, f"{seed}a", ["reward=task"], seed, base)
        tiny = [1.0 if i % 97 == 5 else e for i, e in enumerate(base)]
        write_run(tmp_path, f"{seed}b", ["reward=all"], seed, tiny)
    report = compare(load_runs(tmp_path), None, 200, seed=0)
    assert abs(report["tests"][0]["mean"]) < 0.01
    fig = comparison_figure(report)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panel = fig.axes[1]
    low, high = panel.get_xlim()
    boxes = [
        label.get_window_extent(renderer)
        for tick, label in zip(panel.get_xticks(), panel.get_xticklabels(), strict=True)
        if low <= tick <= high
    ]
    assert 2 <= len(boxes) <= 6
    widths = sorted(b.width for b in boxes)
    gaps = [b.x0 - a.x1 for a, b in zip(boxes, boxes[1:])]
    assert min(gaps) >= widths[len(widths) // 2], (gaps, widths)
