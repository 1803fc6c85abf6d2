"""The schemas in Hydra's ConfigStore, and what they declare about fingerprints.

Each group option extends its schema through its defaults list (`- /schema_teacher@_here_`), so a
value of the wrong type fails while Hydra composes, before any work. The schemas are stored
outside the groups, under top-level names: inside a group they would be listed as options by
`lmgcot --help` and picked up by sweeps over `glob(*)`.
"""

from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lmgcot.config import groups as G
from lmgcot.config import variants as V

# Closed: a key the schema does not name is refused.
CLOSED = {
    "lmgcot_schema": G.LmgcotConfig,
    "schema_teacher": G.TeacherConfig,
    "schema_distill": G.DistillConfig,
    "schema_evaluation": G.EvaluationConfig,
    "schema_reward": G.RewardConfig,
    "schema_rl": G.RLConfig,
    "schema_prompt": G.PromptConfig,
    "schema_paths": G.PathsConfig,
    "schema_student": V.StudentConfig,
    "schema_student_scratch": V.ScratchStudentConfig,
    "schema_dataset_synthetic": V.SyntheticDatasetConfig,
    "schema_dataset_last_letter": V.LastLetterDatasetConfig,
    "schema_dataset_coin_flip": V.CoinFlipDatasetConfig,
    "schema_dataset_file": V.FileDatasetConfig,
    "schema_dataset_hub": V.HubDatasetConfig,
}
# Open: typed where named, but further keys pass through to the class the node instantiates
# (a user's dataset, a backend's extra arguments, any other Lightning Trainer argument).
OPEN = {
    "schema_dataset": V.DatasetConfig,
    "schema_large_lm": V.LargeLMConfig,
    "schema_large_lm_simulated": V.SimulatedLMConfig,
    "schema_large_lm_hf": V.HFLMConfig,
    "schema_large_lm_api": V.APILMConfig,
    "schema_large_lm_anthropic": V.AnthropicLMConfig,
    "schema_trainer": V.TrainerConfig,
}
# The schemas of each group, for what their fields declare.
GROUP_SCHEMAS = {
    "trainer": (V.TrainerConfig,),
    "large_lm": (
        V.LargeLMConfig,
        V.SimulatedLMConfig,
        V.HFLMConfig,
        V.APILMConfig,
        V.AnthropicLMConfig,
    ),
}


def register() -> None:
    """Put every schema in the ConfigStore (idempotent: storing a name again replaces it), and
    the config's own resolvers."""
    if not OmegaConf.has_resolver("lmgcot.or"):
        # `oc.select` falls back only for a missing key, not for one set to null.
        OmegaConf.register_new_resolver("lmgcot.or", _or)
    cs = ConfigStore.instance()
    for name, schema in CLOSED.items():
        cs.store(name=name, node=schema, provider="lmgcot")
    for name, schema in OPEN.items():
        cs.store(
            name=name, node=OmegaConf.structured(schema, flags={"struct": False}), provider="lmgcot"
        )


def _or(value, default):
    """`${lmgcot.or:${key},default}`: the key's value, or `default` where it is null."""
    return default if value is None else value


def transport_keys() -> dict[str, tuple[str, ...]]:
    """Per group, the keys marked `transport`: how a stage sends or reports its work, not what it
    makes. Artifact fingerprints leave them out."""
    out: dict[str, tuple[str, ...]] = {}
    for group, schemas in GROUP_SCHEMAS.items():
        names: dict[str, None] = {}  # ordered set: the first schema to declare a key places it
        for schema in schemas:
            for f in dataclasses.fields(schema):
                if f.metadata.get("transport"):
                    names[f.name] = None
        out[group] = tuple(names)
    return out
