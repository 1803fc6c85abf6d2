"""The `hotpotqa` dataset option: HotpotQA (distractor setting) from local files or the HF hub."""

from __future__ import annotations

from typing import Any

from lmgcot.data.official import SAMPLES_DIR, OfficialFormatDataset


class HotpotQA(OfficialFormatDataset):
    """HotpotQA: bridge and comparison questions over 2 gold and up to 8 distractor paragraphs.

    path: one file in the official JSON format (split by `split_fractions`).
    train_path/eval_path: the official train and dev files (dev halves become val and test).
    hub_name/hub_config: used only when no path is given; the `distractor` config is the one whose
      contexts contain the gold paragraphs (in `fullwiki` they are missing, which fails validation).
    Other keyword arguments go to `QADataset` (context, max_*, split_fractions, seed).
    """

    name = "hotpotqa"
    sample_file = SAMPLES_DIR / "hotpotqa_sample.json"

    def __init__(
        self,
        path: str | None = None,
        train_path: str | None = None,
        eval_path: str | None = None,
        hub_name: str = "hotpot_qa",
        hub_config: str = "distractor",
        **kwargs: Any,
    ):
        super().__init__(path, train_path, eval_path, hub_name, hub_config, **kwargs)
