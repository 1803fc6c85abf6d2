"""Tests for the hotpotqa and 2wiki loaders: sample files, splits, sources and validation errors."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from lmgcot.data.hotpotqa import HotpotQA
from lmgcot.data.official import hub_record_to_example, read_examples
from lmgcot.data.twowiki import TWOWIKI_TYPES, TwoWiki
from lmgcot.errors import ConfigError, DataError

pytestmark = pytest.mark.unit

HOTPOT_SAMPLE = HotpotQA.sample_file
TWOWIKI_SAMPLE = TwoWiki.sample_file


def all_examples(splits):
    return [ex for _, xs in splits.items() for ex in xs]


def ids(xs):
    return [ex.id for ex in xs]


def raw_records(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def good_record(rid="r1"):
    return {
        "_id": rid,
        "question": "Which river runs past the mill where Ada Quell worked?",
        "answer": "the Brisk",
        "type": "bridge",
        "level": "medium",
        "supporting_facts": [["Ada Quell", 0], ["Tamsey Mill", 1]],
        "context": [
            ["Ada Quell", ["Ada Quell worked at Tamsey Mill.", " She was a weaver."]],
            ["Tamsey Mill", ["Tamsey Mill is a mill.", " It stands on the Brisk.", " It shut."]],
            ["Orrin Vale", ["Orrin Vale is a valley."]],
        ],
    }


# --- the sample files -----------------------------------------------------------------------


def test_hotpotqa_sample_loads_every_record():
    splits = HotpotQA(path=str(HOTPOT_SAMPLE)).load_splits()
    examples = all_examples(splits)
    assert len(examples) == len(raw_records(HOTPOT_SAMPLE)) >= 30
    assert len(set(ids(examples))) == len(examples)
    assert {ex.type for ex in examples} == {"bridge", "comparison"}
    answers = Counter(ex.answer for ex in examples)
    assert answers["yes"] >= 2 and answers["no"] >= 2
    assert all(ex.level in ("easy", "medium", "hard") for ex in examples)


def test_twowiki_sample_has_all_types_evidences_and_aliases():
    examples = all_examples(TwoWiki(path=str(TWOWIKI_SAMPLE)).load_splits())
    assert len(examples) == len(raw_records(TWOWIKI_SAMPLE)) >= 30
    assert {ex.type for ex in examples} == set(TWOWIKI_TYPES)
    assert all(ex.evidences and all(len(t) == 3 for t in ex.evidences) for ex in examples)
    with_aliases = [ex for ex in examples if ex.aliases]
    assert len(with_aliases) >= 2
    assert all(ex.gold_answers == (ex.answer, *ex.aliases) for ex in with_aliases)
    by_answer = {ex.answer: ex for ex in examples}
    assert "May 14, 1961" in by_answer["14 May 1961"].gold_answers


def test_samples_preserve_unicode():
    for path in (HOTPOT_SAMPLE, TWOWIKI_SAMPLE):
        examples = read_examples(path)
        titles = {p.title for ex in examples for p in ex.context}
        assert "月影の港" in titles
        assert "Harrow — A Winter Record" in titles or path == TWOWIKI_SAMPLE
        assert any("é" in t or "ø" in t for t in titles)
    text = HOTPOT_SAMPLE.read_text(encoding="utf-8")
    assert "Søren Hallvik" in text and "\\u" not in text  # written with ensure_ascii=False


@pytest.mark.parametrize("path", [HOTPOT_SAMPLE, TWOWIKI_SAMPLE], ids=["hotpotqa", "2wiki"])
def test_sample_supporting_facts_resolve(path):
    for ex in read_examples(path):
        support = ex.supporting_paragraphs()
        wanted = Counter(f.title for f in set(ex.supporting_facts))
        assert {p.title for p in support} == set(wanted), ex.id
        for para in support:
            assert len(para.sentences) == wanted[para.title], ex.id
            assert all(s.strip() for s in para.sentences), ex.id
        if ex.answer not in ("yes", "no"):
            # The answer can be read off the supporting sentences (or their titles).
            text = " ".join(p.title + " " + p.text for p in support) + " " + ex.question
            assert any(a.lower() in text.lower() for a in ex.gold_answers), ex.id


@pytest.mark.parametrize("path", [HOTPOT_SAMPLE, TWOWIKI_SAMPLE], ids=["hotpotqa", "2wiki"])
def test_sample_contexts_are_short_with_gold_and_distractors(path):
    for ex in read_examples(path):
        gold = {f.title for f in ex.supporting_facts}
        n_distractors = len(ex.context) - len(gold)
        assert 2 <= len(gold) <= 4, ex.id
        assert 2 <= n_distractors <= 6, ex.id
        assert all(1 <= len(p.sentences) <= 4 for p in ex.context), ex.id
        chars = sum(len(p.title) + sum(len(s) for s in p.sentences) for p in ex.context)
        assert chars < 900, ex.id


# --- one file: split fractions, seed, caps, context --------------------------------------------


def test_single_file_split_sizes_follow_fractions():
    n = len(raw_records(HOTPOT_SAMPLE))
    splits = HotpotQA(path=str(HOTPOT_SAMPLE), split_fractions=(0.5, 0.25, 0.25)).load_splits()
    assert len(splits.train) == round(n * 0.5)
    assert len(splits.val) == round(n * 0.25)
    assert len(splits.train) + len(splits.val) + len(splits.test) == n
    assert len(set(ids(all_examples(splits)))) == n  # disjoint and complete


def test_single_file_split_is_deterministic_per_seed():
    def split_ids(seed):
        s = TwoWiki(path=str(TWOWIKI_SAMPLE), seed=seed).load_splits()
        return ids(s.train), ids(s.val), ids(s.test)

    assert split_ids(3) == split_ids(3)
    assert split_ids(3) != split_ids(4)


def test_caps_apply_after_splitting():
    full = HotpotQA(path=str(HOTPOT_SAMPLE), seed=1).load_splits()
    capped = HotpotQA(path=str(HOTPOT_SAMPLE), seed=1, max_train=5, max_val=2, max_test=1)
    splits = capped.load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 2, 1)
    assert ids(splits.train) == ids(full.train)[:5]


def test_context_mode_is_validated():
    with pytest.raises(ConfigError, match="dataset.context='gold'"):
        HotpotQA(path=str(HOTPOT_SAMPLE), context="gold")
    assert TwoWiki(path=str(TWOWIKI_SAMPLE), context="supporting").context == "supporting"


# --- train_path / eval_path -------------------------------------------------------------------


@pytest.fixture
def train_dev_files(tmp_path):
    records = raw_records(HOTPOT_SAMPLE)
    train = write_json(tmp_path / "train.json", records[:25])
    dev = write_json(tmp_path / "dev.json", records[25:])
    return train, dev, records


def test_train_and_eval_paths_give_train_and_halved_dev(train_dev_files):
    train, dev, records = train_dev_files
    splits = HotpotQA(train_path=str(train), eval_path=str(dev), seed=7).load_splits()
    dev_ids = {r["_id"] for r in records[25:]}
    assert sorted(ids(splits.train)) == sorted(r["_id"] for r in records[:25])
    assert len(splits.val) == len(dev_ids) // 2
    assert set(ids(splits.val)) | set(ids(splits.test)) == dev_ids
    assert not set(ids(splits.val)) & set(ids(splits.test))
    again = HotpotQA(train_path=str(train), eval_path=str(dev), seed=7).load_splits()
    assert ids(again.val) == ids(splits.val) and ids(again.train) == ids(splits.train)
    other = HotpotQA(train_path=str(train), eval_path=str(dev), seed=8).load_splits()
    assert ids(other.val) != ids(splits.val)


def test_train_and_eval_paths_respect_caps(train_dev_files):
    train, dev, _ = train_dev_files
    ds = HotpotQA(train_path=str(train), eval_path=str(dev), max_train=4, max_val=1, max_test=2)
    splits = ds.load_splits()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 1, 2)


def test_question_in_both_train_and_dev_is_an_error(tmp_path):
    train = write_json(tmp_path / "train.json", [good_record("a"), good_record("b")])
    dev = write_json(tmp_path / "dev.json", [good_record("c"), good_record("b")])
    with pytest.raises(DataError) as err:
        HotpotQA(train_path=str(train), eval_path=str(dev)).load_splits()
    assert str(err.value).startswith(f"{dev}: record b: ")
    assert "train file" in str(err.value)


def test_source_options_are_checked():
    with pytest.raises(ConfigError, match="set together"):
        HotpotQA(train_path="train.json")
    with pytest.raises(ConfigError, match="not both"):
        TwoWiki(path="a.json", train_path="t.json", eval_path="d.json")
    with pytest.raises(ConfigError, match="dataset.path"):
        TwoWiki()
    hotpot = HotpotQA()  # falls back to the hub; nothing is loaded until load_splits
    assert (hotpot.hub_name, hotpot.hub_config) == ("hotpot_qa", "distractor")


# --- the hub ---------------------------------------------------------------------------------


def hub_record(rid="5a8b57f25542995d1e6f1371"):
    return {
        "id": rid,
        "question": "Which is taller, the Pellam Tower or the Brask Spire?",
        "answer": "Brask Spire",
        "type": "comparison",
        "level": "hard",
        "supporting_facts": {"title": ["Pellam Tower", "Brask Spire"], "sent_id": [0, 1]},
        "context": {
            "title": ["Brask Spire", "Pellam Tower", "Wold Lane"],
            "sentences": [
                ["The Brask Spire is in Oddle.", " It is 210 metres tall."],
                ["The Pellam Tower is 140 metres tall."],
                ["Wold Lane is a street.", " It is cobbled."],
            ],
        },
    }


def test_hub_record_converts_to_example():
    ex = hub_record_to_example(hub_record())
    assert ex.id == "5a8b57f25542995d1e6f1371"
    assert (ex.answer, ex.type, ex.level) == ("Brask Spire", "comparison", "hard")
    assert [p.title for p in ex.context] == ["Brask Spire", "Pellam Tower", "Wold Lane"]
    assert ex.context[0].sentences == ("The Brask Spire is in Oddle.", " It is 210 metres tall.")
    assert [(f.title, f.sent_id) for f in ex.supporting_facts] == [
        ("Pellam Tower", 0),
        ("Brask Spire", 1),
    ]
    assert [p.text for p in ex.supporting_paragraphs()] == [
        "It is 210 metres tall.",
        "The Pellam Tower is 140 metres tall.",
    ]


def test_hub_record_gets_the_same_checks():
    bad = hub_record("h9")
    bad["supporting_facts"]["sent_id"] = [0, 4]
    with pytest.raises(DataError) as err:
        hub_record_to_example(bad, "hotpot_qa/distractor[train]", 3)
    assert str(err.value) == (
        "hotpot_qa/distractor[train]: record h9: supporting fact ['Brask Spire', 4] points at "
        "sentence 4 but paragraph 'Brask Spire' has 2 sentences"
    )
    ragged = hub_record("h10")
    ragged["context"]["sentences"].pop()
    with pytest.raises(DataError, match="record h10: field 'context' columns .* differ in length"):
        hub_record_to_example(ragged)


@pytest.fixture
def hub(fake_hub):
    """The stand-in `datasets` module (conftest) serving HotpotQA-style train/validation splits."""
    calls, data = fake_hub
    data["train"] = [hub_record(f"t{i}") for i in range(20)]
    data["validation"] = [hub_record(f"v{i}") for i in range(6)]
    return calls, data


def test_hub_train_becomes_train_and_val_and_validation_becomes_test(hub):
    calls, _ = hub
    splits = HotpotQA(seed=2).load_splits()
    assert calls == [("hotpot_qa", "distractor")]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 2, 6)
    assert ids(splits.test) == [f"v{i}" for i in range(6)]
    assert set(ids(splits.train)) | set(ids(splits.val)) == {f"t{i}" for i in range(20)}
    assert ids(HotpotQA(seed=2).load_splits().val) == ids(splits.val)
    capped = HotpotQA(seed=2, max_val=5, max_train=3).load_splits()
    assert (len(capped.train), len(capped.val)) == (3, 5)


def test_twowiki_hub_without_config_and_missing_split(hub):
    calls, data = hub
    for split in ("train", "validation"):
        for rec in data[split]:
            rec["type"] = "compositional"
    TwoWiki(hub_name="someone/2wiki").load_splits()
    assert calls == [("someone/2wiki",)]
    del data["validation"]
    with pytest.raises(ConfigError, match="need 'train' and 'validation'"):
        TwoWiki(hub_name="someone/2wiki").load_splits()


# --- malformed files: one clear line naming file, record and problem --------------------------


def load_error(tmp_path, data, cls=HotpotQA, raw_text=None):
    path = tmp_path / "bad.json"
    if raw_text is None:
        write_json(path, data)
    else:
        path.write_text(raw_text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        cls(path=str(path)).load_splits()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def with_change(change, rid="r1"):
    rec = copy.deepcopy(good_record(rid))
    change(rec)
    return [good_record("r0"), rec]


def test_good_record_loads(tmp_path):
    # The malformed cases below are each one change away from this record.
    path = write_json(tmp_path / "ok.json", with_change(lambda r: None))
    assert ids(read_examples(path)) == ["r0", "r1"]


def test_file_not_found(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(DataError, match="nope.json: file not found$"):
        HotpotQA(path=str(path)).load_splits()


def test_bad_json_gives_line_and_column(tmp_path):
    message = load_error(tmp_path, None, raw_text='[\n {"_id": "a",\n  "question" "x"}\n]')
    assert "bad JSON at line 3 column 14" in message


def test_top_level_not_a_list(tmp_path):
    message = load_error(tmp_path, {"data": [good_record()]})
    assert message.endswith("top level is an object, expected a list of records")


def test_record_not_an_object(tmp_path):
    message = load_error(tmp_path, [good_record("r0"), ["r1"]])
    assert message.endswith("record #1: is a list, expected an object")


def test_missing_field(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.pop("supporting_facts")))
    assert message.endswith("record r1: missing field 'supporting_facts'")


def test_missing_id_names_record_by_index(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.pop("_id")))
    assert message.endswith("record #1: missing field '_id'")


def test_wrong_field_type(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.update(question=42)))
    assert message.endswith("record r1: field 'question' is a number, expected a string")


def test_wrong_type_of_id_names_record_by_index(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.update(_id=7)))
    assert message.endswith("record #1: field '_id' is a number, expected a string")


def test_empty_question(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.update(question="  ")))
    assert message.endswith("record r1: question is empty")


@pytest.mark.parametrize("answer", ["", " "])
def test_empty_answer(tmp_path, answer):
    message = load_error(tmp_path, with_change(lambda r: r.update(answer=answer)))
    assert message.endswith("record r1: answer is empty")


def test_empty_context(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r.update(context=[])))
    assert message.endswith("record r1: context is empty")


def test_context_entry_not_a_pair(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r["context"].append(["Lone title"])))
    assert message.endswith("record r1: context[3] is a list, expected [title, [sentence, ...]]")


def test_paragraph_with_no_sentences(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r["context"][2].__setitem__(1, [])))
    assert message.endswith("record r1: paragraph 'Orrin Vale' has no sentences")


def test_sentence_not_a_string(tmp_path):
    message = load_error(tmp_path, with_change(lambda r: r["context"][2][1].append(None)))
    assert message.endswith(
        "record r1: paragraph 'Orrin Vale' sentence 1 is null, expected a string"
    )


def test_supporting_fact_title_not_in_context(tmp_path):
    message = load_error(
        tmp_path, with_change(lambda r: r["supporting_facts"].append(["Ghost", 0]))
    )
    assert message.endswith(
        "record r1: supporting fact ['Ghost', 0] names paragraph 'Ghost', not in the context"
    )


@pytest.mark.parametrize("sent_id", [3, 5, -1])
def test_supporting_fact_sent_id_out_of_range(tmp_path, sent_id):
    change = lambda r: r["supporting_facts"].append(["Tamsey Mill", sent_id])  # noqa: E731
    message = load_error(tmp_path, with_change(change))
    assert message.endswith(
        f"record r1: supporting fact ['Tamsey Mill', {sent_id}] points at sentence {sent_id} but "
        "paragraph 'Tamsey Mill' has 3 sentences"
    )


@pytest.mark.parametrize("fact", [["Ada Quell"], ["Ada Quell", "0"], ["Ada Quell", True]])
def test_supporting_fact_malformed(tmp_path, fact):
    message = load_error(tmp_path, with_change(lambda r: r["supporting_facts"].append(fact)))
    assert (
        f"record r1: supporting_facts[2] is {fact!r}, expected [title, sentence index]" in message
    )


def test_duplicate_id(tmp_path):
    records = [good_record("r0"), good_record("r1"), good_record("r0")]
    message = load_error(tmp_path, records)
    assert message.endswith("record r0: duplicate _id (record #2 repeats record #0)")


def test_unknown_type_for_2wiki(tmp_path):
    records = with_change(lambda r: r.update(type="bridge"))
    records[0]["type"] = "inference"
    message = load_error(tmp_path, records, cls=TwoWiki)
    assert message.endswith(
        "record r1: type 'bridge' is not one of comparison, inference, compositional, "
        "bridge_comparison"
    )


def test_hotpotqa_accepts_any_type_but_not_an_empty_one(tmp_path):
    path = write_json(tmp_path / "ok.json", with_change(lambda r: r.update(type="inference")))
    assert [ex.type for ex in read_examples(path)] == ["bridge", "inference"]
    message = load_error(tmp_path, with_change(lambda r: r.update(type="")))
    assert message.endswith("record r1: type is empty")


def test_bad_evidence_triple(tmp_path):
    records = with_change(lambda r: r.update(type="compositional", evidences=[["a", "b"]]))
    records[0]["type"] = "comparison"
    message = load_error(tmp_path, records, cls=TwoWiki)
    assert message.endswith(
        "record r1: evidences[0] is ['a', 'b'], expected [subject, relation, object]"
    )


def test_answer_aliases_checked_and_deduplicated(tmp_path):
    change = lambda r: r.update(answer_aliases=["Brisk", "the Brisk", "Brisk"])  # noqa: E731
    path = write_json(tmp_path / "ok.json", with_change(change))
    assert read_examples(path)[1].gold_answers == ("the Brisk", "Brisk")
    message = load_error(tmp_path, with_change(lambda r: r.update(answer_aliases=["ok", ""])))
    assert message.endswith("record r1: answer_aliases[1] is '', expected a non-empty string")


def test_level_must_be_a_string_when_present(tmp_path):
    path = write_json(tmp_path / "ok.json", with_change(lambda r: r.pop("level")))
    assert read_examples(path)[1].level is None
    message = load_error(tmp_path, with_change(lambda r: r.update(level=3)))
    assert message.endswith("record r1: field 'level' is a number, expected a string")
