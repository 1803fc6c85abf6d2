"""Never a traceback: every malformed input (a data file of each format, an override, the
environment, a full disk, a teacher that kept nothing) stops `lmgcot` with exit 2 and one line
naming the file, record or key and the problem; a run stopped before any work leaves no run
directory behind.

All cases run in one module-scoped batch of forked children (tests/test_cli.py: fork_runs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import TINY_STUDENT
from test_cli import QUICK, fork_runs
from test_data_official import good_record
from test_data_reasoning_official import commonsenseqa_record, gsm8k_record, strategyqa_record

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLES = Path(__file__).resolve().parents[1] / "lmgcot" / "data" / "samples"
# Deeper than Python's recursion limit: json.loads raises RecursionError on it.
DEEP = "[" * 100_000 + "]" * 100_000
# A path no one (root included) may create: sysfs refuses new directories.
UNWRITABLE = "/sys/lmgcot-no-such-dir"

# Faults, in the children whose environment asks for them: a torch.save that fills the disk, and a
# teacher stage whose rationales were all filtered out (the simulated large LM is right by chance
# too often for a real run to keep none).
FAULTS = r"""
import errno, os, torch
import lmgcot.pipeline.stages.distill as _distill
_real_kept = _distill.kept_rationales
def _kept(*args, **kwargs):
    if os.environ.get("LMGCOT_TEST_FAULT") == "NO_RATIONALE":
        return []
    return _real_kept(*args, **kwargs)
_distill.kept_rationales = _kept
_real_save = torch.save
def _save(obj, f, *args, **kwargs):
    if os.environ.get("LMGCOT_TEST_FAULT") == "ENOSPC":
        f.write(b"the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    return _real_save(obj, f, *args, **kwargs)
torch.save = _save
"""


def _hotpot(n=6, **change):
    records = [good_record(f"r{i}") for i in range(n)]
    records[2] = {**records[2], **change}
    return records


def _without(record: dict, key: str) -> dict:
    record = copy.deepcopy(record)
    del record[key]
    return record


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _csqa(bad: dict) -> str:
    return _jsonl([commonsenseqa_record(0), bad, *(commonsenseqa_record(i) for i in (2, 3, 4))])


_ONE_CHOICE = copy.deepcopy(commonsenseqa_record(1))
_ONE_CHOICE["question"]["choices"] = _ONE_CHOICE["question"]["choices"][:1]
_ONE_CHOICE["answerKey"] = "A"
_GSM8K = [gsm8k_record(i) for i in range(8)]
_STRATEGY = [strategyqa_record(i) for i in range(8)]
_TWOWIKI = json.loads((SAMPLES / "2wiki_sample.json").read_text(encoding="utf-8"))

# name -> (dataset option, file name, file content (str, bytes, or None: no file), needles).
# Every needle must be in the error line; the file's path always is.
FILES: dict[str, tuple[str, str, str | bytes | None, list[str]]] = {
    "hotpotqa truncated": ("hotpotqa", "h.json", '[{"_id": "a", "question": ', ["bad JSON"]),
    "hotpotqa empty": ("hotpotqa", "h.json", "", ["empty file"]),
    "hotpotqa blank": ("hotpotqa", "h.json", " \n\t\n", ["empty file"]),
    "hotpotqa latin-1": ("hotpotqa", "h.json", b'[{"q": "caf\xe9"}]', ["not UTF-8"]),
    "hotpotqa object": ("hotpotqa", "h.json", '{"_id": "a"}', ["expected a list"]),
    "hotpotqa no records": ("hotpotqa", "h.json", "[]", ["no records"]),
    "hotpotqa number record": ("hotpotqa", "h.json", json.dumps([1, 2]), ["expected an object"]),
    "hotpotqa no question": (
        "hotpotqa",
        "h.json",
        json.dumps([*_hotpot()[:2], _without(good_record("x"), "question")]),
        ["record x", "question"],
    ),
    "hotpotqa answer a list": (
        "hotpotqa",
        "h.json",
        json.dumps(_hotpot(answer=["a"])),
        ["record r2", "answer"],
    ),
    "hotpotqa duplicate id": (
        "hotpotqa",
        "h.json",
        json.dumps(_hotpot(_id="r1")),
        ["r1", "duplicate"],
    ),
    "hotpotqa nested deep": ("hotpotqa", "h.json", DEEP, ["nested too deeply"]),
    "hotpotqa missing file": ("hotpotqa", "nope.json", None, ["file not found"]),
    "2wiki truncated": ("2wiki", "w.json", json.dumps(_TWOWIKI)[:-40], ["bad JSON"]),
    "2wiki no answer": (
        "2wiki",
        "w.json",
        json.dumps([*_TWOWIKI[:3], _without(_TWOWIKI[3], "answer")]),
        [_TWOWIKI[3]["_id"], "answer"],
    ),
    "2wiki nested deep": ("2wiki", "w.json", DEEP, ["nested too deeply"]),
    "gsm8k bad line": ("gsm8k", "g.jsonl", _jsonl(_GSM8K[:3]) + "{nope\n", ["line 4", "bad JSON"]),
    "gsm8k no ####": (
        "gsm8k",
        "g.jsonl",
        _jsonl([*_GSM8K[:2], {**_GSM8K[2], "answer": "seven"}]),
        ["line 3", "####"],
    ),
    "gsm8k nested line": ("gsm8k", "g.jsonl", _jsonl(_GSM8K[:2]) + DEEP + "\n", ["line 3"]),
    "gsm8k empty": ("gsm8k", "g.jsonl", "\n\n", ["empty file"]),
    "strategyqa answer a string": (
        "strategyqa",
        "s.json",
        json.dumps([*_STRATEGY[:2], {**_STRATEGY[2], "answer": "yes"}]),
        ["sq02", "answer"],
    ),
    "strategyqa truncated": ("strategyqa", "s.json", json.dumps(_STRATEGY)[:50], ["bad JSON"]),
    "commonsenseqa one choice": ("commonsenseqa", "c.jsonl", _csqa(_ONE_CHOICE), ["line 2", "5"]),
    "commonsenseqa bad key": (
        "commonsenseqa",
        "c.jsonl",
        _csqa({**commonsenseqa_record(1), "answerKey": "F"}),
        ["line 2", "answerKey 'F'"],
    ),
    "commonsenseqa bad line": ("commonsenseqa", "c.jsonl", "[1,\n", ["line 1", "bad JSON"]),
}

# Overrides: name -> (arguments, needles). Hydra's composition errors and our own checks alike.
OVERRIDES: dict[str, tuple[list[str], list[str]]] = {
    "misspelt group": (["studnet=tiny"], ["studnet", "did you mean the group 'student'"]),
    "unknown group option": (["dataset=hotpot"], ["dataset/hotpot", "hotpotqa"]),
    "unknown experiment": (["experiment=nope"], ["experiment/nope"]),
    # An optional group (Hydra would drop a missing option silently).
    "unknown schedule": (["schedule=nope"], ["schedule=nope: no such option", "synthetic_tiny"]),
    "appended unknown key": (["+typo=1"], ["typo", "unknown key"]),
    "unknown nested key": (["rl.nope=1"], ["nope"]),
    "seed not a number": (["seed=abc"], ["seed", "abc"]),
    "max_epochs not a number": (["trainer.max_epochs=abc"], ["max_epochs", "abc"]),
    "bad override syntax": (["trainer.max_epochs=["], ["trainer.max_epochs=[", "syntax"]),
    "unknown primary config": (["--config-name=nope"], ["nope"]),
    "negative size": (["dataset.n_train=-1"], ["dataset.n_train"]),
    "unknown stage": (["stages=[nope]"], ["stages"]),
    "unknown method": (["evaluation.methods=[nope]"], ["evaluation.methods"]),
    "unknown algorithm": (["rl.algorithm=a2c"], ["rl.algorithm"]),
    "no samples": (["teacher.num_samples=0"], ["teacher.num_samples"]),
    "temperature a word": (["teacher.temperature=hot"], ["temperature", "hot"]),
    "output dir unwritable": ([f"paths.output_dir={UNWRITABLE}"], [UNWRITABLE]),
    # Objects built from `_target_`, judged on a throwaway parameter before the teacher runs.
    "distill lr negative": (["distill.optimizer.lr=-1"], ["distill.optimizer.lr=-1", "learning"]),
    "rl lr negative": (["rl.optimizer.lr=-1"], ["rl.optimizer.lr=-1", "learning rate"]),
    "weight decay negative": (["distill.optimizer.weight_decay=-1"], ["weight_decay=-1"]),
    "scheduler bad argument": (
        ["distill.scheduler.num_warmup_steps=abc"],
        ["distill.scheduler.num_warmup_steps=abc", "get_linear_schedule_with_warmup"],
    ),
    "scheduler unknown argument": (["+distill.scheduler.cycles=2"], ["distill.scheduler.cycles"]),
    "trainer bad precision": (
        ["trainer.precision=bogus"],
        ["trainer.precision=bogus", "Precision"],
    ),
}

# The environment: name -> (variables, arguments, needles).
ENVIRONMENT: dict[str, tuple[dict[str, str], list[str], list[str]]] = {
    "root unwritable": ({"LMGCOT_ROOT": UNWRITABLE}, [], [UNWRITABLE]),
    "root is a file": ({"LMGCOT_ROOT": "/dev/null"}, [], ["/dev/null", "Not a directory"]),
}

# Failures after work began (the run directory stays: it holds the finished stages).
LATE: dict[str, tuple[list[str], list[str]]] = {
    "disk full": ([], [".ckpt: No space left on device", "run the same command again"]),
    "teacher kept nothing": ([], ["no training pairs", "teacher."]),
}

CONFIG_CASES = [*FILES, *OVERRIDES, *ENVIRONMENT]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("malformed")
    data = base / "data"
    data.mkdir()
    args, envs, files = {}, {}, {}
    for name, (dataset, filename, content, _) in FILES.items():
        path = data / f"{len(files)}-{filename}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        files[name] = path
        args[name] = [f"dataset={dataset}", f"dataset.path={path}", *TINY_STUDENT]
    for name, (overrides, _) in OVERRIDES.items():
        args[name] = [*QUICK, *overrides]  # last wins (QUICK picks an experiment)
    for name, (env, overrides, _) in ENVIRONMENT.items():
        args[name], envs[name] = [*overrides, *QUICK], env
    for name, (overrides, _) in LATE.items():
        args[name] = [*QUICK, *overrides, "stages=[teacher,distill]"]
    envs["disk full"] = {"LMGCOT_TEST_FAULT": "ENOSPC"}
    envs["teacher kept nothing"] = {"LMGCOT_TEST_FAULT": "NO_RATIONALE"}
    results = fork_runs(base, args, envs, prelude=FAULTS)
    for name, path in files.items():
        results[name].bad_file = path
    return results


def _one_line(outcome) -> str:
    assert outcome.returncode == 2, outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr + outcome.stdout
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{outcome.stderr[-3000:]}"
    assert lines[0].startswith("lmgcot: error: ")
    return lines[0]


def _needles(name: str) -> list[str]:
    for table in (FILES, OVERRIDES, LATE):
        if name in table:
            return table[name][-1]
    return ENVIRONMENT[name][-1]


def test_the_table_has_forty_malformed_inputs():
    assert len(CONFIG_CASES) + len(LATE) >= 40


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_a_malformed_input_is_one_line_and_leaves_no_run_directory(outcomes, name):
    outcome = outcomes[name]
    line = _one_line(outcome)
    for needle in _needles(name):
        assert needle in line, line
    if outcome.bad_file is not None:
        assert str(outcome.bad_file) in line
    outputs = outcome.root / "outputs"
    assert not (outputs / "runs").exists() or not any((outputs / "runs").iterdir())
    assert not list(outputs.rglob("results.json"))


@pytest.mark.parametrize("name", LATE)
def test_a_late_failure_is_one_line(outcomes, name):
    line = _one_line(outcomes[name])
    for needle in _needles(name):
        assert needle in line, line


def test_a_full_disk_leaves_no_half_checkpoint(outcomes):
    root = outcomes["disk full"].root
    assert not [p for p in root.rglob("*.ckpt")], "a checkpoint was left by a failed write"
    assert not list(root.rglob("*.ckpt.*.tmp"))
