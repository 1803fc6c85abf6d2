"""Schemas of the config groups whose options differ in shape: dataset, large_lm, student and
trainer. Each option extends the schema of its kind; what the kinds share sits in a base class.

`transport=True` in a field's metadata marks a setting that changes how a stage sends or reports
its work, not what it produces: artifact fingerprints leave it out (see `transport_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lmgcot.config.groups import Number


def transport(default: Any = MISSING) -> Any:
    return field(default=default, metadata={"transport": True})


# -- dataset: built-in options are closed; the base stays open for a user's own dataset class -----


@dataclass
class DatasetConfig:
    _target_: str = MISSING
    context: str = MISSING
    max_train: int | None = MISSING
    max_val: int | None = MISSING
    max_test: int | None = MISSING
    seed: int = MISSING


@dataclass
class GeneratedDatasetConfig(DatasetConfig):
    """Datasets generated offline from a seed."""

    n_train: int = MISSING
    n_val: int = MISSING
    n_test: int = MISSING


@dataclass
class SyntheticDatasetConfig(GeneratedDatasetConfig):
    n_distractors: int = MISSING
    names: str = MISSING
    pool_size: int = MISSING
    type_mix: dict[str, Number] = MISSING


@dataclass
class LastLetterDatasetConfig(GeneratedDatasetConfig):
    n_words: int = MISSING


@dataclass
class CoinFlipDatasetConfig(GeneratedDatasetConfig):
    n_people: int = MISSING


@dataclass
class FileDatasetConfig(DatasetConfig):
    """Datasets read from official files (or a hub copy)."""

    path: str | None = MISSING
    train_path: str | None = MISSING
    eval_path: str | None = MISSING
    hub_name: str | None = MISSING
    # float, not Number: OmegaConf 2.3 hands out a list's union-typed items as nodes, not values.
    split_fractions: list[float] = MISSING


@dataclass
class HubDatasetConfig(FileDatasetConfig):
    hub_config: str | None = MISSING


# -- large_lm: open, since a backend's constructor may take more than we type ---------------------


@dataclass
class LargeLMConfig:
    _target_: str = MISSING
    model: str = MISSING
    batch_size: int = transport()


@dataclass
class SimulatedStyleConfig:
    """large_lm.style: the probability of each form the simulated teacher writes in."""

    paraphrase: Number = MISSING
    reverse_order: Number = MISSING
    restate_question: Number = MISSING
    connectives: Number = MISSING
    compressed: Number = MISSING
    distractor_facts: Number = MISSING
    hedge: Number = MISSING
    missing_hop: Number = MISSING
    contradiction: Number = MISSING
    other_conclusion: Number = MISSING


@dataclass
class SimulatedReaderConfig:
    """large_lm.reader: the sizes of the simulated reader's effects."""

    distractor_pull: Number = MISSING
    context_conflict_fallback: Number = MISSING
    self_contradiction_fallback: Number = MISSING
    hedge_trust: Number = MISSING
    length_free_words: int = MISSING
    length_hop_loss: Number = MISSING


@dataclass
class SimulatedLMConfig(LargeLMConfig):
    error_rate: Number = MISSING
    unassisted_accuracy: Number = MISSING
    name_match_cutoff: Number = MISSING
    seed: int = MISSING
    style: SimulatedStyleConfig = field(default_factory=SimulatedStyleConfig)
    reader: SimulatedReaderConfig = field(default_factory=SimulatedReaderConfig)


@dataclass
class HFLMConfig(LargeLMConfig):
    dtype: str = MISSING
    device: str = MISSING
    device_map: Any = MISSING  # a strategy name or an explicit {module: device} map
    max_input_tokens: int | None = MISSING
    trust_remote_code: bool = MISSING


@dataclass
class APILMConfig(LargeLMConfig):
    """Chat APIs over HTTP (OpenAI-compatible servers)."""

    max_concurrency: int = transport()
    system: str | None = MISSING
    timeout_s: Number = transport()
    max_retries: int = transport()
    retry_base_s: Number = transport()
    retry_max_s: Number = transport()
    base_url: str | None = transport()
    prices: dict[str, Any] = transport()
    # USD one invocation may spend on fresh calls (null: no cap); checked before each batch.
    max_cost_usd: Number | None = transport(None)


@dataclass
class AnthropicLMConfig(APILMConfig):
    prompt_caching: bool = transport()
    prompt_cache_min_tokens: int = transport()
    batch_stages: list[str] = transport()
    batch_poll_s: Number = transport()
    batch_max_requests: int = transport()
    batch_retries: int = transport()
    batch_discount: Number = transport()


# -- student ---------------------------------------------------------------------------------------


@dataclass
class StudentConfig:
    name: str = MISSING
    pretrained: str | None = MISSING
    tokenizer: str = MISSING
    max_source_length: int = MISSING
    max_target_length: int = MISSING
    # T5Config keyword arguments for a student built from scratch; null for a checkpoint.
    architecture: dict[str, Any] | None = MISSING


@dataclass
class ScratchStudentConfig(StudentConfig):
    vocab_size: int = MISSING  # the bpe tokenizer's


# -- trainer: open, so any other pytorch_lightning.Trainer argument can be added ------------------


@dataclass
class TrainerConfig:
    _target_: str = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # a count, "auto" or a list of device ids
    precision: int | str = MISSING
    max_epochs: int | None = MISSING
    max_steps: int = MISSING
    max_time: Any = MISSING  # "DD:HH:MM:SS" or a {days, hours, ...} map
    gradient_clip_val: Number | None = MISSING
    log_every_n_steps: int = transport()
    val_check_interval: Number | None = MISSING  # an int counts batches, a float is a share
    enable_progress_bar: bool = transport()
    enable_model_summary: bool = transport()
    deterministic: bool | str = MISSING  # "warn" is Lightning's third value
