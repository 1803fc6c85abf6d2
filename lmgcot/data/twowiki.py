"""The `2wiki` dataset option: 2WikiMultiHopQA from local files (or a hub copy, if named)."""

from __future__ import annotations

from lmgcot.data.official import SAMPLES_DIR, OfficialFormatDataset

TWOWIKI_TYPES = ("comparison", "inference", "compositional", "bridge_comparison")


class TwoWiki(OfficialFormatDataset):
    """2WikiMultiHopQA: the HotpotQA format plus `evidences` triples and four question types.

    path / train_path+eval_path: local files in the official format. An optional per-record
      `answer_aliases` list becomes `Example.aliases`.
    hub_name/hub_config: there is no canonical hub copy, so none is assumed; with no path and no
      hub_name the constructor raises `ConfigError` asking for `dataset.path`.
    Other keyword arguments go to `QADataset` (context, max_*, split_fractions, seed).
    """

    name = "2wiki"
    allowed_types = TWOWIKI_TYPES
    sample_file = SAMPLES_DIR / "2wiki_sample.json"
