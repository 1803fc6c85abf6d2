"""The `lmgcot` command: a thin Hydra entry point around `lmgcot.pipeline.run`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmgcot.config import register
from lmgcot.errors import LmgcotError

# Configs ship inside the package, so a wheel install has them too.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
# The group options extend these schemas; anything composing CONFIG_DIR imports this module first.
register()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from lmgcot.pipeline import run  # heavy imports after Hydra has parsed --help / --cfg

    try:
        results = run(cfg)
    except LmgcotError as err:
        for line in str(err).splitlines():  # one line per bad value
            print(f"lmgcot: error: {line}", file=sys.stderr)
        sys.exit(2)
    objective = cfg.get("objective")
    if objective:
        value = lookup(results, str(objective))
        if not isinstance(value, (int, float)):
            print(
                f"lmgcot: error: objective={objective}: results.json has no number there",
                file=sys.stderr,
            )
            sys.exit(2)
        return float(value)
    # A scalar for Hydra sweepers to optimise: the best guided method's EM.
    from lmgcot.eval.methods import METHODS

    guided = [n for n, m in METHODS.items() if m.student and m.uses_large_lm]
    ems = [m["em"] for name, m in results["methods"].items() if name in guided]
    return max(ems) if ems else None


def lookup(results: dict, path: str):
    """The value at a dotted path of results.json (`refine.val_reward_best`), or None."""
    node = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
