"""The allowed ranges of the config's numbers, as data: one `Range` per set of keys."""

from __future__ import annotations

from dataclasses import dataclass, fields

from lmgcot.config.variants import SimulatedReaderConfig, SimulatedStyleConfig


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (either end open or absent), plus the values in `also`."""

    low: int | float | None = None
    high: int | float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    also: tuple = ()
    note: str = ""

    def problem(self, key: str, value) -> str | None:
        """One line naming the key, the value and what is allowed; None when the value fits."""
        if value is None and self.nullable or value in self.also and not isinstance(value, bool):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return f"{key}={value!r}: must be a number ({self.text()})"
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return None if low_ok and high_ok else f"{key}={value}: {self.text()}"

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            out = f"must be within {left}{self.low}, {self.high}{right}"
        else:
            out = f"must be {'>' if self.low_open else '>='} {self.low}"
        for extra in self.also:
            out += f", or {extra}"
        if self.nullable:
            out += ", or null"
        return f"{out} ({self.note})" if self.note else out


COUNT = Range(low=1)
SIZE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
SHARE = Range(low=0, high=1)
CAP = Range(low=1, nullable=True)

# Checked where present: large_lm and dataset options differ in their keys.
RANGES: dict[str, Range] = {
    **dict.fromkeys(
        (
            "teacher.num_samples",
            "teacher.max_new_tokens",
            "teacher.few_shot_k",
            "teacher.answer_max_new_tokens",
            "distill.batch_size",
            "distill.eval_batch_size",
            "evaluation.answer_max_new_tokens",
            "evaluation.cot_max_new_tokens",
            "evaluation.student_batch_size",
            "evaluation.self_consistency.k",
            "student.max_source_length",
            "student.max_target_length",
            "student.vocab_size",
            "rl.rollouts",
            "rl.rollout_batch_size",
            "rl.samples_per_question",
            "rl.ppo_epochs",
            "rl.minibatch_size",
            "rl.max_new_tokens",
            "rl.val_batch_size",
            "trainer.log_every_n_steps",
            "large_lm.batch_size",
            "large_lm.max_concurrency",
            "large_lm.prompt_cache_min_tokens",
            "large_lm.batch_max_requests",
        ),
        COUNT,
    ),
    **dict.fromkeys(
        (
            "distill.num_workers",
            "evaluation.num_examples_saved",
            "rl.value_warmup",
            "rl.num_samples_logged",
            "rl.vf_coef",
            "rl.kl.coef",
            "trainer.gradient_clip_val",
            "large_lm.max_retries",
            "large_lm.batch_retries",
        ),
        SIZE,
    ),
    **dict.fromkeys(("rl.val_every", "rl.log_samples_every"), Range(low=0, note="0: never")),
    **dict.fromkeys(
        (
            "dataset.max_train",
            "dataset.max_val",
            "dataset.max_test",
            "rl.max_questions",
            "rl.max_val_questions",
            "rl.value_head_mlp",
            "prompt.max_context_chars",
            "large_lm.max_input_tokens",
        ),
        CAP,
    ),
    **dict.fromkeys(
        (
            "rl.temperature",
            "rl.clip_range",
            "rl.clip_range_value",
            "trainer.val_check_interval",
            "large_lm.timeout_s",
            "large_lm.retry_base_s",
            "large_lm.retry_max_s",
            "large_lm.batch_poll_s",
        ),
        POSITIVE,
    ),
    **dict.fromkeys(
        (
            "distill.alpha",
            "rl.gamma",
            "rl.lam",
            "large_lm.batch_discount",
            "large_lm.error_rate",
            "large_lm.unassisted_accuracy",
            "large_lm.name_match_cutoff",
            *(f"large_lm.style.{f.name}" for f in fields(SimulatedStyleConfig)),
            *(
                f"large_lm.reader.{f.name}"
                for f in fields(SimulatedReaderConfig)
                if f.name != "length_free_words"
            ),
        ),
        SHARE,
    ),
    "large_lm.reader.length_free_words": Range(low=0),
    "large_lm.max_cost_usd": Range(low=0, nullable=True, note="USD; null: no cap"),
    "evaluation.self_consistency.temperature": Range(
        low=0, low_open=True, note="samples at temperature 0 are all the same"
    ),
    "evaluation.self_consistency.top_p": Range(low=0, high=1, low_open=True),
    "teacher.temperature": Range(low=0, nullable=True, note="null: 0 for one sample, 0.7 for more"),
    "teacher.top_p": Range(low=0, high=1, low_open=True),
    "distill.max_tokens": Range(low=1, nullable=True, note="null: batch_size pairs per batch"),
    "rl.score_clip": Range(low=0, low_open=True, nullable=True),
    "rl.keep_best_alpha": Range(low=0, high=1, low_open=True, high_open=True, nullable=True),
    "rl.keep_best_max_task_drop": Range(low=0, high=1, nullable=True),
    "trainer.max_steps": Range(low=1, also=(-1,), note="no cap"),
    "trainer.max_epochs": Range(low=1, also=(-1,), nullable=True, note="no cap"),
    "threads": Range(low=1, nullable=True, note="null: automatic"),
}
# Only with the adaptive KL controller.
ADAPTIVE_KL = dict.fromkeys(
    ("rl.kl.target", "rl.kl.horizon"), Range(low=0, low_open=True, note="rl.kl.controller=adaptive")
)
