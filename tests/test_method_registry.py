"""The method registry (lmgcot.eval.methods.METHODS): what each record declares is what the
pipeline and the checks use, and a method added as one entry runs end to end."""

from __future__ import annotations

import pytest
import torch

from lmgcot.errors import ConfigError
from lmgcot.eval.methods import METHODS, PAPER_METHODS, RL_METHODS
from lmgcot.pipeline import run
from lmgcot.student.generate import generate_rationales
from lmgcot.student.models import build_student
from lmgcot.utils.io import read_jsonl

TINY = dict(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)


@pytest.mark.unit
def test_the_records_say_what_each_method_needs():
    assert PAPER_METHODS == (
        "standard",
        "cot",
        "lm_guided_kd",
        "lm_guided_kd_sc",
        "lm_guided_rl",
        "lm_guided_rl_sc",
    )
    assert RL_METHODS == (
        "lm_guided_rl",
        "lm_guided_rl_sc",
        "lm_guided_rl_best",
        "lm_guided_rl_wsc",
    )
    assert METHODS["standard"].student is None and METHODS["cot"].student is None
    assert not METHODS["vanilla_ft"].uses_large_lm and METHODS["vanilla_ft"].objectives == (
        "answer",
    )
    # Sampled methods' predictions depend on how questions are batched: in their fingerprint.
    sampled = {name for name, m in METHODS.items() if m.samples}
    assert sampled == {
        "lm_guided_kd_sc",
        "lm_guided_rl_sc",
        "finetune_cot_sc",
        *(f"lm_guided_{s}_{how}" for s in ("kd", "rl") for how in ("best", "wsc")),
        "oracle_best_of_k",
    }
    assert all("student_batch_size" in METHODS[name].settings for name in sampled)


@pytest.mark.unit
def test_beam_search_reaches_the_students_generate():
    torch.manual_seed(0)
    student = build_student("tiny", None, 32, 12, architecture=TINY, tokenizer="byt5", seed=0)
    inputs = ["Who wrote it?", "Where is the bridge?"]
    beams = generate_rationales(student, inputs, num_beams=3)
    for text, outs in zip(inputs, beams):
        ids = student.tokenizer([text], return_tensors="pt").input_ids
        direct = student.model.generate(
            input_ids=ids, num_beams=3, do_sample=False, max_new_tokens=12
        )
        expected = student.tokenizer.decode(direct[0], skip_special_tokens=True).strip()
        assert outs == [expected]


@pytest.mark.stage
@pytest.mark.slow
def test_a_method_added_as_one_entry_runs_end_to_end(compose_cfg, tmp_path):
    """lm_guided_kd_beam is one registry entry: the checks accept it, the evaluate stage runs it
    with the distilled student, and its predictions are an artifact of their own."""
    cfg = compose_cfg(
        "stages=[teacher,distill,evaluate]",
        "evaluation.methods=[lm_guided_kd,lm_guided_kd_beam]",
        "evaluation.rationale_quality=false",
    )
    results = run(cfg)
    assert list(results["methods"]) == ["lm_guided_kd", "lm_guided_kd_beam"]
    rows = read_jsonl(tmp_path / "run" / "eval" / "lm_guided_kd_beam.jsonl")
    assert len(rows) == results["methods"]["lm_guided_kd_beam"]["n"] == 8
    assert all(len(r["rationales"]) == 1 for r in rows)
    prov = results["provenance"]["methods"]
    assert prov["lm_guided_kd_beam"] != prov["lm_guided_kd"]
    # It asks for a rationale writer like the other lm_guided methods.
    with pytest.raises(ConfigError, match="lm_guided_kd_beam needs a student that writes"):
        run(
            compose_cfg(
                "distill.objective=answer",
                "stages=[distill,evaluate]",
                "evaluation.methods=[lm_guided_kd_beam]",
            )
        )


@pytest.mark.stage
@pytest.mark.slow
def test_a_refine_that_kept_the_distilled_student_is_not_evaluated_twice(compose_cfg, monkeypatch):
    """lm_guided_rl shares lm_guided_kd's recipe: when refine exported the distilled student
    unchanged, the rl rows are the kd predictions, not a second round of generation."""
    from lmgcot.eval import methods

    calls: list[str] = []
    real = methods._student_outputs

    def counting(ctx, name, *args, **kwargs):
        calls.append(name)
        return real(ctx, name, *args, **kwargs)

    monkeypatch.setattr(methods, "_student_outputs", counting)
    results = run(
        compose_cfg(
            "evaluation.methods=[lm_guided_kd,lm_guided_rl]", "evaluation.rationale_quality=false"
        )
    )
    assert results["refine"]["selected"] == "distilled"  # what this tiny config's refine does
    assert calls == ["lm_guided_kd"]
    assert results["methods"]["lm_guided_rl"] == results["methods"]["lm_guided_kd"]
    run_dir = compose_cfg().paths.run_dir
    kd = read_jsonl(f"{run_dir}/eval/lm_guided_kd.jsonl")
    assert read_jsonl(f"{run_dir}/eval/lm_guided_rl.jsonl") == kd
