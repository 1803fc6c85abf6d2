"""`lmgcot-compare`: statistics on hand-made sweep directories, and the files it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmgcot.report.compare import (
    bootstrap_mean,
    compare,
    load_runs,
    main,
    paired_bootstrap,
)

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


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    n = 2000
    for seed in (0, 1):
        base = pattern(n, 0.3, seed)
        better = [1.0 if i % 10 == 0 else e for i, e in enumerate(base)]  # some 0s become 1s
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
    expected = np.mean(
        [
            np.mean([1.0 if i % 10 == 0 else e for i, e in enumerate(pattern(2000, 0.3, s))])
            for s in (0, 1)
        ]
    )
    assert better["em"] == pytest.approx(expected)
    quality = {q["config"]: q for q in report["quality"]}
    assert quality["reward=task"]["factuality"] == pytest.approx(0.55)


def test_paired_test_finds_a_real_gain_and_calls_a_copy_noise(sweep):
    report = compare(load_runs(sweep), None, N_BOOT, seed=0)
    tests = {t["config"]: t for t in report["tests"]}
    rows = {r["config"]: r for r in report["rows"]}
    gain = tests["reward=all"]
    assert gain["em_diff"] == pytest.approx(rows["reward=all"]["em"] - rows["reward=task"]["em"])
    assert gain["em_diff"] > 0.03 and gain["low"] > 0 and gain["p"] <= 2 / N_BOOT
    assert gain["verdict"] == "better" and gain["seeds"] == 2
    same = tests["reward=fluency"]
    assert same["em_diff"] == 0 and same["p"] == 1.0 and same["verdict"] == "within noise"


def test_constant_scores_have_a_zero_width_interval():
    rng = np.random.default_rng(0)
    assert bootstrap_mean([np.ones(50), np.zeros(30)], 500, rng) == (0.5, 0.5, 0.5)
    d, low, high, p = paired_bootstrap([np.zeros(40)], 500, rng)
    assert (d, low, high, p) == (0.0, 0.0, 0.0, 1.0)


def test_the_bootstrap_is_seeded(sweep):
    runs = load_runs(sweep)
    assert compare(runs, None, 500, seed=3) == compare(runs, None, 500, seed=3)
    assert compare(runs, None, 500, seed=3) != compare(runs, None, 500, seed=4)


def test_cli_writes_markdown_csv_and_png(sweep, capsys):
    assert main([str(sweep), "--n-boot", "500"]) == 0
    md = (sweep / "comparison.md").read_text()
    assert "| reward=all | lm_guided_kd | 2 |" in md and "within noise" in md and "better" in md
    lines = (sweep / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("config,method,seeds,em,em_low,em_high")
    assert len(lines) == 4
    assert (sweep / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_logs_the_comparison_to_wandb_offline(sweep, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main([str(sweep), "--n-boot", "200", "--wandb"]) == 0
    [record] = (sweep / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
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
