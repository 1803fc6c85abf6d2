"""The `hf` large-LM backend on tiny local seq2seq and causal models (no network, CPU, float32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmgcot.errors import BackendError, ConfigError
from lmgcot.llm.base import GenerationParams, Request
from lmgcot.llm.cache import CallCache
from lmgcot.llm.hf import HFLargeLM
from lmgcot.llm.hf_decoding import generated_length as _generated_length
from lmgcot.llm.hf_decoding import truncate_at_stop
from lmgcot.llm.tiny_models import main as tiny_main
from lmgcot.llm.tiny_models import save_tiny_causal, save_tiny_seq2seq

pytestmark = pytest.mark.unit

KINDS = ["seq2seq", "causal"]
PROMPTS = [
    "Q: hi",
    "Context: " + "a long and winding context sentence. " * 12 + "Question: what is it?",
    "x",
    "A medium-length prompt about something.",
]
GREEDY = GenerationParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "seq2seq": save_tiny_seq2seq(root / "seq2seq"),
        "causal": save_tiny_causal(root / "causal"),
    }


@pytest.fixture(scope="module")
def lms(model_dirs) -> dict[str, HFLargeLM]:
    """One uncached, loaded backend per model kind, shared by the module's tests."""
    return {
        k: HFLargeLM(d, batch_size=8, dtype="float32", device="cpu") for k, d in model_dirs.items()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_batched_results_come_back_in_request_order(lms, kind):
    lm = lms[kind]
    batched = [c.text for c in lm.complete([Request(p, GREEDY) for p in PROMPTS])]
    alone = [lm.complete([Request(p, GREEDY)])[0].text for p in PROMPTS]
    assert batched == alone
    # The comparison only means something if different prompts give different text.
    assert len(set(batched)) > 1
    assert all(batched)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_is_deterministic(lms, kind):
    lm = lms[kind]
    calls = lm.usage.calls
    first = lm.generate(PROMPTS[:2], GREEDY)
    second = lm.generate(PROMPTS[:2], GREEDY)
    assert lm.usage.calls == calls + 4  # no cache: both rounds really ran
    assert [c[0].text for c in first] == [c[0].text for c in second]


@pytest.mark.parametrize("kind", KINDS)
def test_samples_differ_and_are_reproducible(lms, kind):
    lm = lms[kind]
    params = GenerationParams(max_new_tokens=8, temperature=1.0)
    first = [c.text for c in lm.generate([PROMPTS[0]], params, n=3)[0]]
    again = [c.text for c in lm.generate([PROMPTS[0]], params, n=3)[0]]
    assert len(set(first)) > 1
    assert again == first
    # A sample does not depend on its batch-mates: sample 2 alone is sample 2 of the batch.
    assert lm.complete([Request(PROMPTS[0], params, sample_index=2)])[0].text == first[2]


@pytest.mark.parametrize("kind", KINDS)
def test_stop_string_truncates_and_ends_generation(lms, kind):
    lm = lms[kind]
    params = GenerationParams(max_new_tokens=10)
    full = lm.generate([PROMPTS[1]], params)[0][0].text
    assert len(full) == 10  # printable bytes only, so one character per token
    stop = full[4:6]
    at = full.find(stop)
    params = GenerationParams(max_new_tokens=10, stop=("never seen", stop))
    got = lm.generate([PROMPTS[1]], params)[0][0]
    assert got.text == full[:at]
    # Generation halted at the token that completed the stop string.
    assert got.output_tokens == at + len(stop)


@pytest.mark.parametrize("kind", KINDS)
def test_token_counts(lms, kind):
    lm = lms[kind]
    system = "You are helpful."
    prompts = ["héllo", PROMPTS[1]]
    got = lm.generate(prompts, GenerationParams(max_new_tokens=5, system=system))
    for prompt, (c,) in zip(prompts, got, strict=True):
        # ByT5: one token per UTF-8 byte of "system\n\nprompt", plus the </s> it appends.
        assert c.input_tokens == len(f"{system}\n\n{prompt}".encode()) + 1
        # The tiny heads never score eos, so every row runs to the limit and no pad is counted.
        assert c.output_tokens == 5


def test_max_input_tokens_truncates_and_keys_the_cache(model_dirs):
    lm = HFLargeLM(model_dirs["causal"], dtype="float32", device="cpu", max_input_tokens=16)
    (c,) = lm.generate([PROMPTS[1]], GenerationParams(max_new_tokens=2))[0]
    assert c.input_tokens == 16
    assert lm.cache_identity() == {"dtype": "float32", "max_input_tokens": 16}


def test_cache_hits_make_no_calls_and_never_load_the_model(model_dirs, tmp_path):
    params = GenerationParams(max_new_tokens=6, temperature=0.7, top_p=0.9)
    cache = CallCache(tmp_path / "calls.sqlite")
    lm = HFLargeLM(model_dirs["causal"], cache=cache, dtype="float32", device="cpu")
    first = lm.generate(PROMPTS[:2], params, n=2)
    assert lm.usage.calls == 4
    second = lm.generate(PROMPTS[:2], params, n=2)
    assert lm.usage.calls == 4 and lm.usage.cache_hits == 4
    assert [[c.text for c in row] for row in second] == [[c.text for c in row] for row in first]
    # A re-run over a warm cache answers everything without loading weights.
    rerun = HFLargeLM(model_dirs["causal"], cache=cache, dtype="float32", device="cpu")
    third = rerun.generate(PROMPTS[:2], params, n=2)
    assert not rerun.loaded and rerun.usage.calls == 0
    assert all(c.cached for row in third for c in row)
    cache.close()


def test_missing_model_directory_is_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-model"
    lm = HFLargeLM(str(missing))  # lazy: constructing it touches nothing
    with pytest.raises(BackendError) as err:
        lm.generate(["hi"], GREEDY)
    message = str(err.value)
    assert str(missing) in message and "\n" not in message


def test_settings_are_validated_and_resolved():
    with pytest.raises(ConfigError, match="dtype"):
        HFLargeLM("m", dtype="float64")
    assert HFLargeLM("m", device="cpu").cache_identity() == {"dtype": "float32"}
    assert HFLargeLM("m", dtype="bfloat16").cache_identity() == {"dtype": "bfloat16"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_settings_on_gpu_sample_reproducibly(model_dirs):
    lm = HFLargeLM(model_dirs["causal"])
    assert lm.resolved_device() == "cuda"
    params = GenerationParams(max_new_tokens=6, temperature=1.0)
    first = [c.text for c in lm.generate([PROMPTS[0]], params, n=3)[0]]
    assert [c.text for c in lm.generate([PROMPTS[0]], params, n=3)[0]] == first


def test_truncate_at_stop_cuts_where_streaming_would_halt():
    assert truncate_at_stop("abc\n\nQ: next", ["\n\n"]) == "abc"
    assert truncate_at_stop("abc", []) == "abc"
    assert truncate_at_stop("abc", ["zz", ""]) == "abc"
    # "y" completes before "xyz" does, so generation stops there.
    assert truncate_at_stop("xyz", ["xyz", "y"]) == "x"
    assert truncate_at_stop("xyz", ["xy", "y"]) == ""


def test_generated_length_counts_through_eos_and_never_padding():
    assert _generated_length([7, 8, 1, 0, 0], [1]) == 3
    assert _generated_length([7, 2, 2, 2], [2]) == 2  # pad == eos
    assert _generated_length([7, 8, 9], [1]) == 3
    assert _generated_length([0, 7, 1], [1, 3]) == 3  # a pad the model chose itself counts


def test_tiny_models_are_seeded_and_cli_prints_the_directory(model_dirs, tmp_path, capsys):
    for kind in KINDS:
        again = tmp_path / kind
        tiny_main([kind, str(again)])
        assert capsys.readouterr().out.strip() == str(again)
        same = (again / "model.safetensors").read_bytes()
        assert same == Path(model_dirs[kind], "model.safetensors").read_bytes()
