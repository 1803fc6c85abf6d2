"""`lmgcot-compare --wandb`: the comparison's files logged to a W&B run in the sweep's group."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml


def sweep_name(sweep_dir: Path) -> str:
    """The `sweep_name` its runs were made with (the W&B group of their runs), else the dir name."""
    for config in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        name = (yaml.safe_load(config.read_text()) or {}).get("sweep_name")
        if name:
            return str(name)
    return sweep_dir.resolve().name


def log_to_wandb(out: Path, group: str, project: str) -> str:
    """Log comparison.csv as a table, the plots and comparison.md to a new W&B run; its directory.

    The run is offline unless WANDB_MODE says otherwise; tradeoff.png is logged when it exists.
    """
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = os.environ.get("WANDB_MODE", "offline")
    with open(out / "comparison.csv", newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    run = wandb.init(
        project=project,
        group=group,
        job_type="comparison",
        name=f"comparison-{group}",
        dir=str(out),
        mode=mode,
    )
    try:
        logged = {
            "comparison/table": wandb.Table(columns=header, data=rows),
            "comparison/plot": wandb.Image(str(out / "comparison.png")),
        }
        if (out / "tradeoff.png").exists():
            logged["comparison/tradeoff"] = wandb.Image(str(out / "tradeoff.png"))
        run.log(logged)
        run.save(str(out / "comparison.md"), base_path=str(out), policy="now")
        return str(run.dir)
    finally:
        run.finish()
