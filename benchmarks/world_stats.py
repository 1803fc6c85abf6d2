"""Statistics of the offline world (dataset=synthetic, large_lm=simulated) that need no student.
Run by hand:

    python benchmarks/world_stats.py                      # the default world
    python benchmarks/world_stats.py large_lm=simulated_v1
    python benchmarks/world_stats.py --json stats.json large_lm.error_rate=0.4

Prints, on the config's test split (1,000 questions by default):

- the large LM's EM with standard prompting and with its own greedy CoT, the two numbers the world
  is calibrated to (the paper: standard 0.500, CoT 0.483 / 0.400);
- the CoT EM by rationale form (which forms help or mislead the reader), and how often the greedy
  rationale is right by its own conclusion;

and of `--samples` (4) teacher rationales per train question at `--temperature` (0.7; Fine-tune-CoT's
diverse reasoning), 20,000 for the default 5,000 questions:

- the distribution of the sentence count (the answer sentence removed, as the student learns them);
- distinct forms per question: a rationale's form is its text with the context's names and the
  years replaced by placeholders, so two samples of one form differ only in names;
- the share of rationales right by their conclusion (what `teacher.filter_correct` keeps).

Whether the distilled student's samples can beat its greedy rationales is
`benchmarks/reward_signal.py` (it needs a student). Overrides after the options are the project's
Hydra overrides; the large LM is called without the cache.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmgcot.answers.extract import split_rationale_answer
from lmgcot.answers.typed import read_answer, score_answer
from lmgcot.cli import CONFIG_DIR
from lmgcot.eval.predict import answer_standard, answer_with_rationales, large_lm_rationales
from lmgcot.llm.base import GenerationParams
from lmgcot.llm.simulated_prompt import read_statements
from lmgcot.prompts import PromptTemplates
from lmgcot.rewards.text import sentences
from lmgcot.teacher import sample_rationales

_YEAR = re.compile(r"\b\d{4}\b")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=4, help="teacher rationales per train question")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--json", help="also write the statistics to this file")
    args, overrides = ap.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    dataset = instantiate(cfg.dataset)
    splits = dataset.load_splits()
    lm = instantiate(cfg.large_lm)
    prompts = PromptTemplates(**OmegaConf.to_container(cfg.prompt, resolve=True))
    stats = {"large_lm": OmegaConf.to_container(cfg.large_lm, resolve=True)}
    stats["test"] = _test_split(splits.test, lm, prompts)
    stats["teacher"] = _teacher(splits.train, lm, prompts, args.samples, args.temperature)
    _print(stats)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
    return 0


def _test_split(examples, lm, prompts) -> dict:
    standard = answer_standard(examples, lm, prompts)
    rationales = large_lm_rationales(examples, lm, prompts)
    cot = answer_with_rationales(examples, [[r] for r in rationales], lm, prompts)
    replies = [
        r[0].text
        for r in lm.generate([prompts.cot_prompt(e) for e in examples], GenerationParams(256))
    ]
    own_right = [
        score_answer(
            e.answer_type,
            read_answer(e.answer_type, split_rationale_answer(t)[1] or ""),
            e.gold_answers,
        )[0]
        for e, t in zip(examples, replies)
    ]
    by_form: dict[str, list[float]] = collections.defaultdict(list)
    for e, rationale, p in zip(examples, rationales, cot):
        for form in forms_of(rationale, e):
            by_form[form].append(p.em)
    return {
        "n": len(examples),
        "standard_em": statistics.fmean(p.em for p in standard),
        "cot_em": statistics.fmean(p.em for p in cot),
        "cot_conclusion_right": statistics.fmean(own_right),
        "cot_em_by_form": {
            k: {"n": len(v), "em": statistics.fmean(v)} for k, v in sorted(by_form.items())
        },
    }


def forms_of(rationale: str, example) -> list[str]:
    """The forms a rationale shows, as `lmgcot.llm.simulated_writer` writes them."""
    text = rationale.strip()
    n_facts = len(read_statements(text))
    out = [f"{n_facts} fact(s)"]
    checks = {
        "restates the question": text.startswith(("The question asks", "We need to find out")),
        "connectives": bool(re.search(r"\b(First|Then|Next|After that),", text)),
        "hedged": bool(re.search(r"\b(I think|Probably|It seems that|If I remember)", text)),
        "one sentence": len(sentences(text)) == 1 and n_facts >= 2,
        "> 30 words": len(text.split()) > 30,
    }
    out += [name for name, hit in checks.items() if hit]
    return out


def _teacher(examples, lm, prompts, samples: int, temperature: float) -> dict:
    rationales = sample_rationales(
        examples, lm, prompts, num_samples=samples, temperature=temperature
    )
    counts = collections.Counter(len(sentences(r.rationale)) for r in rationales)
    by_question: dict[str, set[str]] = collections.defaultdict(set)
    names = {e.id: _names(e) for e in examples}
    for r in rationales:
        by_question[r.id].add(_skeleton(r.rationale, names[r.id]))
    words = [len(r.rationale.split()) for r in rationales]
    n = len(rationales)
    return {
        "rationales": n,
        "temperature": temperature,
        "samples_per_question": samples,
        "sentence_counts": {str(k): counts[k] / n for k in sorted(counts)},
        "distinct_forms_per_question": statistics.fmean(len(s) for s in by_question.values()),
        "words_mean": statistics.fmean(words),
        "words_p95": sorted(words)[int(0.95 * (n - 1))],
        "correct_share": statistics.fmean(r.correct for r in rationales),
    }


def _names(example) -> list[str]:
    """The context's names, longest first (so that "Night of X" is replaced before "X")."""
    found = set()
    for p in example.context:
        for st in read_statements(p.text):
            found |= {st.subject, st.obj}
    return sorted(found, key=len, reverse=True)


def _skeleton(text: str, names: list[str]) -> str:
    for name in names:
        text = text.replace(name, "<name>")
    return _YEAR.sub("<year>", text)


def _print(stats: dict) -> None:
    t = stats["test"]
    print(f"test questions: {t['n']}")
    print(
        f"standard EM {t['standard_em']:.3f}   CoT EM {t['cot_em']:.3f}   "
        f"(CoT right by its own conclusion: {t['cot_conclusion_right']:.3f})"
    )
    print("CoT EM by form of the large LM's greedy rationale:")
    for form, v in t["cot_em_by_form"].items():
        print(f"  {form:<24} n={v['n']:<5} EM {v['em']:.3f}")
    te = stats["teacher"]
    print(
        f"teacher: {te['rationales']} rationales ({te['samples_per_question']} per question at "
        f"temperature {te['temperature']}), {te['correct_share']:.3f} right by their conclusion"
    )
    print("  sentences: " + ", ".join(f"{k}: {v:.1%}" for k, v in te["sentence_counts"].items()))
    print(
        f"  distinct forms per question: {te['distinct_forms_per_question']:.2f}   "
        f"words: mean {te['words_mean']:.1f}, 95th percentile {te['words_p95']}"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
