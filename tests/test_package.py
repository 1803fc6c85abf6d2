"""The wheel, installed in a fresh venv, is a working `lmgcot`: its configs ship inside it.

Offline: the wheel is built without build isolation, installed with --no-deps, and the dev venv's
site-packages is put on the new venv's path (a .pth file) for the dependencies.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, which other
    # test processes may be reading.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "lmgcot", src / "lmgcot", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([sys.executable, *pip_wheel, "-w", out, src], cwd=src)
    [whl] = out.glob("lmgcot-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=root)
    py = env_dir / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel],
        root,
    )
    [new_site] = (env_dir / "lib").glob("python*/site-packages")
    # After the venv's own site-packages on sys.path: lmgcot itself comes from the wheel.
    (new_site / "dev_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def test_the_wheel_holds_every_file_of_the_config_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # The top-level conf/ of the design card is the package's own config tree (a link to it).
    conf = REPO / "conf"
    assert conf.resolve() == (REPO / "lmgcot" / "conf").resolve()
    shipped = {
        f"lmgcot/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*") if p.is_file()
    }
    shipped = {n for n in shipped if "__pycache__" not in n}
    assert any(n.endswith(".yml") for n in shipped) and any(n.endswith(".md") for n in shipped)
    assert shipped - names == set(), "config files missing from the wheel"
    assert "lmgcot/data/samples/hotpotqa_sample.json" in names


def test_the_installed_command_runs_from_outside_the_repo(venv, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = _run(
        [venv / "bin" / "python", "-c", "import lmgcot.cli as c; print(c.CONFIG_DIR)"], cwd
    )
    config_dir = Path(where.stdout.strip())
    assert venv in config_dir.parents, f"lmgcot was imported from {config_dir}, not the wheel"

    lmgcot = venv / "bin" / "lmgcot"
    helped = _run([lmgcot, "--help"], cwd)
    assert helped.stdout.startswith("lmgcot: LM-Guided Chain-of-Thought")
    groups = sorted(p.name for p in config_dir.iterdir() if p.is_dir() and p.name != "hydra")
    assert "dataset" in groups and "sweep" in groups
    for group in groups:
        assert f"\n{group}: " in helped.stdout, f"--help does not list {group}"

    job = _run([lmgcot, "--cfg", "job", "experiment=smoke", "+sweep=reward_mix"], cwd)
    cfg = yaml.safe_load(job.stdout)
    assert cfg["dataset"]["_target_"] == "lmgcot.data.synthetic.SyntheticMultiHop"
    assert cfg["sweep_name"] == "reward_mix"
    assert list(cwd.iterdir()) == []  # printed, nothing run
