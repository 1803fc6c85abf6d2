"""The import contract: lmgcot's packages form layers, and imports only run down them.

Every module under lmgcot/ is parsed (not imported), and each import of lmgcot code, wherever it
sits (module level, inside a function, under `if TYPE_CHECKING:`), is mapped to the top-level
package it reaches. A package may import itself and the layers below it; packages that share a
layer may not import each other. A new top-level package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "lmgcot"

# Bottom to top. Why this order: `answers` (reading and scoring answers) is shared by data, the
# student, rewards, the teacher and evaluation; `artifacts` names a run directory's files for the
# stages that write them and the report that reads them; the prompts render data records; the
# student builds small models that `llm.tiny_models` reuses for the local backend; rewards and the
# teacher stage call the large LM; distill and RL train the student; evaluation runs the methods;
# reports read finished runs; config checks a composed config against every layer's closed sets
# (the stage names from `artifacts`); the pipeline checks its config, then runs the stages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("utils",),
    ("answers", "artifacts"),
    ("data",),
    ("prompts",),
    ("student",),
    ("llm",),
    ("rewards",),
    ("teacher",),
    ("distill", "rl"),
    ("eval",),
    ("report",),
    ("config",),
    ("pipeline",),
    ("cli",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    """`lmgcot/llm/simulated.py` -> `lmgcot.llm.simulated`; a package's `__init__` is the package."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lmgcot_imports(
    source: str, module: str, is_package: bool = False
) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) for every import of lmgcot code in `source`, relative ones resolved:
    `import a.b` gives (line, "a.b", ()), `from a import b, c` gives (line, "a", ("b", "c"))."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base, tuple(alias.name for alias in node.names)))
    return [(line, m, names) for line, m, names in found if m.split(".")[0] == "lmgcot"]


def top_packages(imported: str, names: tuple[str, ...]) -> set[str]:
    """The top-level packages an import reaches: `from lmgcot import x` reaches `x`."""
    if imported == "lmgcot":
        return set(names)
    return {imported.split(".")[1]}


def imported_modules(imported: str, names: tuple[str, ...], known: set[str]) -> set[str]:
    """The modules of `known` an import loads: `from a import b` loads `a.b` when that is a
    module, else `a` (whose attribute `b` is)."""
    subs = {f"{imported}.{n}" for n in names} & known
    whole = imported in known and (not names or len(subs) < len(names))
    return subs | ({imported} if whole else set())


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports in `source` (the text of `module`) that break the layer order."""
    own = module.split(".")[1]
    if own not in LAYER_OF:
        return [f"{module}: lmgcot.{own} has no layer"]
    targets = {
        (line, target)
        for line, imported, names in lmgcot_imports(source, module, is_package)
        for target in top_packages(imported, names)
    }
    out = []
    for line, target in sorted(targets):
        if target == own:
            continue
        if target not in LAYER_OF:
            out.append(f"{module}:{line} imports lmgcot.{target}, which has no layer")
        elif LAYER_OF[target] >= LAYER_OF[own]:
            where = "beside" if LAYER_OF[target] == LAYER_OF[own] else "above"
            out.append(f"{module}:{line} imports lmgcot.{target}, {where} {own!r}")
    return out


def sources() -> dict[str, tuple[str, bool]]:
    """{module: (source, is_package)} for every module of lmgcot but the root `__init__`."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path == PACKAGE_DIR / "__init__.py":
            continue
        out[module_name(path)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def test_every_top_level_package_has_a_layer():
    missing = {m.split(".")[1] for m in sources()} - set(LAYER_OF)
    assert not missing, f"give these a place in LAYERS: {sorted(missing)}"


def test_the_root_package_imports_nothing_of_its_own():
    # Every `import lmgcot.x` runs lmgcot/__init__.py first; an import there would sit below all.
    source = (PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8")
    assert lmgcot_imports(source, "lmgcot", is_package=True) == []


def test_imports_run_down_the_layers():
    found = [v for m, (src, is_pkg) in sources().items() for v in violations(m, src, is_pkg)]
    assert not found, "upward or sideways imports:\n" + "\n".join(found)


def import_cycles(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """Cycles among `modules` ({module: (source, is_package)}), counting every import in them:
    one under TYPE_CHECKING or in a function is still a cycle, only deferred."""
    known = set(modules)
    graph = {
        m: {
            target
            for _, imported, names in lmgcot_imports(src, m, is_pkg)
            for target in imported_modules(imported, names, known)
            if target != m
        }
        for m, (src, is_pkg) in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_cycles_between_modules():
    cycles = import_cycles(sources())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_a_cycle_behind_type_checking_counts():
    modules = {
        "lmgcot.llm.a": ("from lmgcot.llm.b import helper", False),
        "lmgcot.llm.b": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a",
            False,
        ),
        "lmgcot.llm.c": ("from lmgcot.llm import b", False),
    }
    assert import_cycles(modules) == ["lmgcot.llm.a -> lmgcot.llm.b -> lmgcot.llm.a"]


def test_a_package_init_and_its_submodules_are_no_cycle():
    # The usual idiom: the package re-exports from a submodule that imports a sibling through it.
    modules = {
        "lmgcot.config": ("from lmgcot.config.store import register", True),
        "lmgcot.config.store": ("from lmgcot.config import groups as G", False),
        "lmgcot.config.groups": ("import dataclasses", False),
    }
    assert import_cycles(modules) == []


# (module, source, is it a violation). These pin what the contract sees, so that a checker that
# silently stopped seeing some form of import would fail here rather than pass everything.
CASES = [
    ("lmgcot.data.reasoning_official", "from lmgcot.answers.typed import read_answer", False),
    ("lmgcot.llm.simulated", "from lmgcot.llm.base import LargeLM", False),
    ("lmgcot.answers.typed", "from lmgcot.eval.methods import METHODS", True),
    ("lmgcot.llm.simulated", "from lmgcot.rewards.judge import JUDGE_PREFIX", True),
    ("lmgcot.student.generate", "from lmgcot.distill.datamodule import pad_to_multiple", True),
    ("lmgcot.rl.module", "from lmgcot.distill.module import RationaleDistiller", True),
    ("lmgcot.student.models", "import lmgcot.rl.module", True),
    ("lmgcot.eval.methods", "from lmgcot import pipeline", True),
    ("lmgcot.llm.simulated", "from ..rewards import judge", True),
    ("lmgcot.llm.simulated", "from . import simulated_reasoning", False),
    ("lmgcot.data.base", "def load():\n    from lmgcot.prompts import PromptTemplates\n", True),
    (
        "lmgcot.llm.simulated_reasoning",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lmgcot.cli import main\n",
        True,
    ),
    ("lmgcot.utils.io", "from lmgcot.newthing import x", True),
    ("lmgcot.cli", "from lmgcot.pipeline import run", False),
    ("lmgcot.report.tables", "import torch\nfrom collections import Counter", False),
]


@pytest.mark.parametrize(
    "module,source,bad", CASES, ids=[f"{m}:{s.splitlines()[-1].strip()}" for m, s, _ in CASES]
)
def test_the_contract_catches_upward_imports(module, source, bad):
    assert bool(violations(module, source)) == bad
