"""benchmarks/readme_figures.py's comparison, on results.json files written here (no training)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "readme_figures", REPO / "benchmarks" / "readme_figures.py"
)
rf = importlib.util.module_from_spec(_spec)
sys.modules["readme_figures"] = rf  # dataclasses look their module up there
_spec.loader.exec_module(rf)

EM = rf.Figure("docs/methods.md", "lmgcot x=1", "methods.finetune_cot.em", 0.80, 0.05, (0, 1))
FAST = rf.Figure("docs/configuration.md", "lmgcot x=2", "wall_s", 120, 0, check="at_most")


def results(em: float | None = None, wall_s: float | None = 30.0) -> dict:
    methods = {} if em is None else {"finetune_cot": {"em": em, "f1": em, "n": 500}}
    return {"methods": methods, "wall_s": wall_s}


@pytest.mark.unit
def test_a_dotted_path_reads_results_json_and_a_missing_key_is_none():
    r = {"methods": {"cot": {"em": 0.48, "n": 1000}}, "refine": None}
    assert rf.read_metric(r, "methods.cot.em") == 0.48
    assert rf.read_metric(r, "methods.cot.n") == 1000.0
    assert rf.read_metric(r, "methods.standard.em") is None
    assert rf.read_metric(r, "refine.rollouts") is None
    assert rf.read_metric(r, "methods.cot.em.x") is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ems", "verdict", "mean"),
    [
        ((0.78, 0.86), "reproduced", 0.82),  # the mean over seeds is compared, not each seed
        ((0.75, 0.85), "reproduced", 0.80),  # the tolerance's edge holds
        ((0.70, 0.78), "NOT reproduced", 0.74),
        ((0.90, 0.96), "NOT reproduced", 0.93),  # too good is not the documented figure either
    ],
)
def test_the_seeds_mean_is_compared_within_the_tolerance(ems, verdict, mean):
    row = rf.compare(EM, [results(e, wall_s=w) for e, w in zip(ems, (100, 200))])
    assert row["verdict"] == verdict
    assert row["measured"] == pytest.approx(mean)
    assert row["documented"] == "0.800 ± 0.050" and row["seconds"] == "100 / 200"


@pytest.mark.unit
def test_an_upper_bound_a_missing_metric_and_a_failed_run_each_have_their_verdict():
    assert rf.compare(FAST, [results(wall_s=119)])["verdict"] == "reproduced"
    assert rf.compare(FAST, [results(wall_s=121)])["verdict"] == "NOT reproduced"
    assert rf.compare(FAST, [results(wall_s=None)])["verdict"] == "missing from results.json"
    assert rf.compare(EM, [results(0.8), results()])["verdict"] == "missing from results.json"
    row = rf.compare(EM, [results(0.8), None])
    assert row["verdict"] == "run failed" and row["measured"] is None


@pytest.mark.unit
def test_finished_runs_are_reused_and_the_table_is_written(tmp_path, monkeypatch, capsys):
    # Every cheap figure's runs, already finished under --root, each at its documented value.
    for fig in rf.FIGURES:
        for seed in fig.seeds:
            run_dir = tmp_path / "runs" / rf.slug(fig.command) / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            file = run_dir / "results.json"
            r = json.loads(file.read_text()) if file.exists() else {"methods": {}}
            if fig.metric != "wall_s":
                _, method, key = fig.metric.split(".")
                r["methods"].setdefault(method, {})[key] = fig.expected
            file.write_text(json.dumps(r))
            (run_dir / "wall_s").write_text("42\n")
    monkeypatch.setattr(rf.subprocess, "run", _no_training)
    out = tmp_path / "table.md"
    assert rf.main(["--root", str(tmp_path), "--out", str(out), "--reuse", "--jobs", "2"]) == 0
    table = out.read_text()
    assert table == capsys.readouterr().out.rstrip("\n") + "\n"
    cheap = [f for f in rf.FIGURES if not f.default_run]
    assert table.count("| reproduced |") == len(cheap)
    assert "`lmgcot dataset=last_letter experiment=finetune_cot`" in table
    assert "| `lmgcot` |" not in table  # the default run only with --include-default


def _no_training(cmd, **kwargs):
    assert cmd[0] == "git", f"a finished run was run again: {cmd}"
    return type("Done", (), {"stdout": "", "returncode": 0})()


@pytest.mark.unit
@pytest.mark.parametrize(
    "fig",
    [f for f in rf.FIGURES if f.metric.endswith(".em")],
    ids=lambda f: f"{f.command} {f.metric}",
)
def test_each_em_figure_sits_in_its_doc_beside_its_command(fig):
    text = (REPO / fig.doc).read_text()
    assert fig.command in text
    assert f"{fig.expected:.3f}".rstrip("0") in text
