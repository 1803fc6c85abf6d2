"""package_versions(): what a results file records of the environment that produced it."""

from __future__ import annotations

import sys

import numpy
import pytest
import pytorch_lightning
import torch
import transformers

import lmgcot.utils.versions as versions_mod
from lmgcot.utils.versions import package_versions

pytestmark = pytest.mark.unit


def test_every_package_is_named_with_the_version_that_is_imported():
    versions = package_versions()
    assert set(versions) == {
        "python",
        "torch",
        "transformers",
        "pytorch-lightning",
        "hydra-core",
        "omegaconf",
        "anthropic",
        "openai",
        "numpy",
        "lmgcot",
    }
    assert versions["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert versions["torch"] == torch.__version__
    assert versions["numpy"] == numpy.__version__
    assert versions["transformers"] == transformers.__version__
    assert versions["pytorch-lightning"] == pytorch_lightning.__version__
    assert all(isinstance(v, str) and v for v in versions.values())


def test_a_missing_package_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(versions_mod, "PACKAGES", ("torch", "no-such-distribution-xyz"))
    versions = package_versions()
    assert versions["no-such-distribution-xyz"] == "not installed"
    assert versions["torch"] == torch.__version__
