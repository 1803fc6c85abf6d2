"""Tests for the gsm8k, strategyqa and commonsenseqa loaders: official formats, sources, errors."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from lmgcot.cli import CONFIG_DIR
from lmgcot.data.commonsenseqa_format import (
    commonsenseqa_hub_record_to_example,
    read_commonsenseqa,
)
from lmgcot.data.gsm8k_format import read_gsm8k
from lmgcot.data.reasoning_official import GSM8K, CommonsenseQA, StrategyQA
from lmgcot.data.strategyqa_format import read_strategyqa
from lmgcot.errors import ConfigError, DataError
from lmgcot.pipeline.builders import build

pytestmark = pytest.mark.unit

# --- writing small files in each official format (invented questions) -----------------------


def write_jsonl(path, records, blank_lines=False):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def gsm8k_record(i):
    a, b = 7 + i, 3 * i + 2
    return {
        "question": f"Pell has {a} marbles and finds {b} more in a jar. How many marbles now?",
        "answer": f"Pell finds {b} more, so {a} + {b} = <<{a}+{b}={a + b}>>{a + b} marbles.\n"
        f"#### {a + b}",
    }


def strategyqa_record(i):
    return {
        "qid": f"sq{i:02d}",
        "term": "Lantern",
        "description": "A portable light.",
        "question": f"Could a lantern number {i} fit inside a teacup?",
        "answer": i % 2 == 0,
        "facts": [f"Lantern {i} is {10 + i} cm tall.", " A teacup is 8 cm tall. "],
        "decomposition": ["How tall is the lantern?", "How tall is a teacup?"],
        "evidence": [[[["Lantern", "Teacup"]]]],
    }


def commonsenseqa_record(i):
    return {
        "answerKey": "ABCDE"[i % 5],
        "id": f"cq{i:02d}",
        "question": {
            "question_concept": "kettle",
            "choices": [
                {"label": letter, "text": f"place {letter.lower()}{i}"} for letter in "ABCDE"
            ],
            "stem": f"Where would you keep kettle number {i}?",
        },
    }


def gsm8k_file(path, n=10):
    return write_jsonl(path, [gsm8k_record(i) for i in range(n)])


def strategyqa_file(path, n=10):
    return write_json(path, [strategyqa_record(i) for i in range(n)])


def commonsenseqa_file(path, n=10):
    return write_jsonl(path, [commonsenseqa_record(i) for i in range(n)])


def all_examples(splits):
    return [ex for _, xs in splits.items() for ex in xs]


def ids(xs):
    return [ex.id for ex in xs]


# --- GSM8K ------------------------------------------------------------------------------------


def test_gsm8k_fields_answer_and_rationale(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            gsm8k_record(0),
            {
                "question": "A stall sells 50 jars at $25 each. What is the income?",
                "answer": "Income is 50 * 25 =   <<50*25=1250>>1250 dollars.\n\n#### 1,250",
            },
            {"question": "Tia owes 5 and pays 8. What is her balance?", "answer": "#### -3"},
            {
                "question": "Half of a 5 litre jug is poured out. How much is left?",
                "answer": "5 / 2 = <<5/2=2.5>>2.5\n####  2.50",
            },
        ],
        blank_lines=True,
    )
    examples = read_gsm8k(path)
    # Blank lines are skipped but line numbers stay the file's.
    assert ids(examples) == ["train-1", "train-3", "train-5", "train-7"]
    assert [ex.answer for ex in examples] == ["9", "1250", "-3", "2.5"]
    first = examples[0]
    assert first.question == gsm8k_record(0)["question"]
    assert first.rationale == "Pell finds 2 more, so 7 + 2 = 9 marbles."
    assert examples[1].rationale == "Income is 50 * 25 = 1250 dollars."
    assert examples[2].rationale is None
    assert examples[3].rationale == "5 / 2 = 2.5"
    for ex in examples:
        assert (ex.type, ex.answer_type, ex.context, ex.supporting_facts) == (
            "gsm8k",
            "number",
            (),
            (),
        )
        assert "<<" not in (ex.rationale or "")


def test_gsm8k_single_file_splits_by_fractions_and_caps(tmp_path):
    path = gsm8k_file(tmp_path / "all.jsonl", 20)
    splits = GSM8K(path=str(path), split_fractions=(0.5, 0.25, 0.25), seed=1).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 5, 5)
    assert sorted(ids(all_examples(splits))) == sorted(f"all-{n}" for n in range(1, 21))
    capped = GSM8K(path=str(path), split_fractions=(0.5, 0.25, 0.25), seed=1, max_train=3)
    capped_splits = capped.load_splits()
    assert ids(capped_splits.train) == ids(splits.train)[:3]
    assert ids(capped_splits.val) == ids(splits.val)


def test_gsm8k_train_and_eval_paths(tmp_path):
    train = gsm8k_file(tmp_path / "train.jsonl", 8)
    test = gsm8k_file(tmp_path / "test.jsonl", 6)
    splits = GSM8K(train_path=str(train), eval_path=str(test), seed=3).load_splits()
    assert sorted(ids(splits.train)) == sorted(f"train-{n}" for n in range(1, 9))
    assert len(splits.val) == 3
    assert sorted(ids(splits.val) + ids(splits.test)) == sorted(f"test-{n}" for n in range(1, 7))
    capped = GSM8K(train_path=str(train), eval_path=str(test), max_train=2, max_val=1, max_test=1)
    got = capped.load_splits()
    assert (len(got.train), len(got.val), len(got.test)) == (2, 1, 1)


def test_gsm8k_train_and_eval_files_need_different_names(tmp_path):
    with pytest.raises(ConfigError, match="share the file name 'data'"):
        GSM8K(train_path=str(tmp_path / "a" / "data.jsonl"), eval_path=str(tmp_path / "data.jsonl"))


# --- StrategyQA -------------------------------------------------------------------------------


def test_strategyqa_fields_answer_and_rationale(tmp_path):
    records = [strategyqa_record(0), strategyqa_record(1)]
    records.append(
        {"qid": "bare", "question": "Is a pebble lighter than a boulder?", "answer": True}
    )
    records.append({**strategyqa_record(3), "facts": [], "qid": "nofacts"})
    examples = read_strategyqa(write_json(tmp_path / "sq.json", records))
    assert ids(examples) == ["sq00", "sq01", "bare", "nofacts"]
    assert [ex.answer for ex in examples] == ["yes", "no", "yes", "no"]
    assert examples[0].rationale == "Lantern 0 is 10 cm tall. A teacup is 8 cm tall."
    assert examples[2].rationale is None and examples[3].rationale is None
    assert examples[1].question == "Could a lantern number 1 fit inside a teacup?"
    assert all(
        (ex.type, ex.answer_type, ex.context) == ("strategyqa", "yes_no", ()) for ex in examples
    )


def test_strategyqa_sources_splits_and_caps(tmp_path):
    path = strategyqa_file(tmp_path / "sq.json", 10)
    splits = StrategyQA(path=str(path), split_fractions=(0.6, 0.2, 0.2)).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 2)
    records = [strategyqa_record(i) for i in range(10)]
    train = write_json(tmp_path / "train.json", records[:6])
    dev = write_json(tmp_path / "dev.json", records[6:])
    got = StrategyQA(train_path=str(train), eval_path=str(dev), max_train=4).load_splits()
    assert len(got.train) == 4 and set(ids(got.train)) <= {r["qid"] for r in records[:6]}
    assert sorted(ids(got.val) + ids(got.test)) == ["sq06", "sq07", "sq08", "sq09"]


def test_strategyqa_question_in_both_files_is_an_error(tmp_path):
    train = write_json(tmp_path / "train.json", [strategyqa_record(0), strategyqa_record(1)])
    dev = write_json(tmp_path / "dev.json", [strategyqa_record(2), strategyqa_record(1)])
    with pytest.raises(DataError) as err:
        StrategyQA(train_path=str(train), eval_path=str(dev)).load_splits()
    assert str(err.value) == f"{dev}: record sq01: qid also appears in the train file {train}"


def test_strategyqa_needs_a_source():
    with pytest.raises(ConfigError, match="set dataset.path to a local JSON file"):
        StrategyQA()


# --- CommonsenseQA ----------------------------------------------------------------------------


def test_commonsenseqa_fields_question_and_answer(tmp_path):
    examples = read_commonsenseqa(commonsenseqa_file(tmp_path / "csqa.jsonl", 3))
    assert ids(examples) == ["cq00", "cq01", "cq02"]
    assert [ex.answer for ex in examples] == ["A", "B", "C"]
    assert examples[1].question == (
        "Where would you keep kettle number 1? Answer Choices: (A) place a1 (B) place b1 "
        "(C) place c1 (D) place d1 (E) place e1"
    )
    assert all(
        (ex.type, ex.answer_type, ex.context, ex.rationale) == ("commonsenseqa", "choice", (), None)
        for ex in examples
    )


def test_commonsenseqa_sources_splits_and_caps(tmp_path):
    path = commonsenseqa_file(tmp_path / "csqa.jsonl", 10)
    splits = CommonsenseQA(path=str(path), max_val=0, max_test=1).load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 0, 1)
    records = [commonsenseqa_record(i) for i in range(10)]
    train = write_jsonl(tmp_path / "train_rand_split.jsonl", records[:7])
    dev = write_jsonl(tmp_path / "dev_rand_split.jsonl", records[7:])
    got = CommonsenseQA(train_path=str(train), eval_path=str(dev)).load_splits()
    assert sorted(ids(got.train)) == [f"cq{i:02d}" for i in range(7)]
    assert (len(got.val), len(got.test)) == (1, 2)


# --- the hub (a stand-in `datasets` module; no network) ----------------------------------------


def csqa_hub_record(i):
    return {
        "id": f"h{i}",
        "question": f"What might a heron number {i} catch?",
        "question_concept": "heron",
        "choices": {
            "label": ["A", "B", "C", "D", "E"],
            "text": ["fish", "cloud", "sofa", "x", "y"],
        },
        "answerKey": "A",
    }


def test_commonsenseqa_hub_record_converts_to_example():
    ex = commonsenseqa_hub_record_to_example(csqa_hub_record(4))
    assert (ex.id, ex.answer, ex.answer_type, ex.type) == ("h4", "A", "choice", "commonsenseqa")
    assert ex.question == (
        "What might a heron number 4 catch? Answer Choices: (A) fish (B) cloud (C) sofa (D) x (E) y"
    )


def test_commonsenseqa_hub_record_gets_the_same_checks():
    bad = {**csqa_hub_record(1), "answerKey": ""}  # how the hub's unlabelled test split looks
    with pytest.raises(DataError) as err:
        commonsenseqa_hub_record_to_example(bad, "tau/commonsense_qa[test]", 1)
    assert str(err.value) == (
        "tau/commonsense_qa[test]: record h1: answerKey '' is not one of the choice labels "
        "A, B, C, D, E"
    )
    ragged = csqa_hub_record(2)
    ragged["choices"]["text"].pop()
    with pytest.raises(DataError, match="record h2: field 'choices' columns .* differ in length"):
        commonsenseqa_hub_record_to_example(ragged)
    no_stem = {k: v for k, v in csqa_hub_record(3).items() if k != "question"}
    with pytest.raises(DataError, match="record h3: missing field 'question.stem'$"):
        commonsenseqa_hub_record_to_example(no_stem)


def test_gsm8k_hub_record_ids_follow_split_and_line():
    ex = GSM8K().hub_record(gsm8k_record(2), "gsm8k/main[test]", 4, "test")
    assert (ex.id, ex.answer, ex.answer_type) == ("test-5", "17", "number")
    with pytest.raises(DataError, match=r"^gsm8k/main\[test\]: record test-5: answer has no"):
        GSM8K().hub_record({"question": "q?", "answer": "12"}, "gsm8k/main[test]", 4, "test")


def test_gsm8k_hub_train_and_test(fake_hub):
    calls, data = fake_hub
    data.update(
        train=[gsm8k_record(i) for i in range(10)], test=[gsm8k_record(i) for i in range(4)]
    )
    splits = GSM8K(seed=1, max_val=2).load_splits()
    assert calls == [("gsm8k", "main")]
    assert (len(splits.train), len(splits.val)) == (8, 2)
    assert ids(splits.test) == ["test-1", "test-2", "test-3", "test-4"]
    del data["test"]
    with pytest.raises(ConfigError, match="need 'train' and 'test'"):
        GSM8K().load_splits()


def test_commonsenseqa_hub_train_and_validation(fake_hub):
    calls, data = fake_hub
    data.update(
        train=[csqa_hub_record(i) for i in range(10)],
        validation=[csqa_hub_record(i) for i in range(10, 13)],
        test=[{**csqa_hub_record(i), "answerKey": ""} for i in range(20, 22)],
    )
    splits = CommonsenseQA(max_val=None).load_splits()
    assert calls == [("tau/commonsense_qa",)]
    assert (len(splits.train), len(splits.val)) == (9, 1)
    assert ids(splits.test) == ["h10", "h11", "h12"]


def test_strategyqa_hub_when_named(fake_hub):
    calls, data = fake_hub
    data.update(
        train=[strategyqa_record(i) for i in range(5)],
        validation=[strategyqa_record(i) for i in range(5, 7)],
    )
    splits = StrategyQA(hub_name="someone/strategyqa", max_val=1).load_splits()
    assert calls == [("someone/strategyqa",)]
    assert sorted(ids(splits.test)) == ["sq05", "sq06"]
    data["validation"].append(strategyqa_record(5))
    with pytest.raises(
        DataError, match=r"record sq05: duplicate qid \(record #2 repeats record #0\)"
    ):
        StrategyQA(hub_name="someone/strategyqa").load_splits()


# --- malformed files: one line naming file, record and problem --------------------------------


def load_error(cls, path):
    with pytest.raises(DataError) as err:
        cls(path=str(path)).load_splits()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def jsonl_lines(tmp_path, cls, lines):
    return load_error(cls, write_jsonl(tmp_path / "bad.jsonl", lines))


def test_file_not_found_and_empty_file(tmp_path):
    for cls in (GSM8K, StrategyQA, CommonsenseQA):
        missing = tmp_path / "missing.jsonl"
        assert load_error(cls, missing) == f"{missing}: file not found"
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n  \n", encoding="utf-8")
        assert load_error(cls, empty) == f"{empty}: empty file"
    no_records = write_json(tmp_path / "none.json", [])
    assert load_error(StrategyQA, no_records) == f"{no_records}: no records (an empty list)"


GSM8K_BAD = [
    ('{"question": "q?", "answer": "#### 4"', "bad JSON at column 38: Expecting ',' delimiter"),
    ('["q?", "#### 4"]', "is a list, expected an object"),
    ('{"question": "q?"}', "missing field 'answer'"),
    ('{"question": 5, "answer": "#### 4"}', "field 'question' is a number, expected a string"),
    ('{"question": " ", "answer": "#### 4"}', "question is empty"),
    ('{"question": "q?", "answer": "It is 4."}', "answer has no '#### <number>' line"),
    (
        '{"question": "q?", "answer": "So 4.\\n#### four"}',
        "answer ends in '#### four', expected a number after '####'",
    ),
    (
        '{"question": "q?", "answer": "#### 1,25"}',
        "answer ends in '#### 1,25', expected a number after '####'",
    ),
]


@pytest.mark.parametrize(("line", "problem"), GSM8K_BAD)
def test_gsm8k_malformed_line(tmp_path, line, problem):
    message = jsonl_lines(tmp_path, GSM8K, [gsm8k_record(0), gsm8k_record(1), line])
    assert message.endswith(f": record line 3: {problem}")


def change(record, **updates):
    out = {k: v for k, v in record.items() if k not in updates}
    out.update({k: v for k, v in updates.items() if v is not DROP})
    return out


DROP = object()

STRATEGYQA_BAD = [
    (["sq01"], "record #1: is a list, expected an object"),
    (change(strategyqa_record(1), question=DROP), "record sq01: missing field 'question'"),
    (change(strategyqa_record(1), qid=DROP), "record #1: missing field 'qid'"),
    (change(strategyqa_record(1), qid=3), "record #1: field 'qid' is a number, expected a string"),
    (
        change(strategyqa_record(1), answer="yes"),
        "record sq01: field 'answer' is a string, expected a boolean (true or false)",
    ),
    (
        change(strategyqa_record(1), answer=1),
        "record sq01: field 'answer' is a number, expected a boolean (true or false)",
    ),
    (
        change(strategyqa_record(1), answer=DROP),
        "record sq01: missing field 'answer': the record is unlabelled (the official StrategyQA "
        "test file has no answers)",
    ),
    (
        change(strategyqa_record(1), facts="A fact."),
        "record sq01: field 'facts' is a string, expected a list of strings",
    ),
    (
        change(strategyqa_record(1), facts=["ok", 2]),
        "record sq01: facts[1] is a number, expected a string",
    ),
    (strategyqa_record(0), "record sq00: duplicate qid (record #1 repeats record #0)"),
]


@pytest.mark.parametrize(("record", "problem"), STRATEGYQA_BAD)
def test_strategyqa_malformed_record(tmp_path, record, problem):
    path = write_json(tmp_path / "bad.json", [strategyqa_record(0), record, strategyqa_record(2)])
    assert load_error(StrategyQA, path).endswith(f": {problem}")


def test_strategyqa_top_level_not_a_list(tmp_path):
    path = write_json(tmp_path / "bad.json", {"data": [strategyqa_record(0)]})
    assert load_error(StrategyQA, path).endswith(
        "top level is an object, expected a list of records"
    )


def csqa_with(**question_updates):
    record = commonsenseqa_record(1)
    record["question"] = change(record["question"], **question_updates)
    return record


CSQA_BAD = [
    ("{'id': 'cq01'}", "record line 2: bad JSON at column 2: Expecting property name enclosed in"),
    ("7", "record line 2: is a number, expected an object"),
    (
        change(commonsenseqa_record(1), answerKey=DROP),
        "record line 2: missing field 'answerKey': the record is unlabelled (the official "
        "CommonsenseQA test file has no answers)",
    ),
    (
        change(commonsenseqa_record(1), answerKey="F"),
        "record line 2: answerKey 'F' is not one of the choice labels A, B, C, D, E",
    ),
    (change(commonsenseqa_record(1), id=DROP), "record line 2: missing field 'id'"),
    (
        change(commonsenseqa_record(1), question="Where?"),
        "record line 2: field 'question' is a string, expected an object",
    ),
    (csqa_with(stem=DROP), "record line 2: missing field 'question.stem'"),
    (csqa_with(choices=[]), "record line 2: question.choices is empty"),
    (
        csqa_with(choices={"label": ["A"]}),
        "record line 2: field 'question.choices' is an object, expected a list",
    ),
    (
        csqa_with(choices=[{"label": "A", "text": "x"}, {"label": "B"}]),
        "record line 2: missing field 'question.choices[1].text'",
    ),
    (
        csqa_with(choices=[{"label": "A", "text": "x"}, {"label": "A", "text": "y"}]),
        "record line 2: question.choices[1] repeats label 'A'",
    ),
    (
        change(commonsenseqa_record(1), id="cq00"),
        "record cq00: duplicate id (line 2 repeats line 1)",
    ),
]


@pytest.mark.parametrize(("line", "problem"), CSQA_BAD)
def test_commonsenseqa_malformed_line(tmp_path, line, problem):
    message = jsonl_lines(
        tmp_path, CommonsenseQA, [commonsenseqa_record(0), line, commonsenseqa_record(2)]
    )
    assert f": {problem}" in message


def test_every_record_is_checked_before_any_work(tmp_path):
    # The bad record is the last one: nothing is split or returned on the way.
    records = [gsm8k_record(i) for i in range(30)] + ['{"question": "q?", "answer": "4"}']
    message = jsonl_lines(tmp_path, GSM8K, records)
    assert message.endswith("record line 31: answer has no '#### <number>' line")


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gsm8k", "strategyqa", "commonsenseqa"])
def test_dataset_option_lays_reasoning_prompts_and_builds(compose_cfg, tmp_path, name):
    writers = {"gsm8k": gsm8k_file, "strategyqa": strategyqa_file}
    path = writers.get(name, commonsenseqa_file)(tmp_path / f"{name}.data", 10)
    cfg = compose_cfg(f"dataset={name}", f"dataset.path={path}", fast=False)
    preset = OmegaConf.load(f"{CONFIG_DIR}/prompt_presets/reasoning.yaml")
    assert cfg.prompt.cot == preset.cot and cfg.prompt.guided == preset.guided
    splits = build(cfg.dataset, "dataset").load_splits()
    assert splits.train and all(ex.type == name for ex in all_examples(splits))


def test_jsonl_lines_split_on_newlines_only(tmp_path):
    # CRLF line ends, and a raw U+2028 inside a string (legal JSON) must not split a record.
    record = commonsenseqa_record(0)
    record["question"]["stem"] = "Where would you keep\u2028a kettle?"
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in [record, commonsenseqa_record(1)])
    path = tmp_path / "csqa.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    examples = read_commonsenseqa(path)
    assert ids(examples) == ["cq00", "cq01"]
    assert examples[0].question.startswith("Where would you keep\u2028a kettle? Answer Choices:")
