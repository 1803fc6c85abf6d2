"""Adding a large-LM backend and a dataset: a class each (tests/extensions.py) and one YAML each,
found through Hydra's search path like a user's own config directory."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lmgcot.cli import CONFIG_DIR
from lmgcot.errors import ConfigError
from lmgcot.pipeline import run

pytestmark = [pytest.mark.stage, pytest.mark.slow]

BACKEND = """defaults:
  - /schema_large_lm@_here_
  - _self_

_target_: extensions.AtlasLM
model: atlas-1
batch_size: 8
"""
DATASET = """defaults:
  - /schema_dataset@_here_
  - _self_

_target_: extensions.CapitalsQA
context: all
max_train: null
max_val: null
max_test: null
split_fractions: [0.5, 0.0, 0.5]
seed: ${seed}
"""


def _compose(tmp_path, *overrides):
    own = tmp_path / "my_conf"
    (own / "large_lm").mkdir(parents=True)
    (own / "dataset").mkdir()
    (own / "large_lm" / "atlas.yaml").write_text(BACKEND)
    (own / "dataset" / "capitals.yaml").write_text(DATASET)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(
                "config",
                overrides=[
                    f"hydra.searchpath=[file://{own}]",
                    f"paths.output_dir={tmp_path / 'out'}",
                    f"paths.run_dir={tmp_path / 'run'}",
                    "print_results=false",
                    *overrides,
                ],
            )
    finally:
        GlobalHydra.instance().clear()


def test_a_backend_and_a_dataset_added_as_a_class_and_a_yaml_each(tmp_path):
    cfg = _compose(
        tmp_path,
        "large_lm=atlas",
        "dataset=capitals",
        "stages=[evaluate]",
        "evaluation.methods=[standard]",
    )
    results = run(cfg)
    # The backend read every question of the dataset's test split and got each capital right.
    assert results["setup"]["large_lm"] == "atlas:atlas-1"
    assert results["setup"]["dataset"] == "capitals" and results["setup"]["n"]["test"] == 3
    assert results["methods"]["standard"]["em"] == 1.0
    assert results["llm"]["calls"] == 3


def test_the_new_options_are_checked_like_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="dataset.max_test"):
        run(_compose(tmp_path, "large_lm=atlas", "dataset=capitals", "dataset.max_test=-1"))
