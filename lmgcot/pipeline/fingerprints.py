"""Artifact fingerprints, and the config view a stage works from.

A stage declares the config it reads (`Stage.reads`: whole sections, or `section.key` leaves). Its
fingerprint hashes exactly those values, less the transport-only keys, and its body sees a view of
the config holding only those: reading anything else fails, so a stage cannot depend on a setting
its fingerprint does not cover.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from lmgcot.config import transport_keys

# Settings that change how a stage reports or how calls are sent, not what it produces (the call
# cache's key ignores the large LM's too): marked on the schema fields.
TRANSPORT = transport_keys()
# Read by every stage's machinery, never part of what it makes: where files go, whether to redo.
RUN_KEYS = ("paths", "force", "share_artifacts", "logger")
# Settings only the test split depends on (its cap is applied after splitting, so the train and
# val questions stay the same). Stages that never see the test split pass these as `ignores`.
TEST_ONLY = ("dataset.max_test",)


def fingerprint(cfg: DictConfig, reads: tuple[str, ...], ignores: tuple[str, ...] = ()) -> str:
    """A hash of the resolved config a stage reads: its sections first, then its leaves (kept in
    that order so that fingerprints made before leaves were declared stay the same). `ignores`
    (`section.key`) are hashed as null, not left out, so that fingerprints made before a key was
    ignored stay the same where it was null."""
    sections = [k for k in reads if "." not in k]
    leaves = [k for k in reads if "." in k]
    parts = {}
    for k in sections:
        node = cfg.get(k)
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if isinstance(value, dict):
            value = {name: v for name, v in value.items() if name not in TRANSPORT.get(k, ())}
            value = _null(value, k, ignores)
        parts[k] = value
    head = hash_parts(json.dumps(parts, sort_keys=True, default=str))
    if not leaves:
        return head
    return hash_parts(head, *(str(OmegaConf.select(cfg, k)) for k in leaves))


def hash_parts(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _null(section: dict, name: str, ignores: tuple[str, ...]) -> dict:
    keys = {k.partition(".")[2] for k in ignores if k.partition(".")[0] == name}
    return {key: None if key in keys else v for key, v in section.items()}


def view(cfg: DictConfig, reads: tuple[str, ...], ignores: tuple[str, ...] = ()) -> DictConfig:
    """The config a stage may read: its declared sections and leaves, plus the run's own keys,
    with `ignores` null as in its fingerprint. Struct mode: reading an undeclared key raises."""
    data: dict = {}
    for key in (*reads, *RUN_KEYS):
        head, _, leaf = key.partition(".")
        if head not in cfg or cfg[head] is None and leaf:
            continue
        node = cfg[head]
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        if leaf:
            data.setdefault(head, {})[leaf] = value[leaf]
        else:
            data[head] = _null(value, head, ignores) if isinstance(value, dict) else value
    out = OmegaConf.create(data)
    OmegaConf.set_struct(out, True)
    return out
