"""The versions of Python and of the packages a result depends on, for recording beside it."""

from __future__ import annotations

import platform
from importlib import metadata

# Distribution names (as pip knows them) whose versions move the numbers a run reports.
PACKAGES = (
    "torch",
    "transformers",
    "pytorch-lightning",
    "hydra-core",
    "omegaconf",
    "anthropic",
    "openai",
    "numpy",
    "lmgcot",
)


def package_versions() -> dict[str, str]:
    """{"python": "3.11.7", "torch": "2.13.0+cpu", ...}; "not installed" for a missing package."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
