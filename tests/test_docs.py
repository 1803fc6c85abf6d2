"""The docs stay true: README.md, docs/*.md and sweeps/README.md link to what exists, and the
`lmgcot` commands in their code blocks are commands lmgcot accepts.

Links: every relative link (`[text](path)`, `[text](path#anchor)`, `[text](#anchor)`, outside code)
must name an existing file, resolved from the page as a reader reaches it (sweeps/README.md from
sweeps/), and an anchor must be a heading of that page as GitHub spells it (`## Run directory` ->
`#run-directory`). Web links are not fetched. A repository path in inline code (`conf/schedule/synthetic_tiny.yaml`,
`lmgcot/student/fast_t5.py`: a top-level folder, then no spaces or placeholders) must exist too.

Commands: every line of a fenced code block that runs `lmgcot` (after an optional `$ ` prompt and
`VAR=value` prefixes; a trailing `\\` joins the next line; a shell `#` comment or `|`, `&&`, `;`,
`>` ends the command) must compose, as `lmgcot ... --cfg job` would, in process through Hydra's
compose API (seconds for all of them). Unless marked, it must also pass the config check every run
does before any work (`lmgcot.config.validate.check`), with `hydra.run.dir`, where the command
sets it, as the run directory. A line whose check needs what the reader must bring is marked by
a trailing comment that says so: `# needs data` (dataset files, an earlier run's directory) or
`# needs a key` (an API key); the words may follow others (`# re-evaluate (needs data)`). A marked
line must still compose. `-m`/`--multirun` commands compose with the first value of each swept
key; `plan=true` (read by the CLI before Hydra) and Hydra's own flags are left out.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from lmgcot.artifacts import RunDir
from lmgcot.cli import CONFIG_DIR
from lmgcot.config.validate import check

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
PAGES.append("sweeps/README.md")
# The design card's top level.
TOP_LEVEL = ("pyproject.toml", "README.md", "conf", "lmgcot", "sweeps", "tests", "outputs")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
REPO_PATH = re.compile(r"^(?:conf|lmgcot|sweeps|docs|tests|benchmarks|outputs)/[\w./-]*$")
COMMAND = re.compile(r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*lmgcot(?:\s|$)")
NEEDS = re.compile(r"#.*\bneeds (?:data|a key)\b")
# Hydra's command-line flags: (flag, takes a value).
FLAGS = {"-m": False, "--multirun": False, "--cfg": True, "-c": True, "--package": True, "-p": True}
FLAGS |= dict.fromkeys(("--help", "-h", "--hydra-help", "--resolve", "--info", "-i"), False)
PLAN = ("plan=true", "plan=True", "plan=false", "plan=False")


def _prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """The page's lines outside fenced code blocks, and those inside."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = _prose_and_code(path.read_text(encoding="utf-8"))
    out, seen = set(), {}
    for line in prose:
        out.update(HTML_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match[2])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: str, root: Path = REPO) -> list[str]:
    prose, _ = _prose_and_code((root / page).read_text(encoding="utf-8"))
    text = "\n".join(INLINE_CODE.sub("", line) for line in prose)
    out = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        where, _, anchor = target.partition("#")
        # Resolved as a browser does, from the page's folder as reached (not through links).
        path = (
            root / os.path.normpath(os.path.join(os.path.dirname(page), where)) if where else None
        )
        file = path if path is not None else root / page
        if path is not None and not path.exists():
            out.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            out.append(f"{target}: no heading #{anchor} in {file.relative_to(root)}")
    return out


def missing_paths(page: str, root: Path = REPO) -> list[str]:
    """Repository paths named in inline code outside code blocks that do not exist."""
    prose, _ = _prose_and_code((root / page).read_text(encoding="utf-8"))
    spans = re.findall(r"`([^`\s]+)`", "\n".join(prose))
    # outputs/ holds what runs write: a fresh clone has none of it, so only its name is checked.
    return [
        f"{s}: no such path"
        for s in spans
        if REPO_PATH.match(s) and not s.startswith("outputs/") and not (root / s).exists()
    ]


def commands(page: str, root: Path = REPO) -> list[tuple[str, bool]]:
    """(command line, marked as needing data or a key) for each `lmgcot` line in code blocks."""
    _, code = _prose_and_code((root / page).read_text(encoding="utf-8"))
    out, pending = [], ""
    for line in code:
        if pending:
            line, pending = pending + " " + line.strip(), ""
        elif not COMMAND.match(line):
            continue
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        out.append((line.strip(), bool(NEEDS.search(line))))
    return out


def overrides_of(line: str) -> list[str]:
    """The Hydra overrides of a command line, sweeps reduced to their first value."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = list(lexer)
    words = words[next(i for i, w in enumerate(words) if w == "lmgcot") + 1 :]
    words = words[: next((i for i, w in enumerate(words) if set(w) <= set("|&;<>")), None)]
    out, skip = [], False
    for word in words:
        flag = word.split("=", 1)[0]
        if skip or flag in FLAGS or flag in ("--config-name", "-cn", "--config-path", "-cp"):
            skip = not skip and "=" not in word and FLAGS.get(flag, flag.startswith("-c"))
            continue
        if word not in PLAN:
            out.append(word)
    parsed = OverridesParser.create().parse_overrides(out)
    return [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else o.input_line
        for o in parsed
    ]


def command_problem(line: str, needs: bool, tmp: Path) -> str | None:
    """Why `line` is not a command lmgcot accepts, or None."""
    try:
        overrides = overrides_of(line)
        run_dir = next(
            (o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), "run"
        )
        # Under tmp, as in a fresh clone: an earlier run of this checkout must not make a line
        # pass that needs one (mark it `# needs data`).
        run_dir = tmp / run_dir.lstrip("/")
        cfg = compose("config", overrides=[f"paths.run_dir={run_dir}", *overrides])
        if not needs:
            check(cfg)
    except Exception as err:  # Hydra's and the check's errors alike: the line is reported
        return f"{line}\n    {type(err).__name__}: {' '.join(str(err).split())[:300]}"
    return None


@pytest.fixture(scope="module")
def hydra_app():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def test_the_top_level_is_the_design_cards():
    assert all((REPO / name).exists() for name in TOP_LEVEL)
    # conf/ is the package's own config tree, which the wheel carries (tests/test_package.py).
    assert (REPO / "conf").resolve() == Path(CONFIG_DIR).resolve()
    assert (REPO / "conf" / "config.yaml").is_file()


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    broken = broken_links(page)
    assert not broken, f"{page}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES)
def test_every_repository_path_named_exists(page):
    missing = missing_paths(page)
    assert not missing, f"{page}:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES)
def test_every_lmgcot_command_composes_and_passes_the_check(page, hydra_app, tmp_path):
    problems = [command_problem(line, needs, tmp_path) for line, needs in commands(page)]
    problems = [p for p in problems if p]
    assert not problems, f"{page}:\n" + "\n".join(problems)


SELF_TEST_PAGE = """# A page

## Run directory

[fine](sub/b.md) [fine too](#a-page) [web](https://example.org/x) `[in code](nope.md)`
[gone](nope.md) [bad anchor](sub/b.md#nowhere) [good anchor](sub/b.md#the-b-page)
Paths: `docs/b.md` and `docs/gone.md`, not `docs/<page>.md` nor `some/where.md`; a run writes
`outputs/cache/calls.sqlite`.

```bash
lmgcot experiment=smoke                      # composes and passes the check
WANDB_MODE=offline lmgcot -m +sweep=reward_mix seed=0,1 | tee log
lmgcot nope.key=1
lmgcot studnet=tiny
lmgcot rl.algorithm=a2c
lmgcot stages=[evaluate] hydra.run.dir=/nonexistent     # needs data
lmgcot stages=[evaluate] \\
  hydra.run.dir=/nonexistent
lmgcot stages=[evaluate] hydra.run.dir=outputs/earlier
[fine](not/a/link.md)
```
"""


def test_the_checks_catch_what_they_are_for(hydra_app, tmp_path, monkeypatch):
    # An earlier run in the working directory does not make a command pass that needs one.
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    for stage in ("distill", "refine"):
        RunDir(Path("outputs/earlier")).stage(stage).mark_done("earlier")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# The B page\n", encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n", encoding="utf-8")
    (tmp_path / "a.md").write_text(SELF_TEST_PAGE, encoding="utf-8")
    assert broken_links("a.md", tmp_path) == [
        "nope.md: no such file",
        "sub/b.md#nowhere: no heading #nowhere in sub/b.md",
    ]
    assert missing_paths("a.md", tmp_path) == ["docs/gone.md: no such path"]
    found = commands("a.md", tmp_path)
    assert [needs for _, needs in found] == [False] * 5 + [True, False, False]
    failing = [line for line, needs in found if command_problem(line, needs, tmp_path)]
    assert failing == [
        "lmgcot nope.key=1",
        "lmgcot studnet=tiny",
        "lmgcot rl.algorithm=a2c",
        "lmgcot stages=[evaluate] hydra.run.dir=/nonexistent",
        "lmgcot stages=[evaluate] hydra.run.dir=outputs/earlier",
    ]
