"""The documentation site: its code runs, its generated pages are current, and it builds with ``mkdocs --strict``.

How the code in the pages is tested (each page in order, in its own empty folder holding a copy of ``examples/``,
as if run from the root of a checkout):

* a fenced block with a ``title="PATH"`` (any language) is a file: it is written to PATH for later blocks to use;
* a ```` ```python ```` block without a title is executed, on its own (every example block is self-contained);
* in a ```` ```console ```` (or ``bash``/``sh``) block every line starting with ``$ `` is a command, run with bash.
  It must exit 0, or the code in a trailing ``# exit N`` comment. Output lines shown under it that start with
  ``PASS:``, ``FAIL:`` or ``error:`` must appear in what it prints (the rest of the output is illustrative).
  Commands that install software (``python3 -m venv``, ``source``, ``pip install``) are not run here: the test
  environment is already installed, and tests/test_plugin_author_path.py installs from scratch;
* a ```` ```text ```` block after a line ending in "prints:" must be exactly what the Python block before it
  printed;
* ```` ```toml ````, ```` ```json ```` and ```` ```yaml ```` blocks without a title must parse;
* ``--8<-- "path"`` lines (pymdownx.snippets) are replaced by the file they include, as on the site;
* a block right after an ``<!-- docs-test: skip ... -->`` comment is not run (signatures, commands that need
  hardware or credentials). Used sparingly: tests/test_docs.py counts them.

The "Writing a plugin" page needs the example plugin installed; tests/test_plugin_author_path.py runs it, in a
fresh virtual environment.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, clean_env

DOCS = REPO / "docs"
SKIP_MARK = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b.*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[ \t]*(?P<attrs>[^`]*)$")
SNIPPET = re.compile(r"""^(?P<indent>[ \t]*)-{1,}8<-{1,}[ \t]+["'](?P<path>[^"']+)["'][ \t]*$""")
SHELLS = {"console", "bash", "sh", "shell"}
EXPECT_EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
CHECKED_OUTPUT = ("PASS:", "FAIL:", "error:")
SETUP = re.compile(r"^(python3?\s+-m\s+venv\b|source\s|\.\s|(\S*/)?pip3?\s+install\b|python3?\s+-m\s+pip\s+install\b)")

# Pages whose code runs elsewhere, and pages that hold no runnable examples of ours.
RUN_ELSEWHERE = {"writing-a-plugin.md": "tests/test_plugin_author_path.py"}
NOT_RUN = {
    "cli.md": "generated from --help (tests/test_cli.py checks it is current); it holds no examples to run",
    "benchmarks.md": "results of the benchmark scripts, which benchmarks/ runs itself (so are docs/benchmarks/*)",
}
# The pages the documentation issue asks for, by nav title.
REQUIRED_PAGES = {
    "quickstart.md",
    "concepts.md",
    "reference/profile-format.md",
    "reference/builtin-profiles.md",
    "recipes/index.md",
    "recipes/zero-point-0-or-128.md",
    "recipes/tensorrt-int8.md",
    "recipes/16-bit-activations.md",
    "recipes/power-of-two-scales.md",
    "recipes/calibrate-once.md",
    "recipes/ci-gate.md",
    "writing-a-plugin.md",
    "reference/hooks.md",
    "cli.md",
    "benchmarks.md",
    "check.md",
}
MAX_SKIPPED = 8


# ----------------------------------------------------------------------------------------------- reading pages


@dataclass
class Command:
    line: int
    text: str
    exit_code: int = 0
    output: list[str] = field(default_factory=list)

    @property
    def setup(self) -> bool:
        """True for commands that install software rather than use it."""
        return bool(SETUP.match(self.text))


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    title: str | None
    body: str
    skip: bool
    intro: str = ""  # the line before the block

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    def commands(self) -> list[Command]:
        """The ``$ `` commands of a shell block (continuation lines joined), with the output shown under each."""
        out: list[Command] = []
        lines = self.body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                text, start = line[2:], i
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                m = EXPECT_EXIT.search(text)
                out.append(Command(self.line + 1 + start, text, int(m.group(1)) if m else 0))
            elif out:
                out[-1].output.append(line)
            i += 1
        return out


def expand_snippets(text: str) -> str:
    """Replace pymdownx.snippets lines (``--8<-- "path"``, relative to the repository) by the file's text."""

    def lines():
        for line in text.splitlines():
            m = SNIPPET.match(line)
            if m is None:
                yield line
                continue
            path = REPO / m.group("path")
            assert path.is_file(), f"snippet {m.group('path')} does not exist"
            for included in path.read_text(encoding="utf-8").rstrip("\n").splitlines():
                yield m.group("indent") + included if included else ""

    return "\n".join(lines())


def blocks(page: str | Path) -> list[Block]:
    """Every fenced code block of a page (``page`` relative to docs/), snippets expanded."""
    rel = str(page)
    lines = expand_snippets((DOCS / rel).read_text(encoding="utf-8")).splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        attrs = m.group("attrs")
        title = re.search(r'title="([^"]*)"', attrs)
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{re.escape(fence)}\s*$", lines[j].rstrip()):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        assert j < len(lines), f"docs/{rel}:{i + 1}: code block never closed"
        out.append(
            Block(
                page=rel,
                line=i + 1,
                lang=m.group("lang").lower(),
                title=title.group(1) if title else None,
                body="\n".join(body) + "\n",
                skip=bool(SKIP_MARK.match(prev)),
                intro=prev.strip(),
            )
        )
        i = j + 1
    return out


def pages() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


# ----------------------------------------------------------------------------------------------- running pages


def example_workdir(tmp: Path) -> Path:
    """An empty folder holding a copy of the repository's ``examples/``, as the pages' commands expect."""
    ignore = shutil.ignore_patterns("__pycache__", "build", "dist", "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO / "examples", tmp / "examples", ignore=ignore)
    return tmp


def shell_env(bin_dir: Path) -> dict[str, str]:
    """A clean environment whose ``hwquant`` and ``python`` are the ones in ``bin_dir``; wide, colourless output."""
    env = clean_env(NO_COLOR="1", TERM="dumb", COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_command(cmd: Command, block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd.text],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    where = f"docs/{block.page}:{cmd.line}: $ {cmd.text}"
    if proc.returncode != cmd.exit_code:
        pytest.fail(
            f"{where}\nexited {proc.returncode}, the page says {cmd.exit_code}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    printed = " ".join((proc.stdout + "\n" + proc.stderr).split())
    for shown in cmd.output:
        if shown.strip().startswith(CHECKED_OUTPUT):
            expected = " ".join(shown.split())
            assert expected in printed, f"{where}\nthe page shows:\n{shown}\nit printed:\n{proc.stdout}{proc.stderr}"
    return proc


def exec_python(block: Block, cwd: Path) -> str:
    """Run a Python block in this process, in ``cwd``, in a fresh namespace; return what it printed."""
    code = compile(block.body, block.where, "exec")
    old = Path.cwd()
    printed = io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(printed):
            exec(code, {"__name__": "__docs__"})
    finally:
        os.chdir(old)
    return printed.getvalue()


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def check_syntax(block: Block) -> None:
    if block.lang == "toml":
        tomllib.loads(block.body)
    elif block.lang == "json":
        json.loads(block.body)
    elif block.lang == "yaml":
        yaml = pytest.importorskip("yaml")
        yaml.safe_load(block.body)


def run_page(
    page: str,
    cwd: Path,
    env: dict[str, str],
    python: Callable[[Block, Path], str] = exec_python,
    setup: Callable[[Command, Block], None] | None = None,
) -> dict[str, int]:
    """Run a page's blocks in order in ``cwd``; ``setup`` receives the install commands. Returns counts."""
    counts = {"files": 0, "python": 0, "commands": 0, "parsed": 0, "skipped": 0, "outputs": 0}
    printed: str | None = None  # what the last Python block printed, for a "It prints:" block after it
    for block in blocks(page):
        if block.lang == "text" and block.intro.endswith("prints:") and not block.skip:
            assert printed is not None, f"{block.where}: 'prints:' with no Python block before it"
            assert _lines(printed) == _lines(block.body), f"{block.where}: the block printed\n{printed}"
            counts["outputs"] += 1
            continue
        if block.skip:
            counts["skipped"] += 1
            continue
        if block.title:
            path = cwd / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.body, encoding="utf-8")
            counts["files"] += 1
            if block.lang in ("toml", "json", "yaml"):
                check_syntax(block)
        elif block.lang in ("python", "py"):
            try:
                printed = python(block, cwd)
            except Exception as exc:
                raise AssertionError(f"{block.where}: the Python block failed: {type(exc).__name__}: {exc}") from exc
            counts["python"] += 1
        elif block.lang in SHELLS:
            for cmd in block.commands():
                if cmd.setup:
                    if setup is not None:
                        setup(cmd, block)
                    continue
                run_command(cmd, block, cwd, env)
                counts["commands"] += 1
        elif block.lang in ("toml", "json", "yaml"):
            check_syntax(block)
            counts["parsed"] += 1
    return counts


# Files some pages talk about without making them (the checker page's model.qdq.onnx): made before the page runs.
def _checker_page_files(cwd: Path) -> None:
    import hwquant

    digits = cwd / "examples" / "digits"
    hwquant.quantize(digits / "digits_cnn.onnx", cwd / "model.qdq.onnx", "tensorrt-int8", digits / "calibration.npz")
    (cwd / "my-target.toml").write_text('name = "my-target"\nextends = "tensorrt-int8"\n', encoding="utf-8")


PAGE_FILES: dict[str, Callable[[Path], None]] = {"check.md": _checker_page_files}


# ----------------------------------------------------------------------------------------------- tests

RUNNABLE = [p for p in pages() if p not in RUN_ELSEWHERE and p not in NOT_RUN and not p.startswith("benchmarks/")]
# The recipes run some 40 commands (about a minute): slow. The quickstart and the other pages always run.
PAGE_PARAMS = [pytest.param(p, marks=pytest.mark.slow) if p.startswith("recipes/") else p for p in RUNNABLE]


@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_page_examples_run(page: str, tmp_path: Path):
    cwd = example_workdir(tmp_path)
    if page in PAGE_FILES:
        PAGE_FILES[page](cwd)
    run_page(page, cwd, shell_env(Path(sys.executable).parent))


def test_quickstart_runs_every_step():
    """The quickstart must show (and so run) install, quantize, check and compare, from the CLI and in Python."""
    commands = [c.text for b in blocks("quickstart.md") if b.lang in SHELLS and not b.skip for c in b.commands()]
    assert any(c.startswith("pip install") for c in commands)
    for verb in ("quantize", "check", "compare"):
        assert any(c.startswith(f"hwquant {verb} ") for c in commands), verb
    python = "\n".join(b.body for b in blocks("quickstart.md") if b.lang == "python" and not b.skip)
    for call in ("hwquant.quantize(", "hwquant.check(", "hwquant.compare("):
        assert call in python


def test_skips_are_few_and_explained():
    skipped = [b for p in pages() for b in blocks(p) if b.skip]
    assert len([b for b in skipped if not b.page.startswith("reference/")]) <= MAX_SKIPPED, [b.where for b in skipped]
    for p in pages():
        for line in (DOCS / p).read_text(encoding="utf-8").splitlines():
            if "docs-test:" in line:
                assert SKIP_MARK.match(line) and re.search(r"skip\s*\(.+\)", line), f"docs/{p}: {line.strip()}"


def test_every_shell_example_uses_the_dollar_prompt():
    """A console block without `$ ` lines would silently run nothing."""
    for p in [*RUNNABLE, *RUN_ELSEWHERE]:
        for b in blocks(p):
            if b.lang in SHELLS and not b.skip and not b.title:
                assert b.commands(), f"{b.where}: a {b.lang} block with no `$ ` command"


def _gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_current():
    gen = _gen_reference()
    for path, render in gen.PAGES.items():
        rel = path.relative_to(REPO)
        assert path.is_file(), f"{rel} is missing: run `python docs/gen_reference.py`"
        assert path.read_text(encoding="utf-8") == render(), f"{rel} is out of date: run `python docs/gen_reference.py`"


def test_profile_reference_covers_every_schema_field():
    import hwquant

    schema = hwquant.profile_json_schema()
    text = (DOCS / "reference" / "profile-format.md").read_text(encoding="utf-8")
    for model in [schema, *schema["$defs"].values()]:
        for name in model.get("properties", {}):
            if name != "$schema":
                assert f"| `{name}` |" in text, name


def test_builtin_profiles_page_lists_every_builtin_with_its_source():
    import hwquant

    text = (DOCS / "reference" / "builtin-profiles.md").read_text(encoding="utf-8")
    builtins = [i for i in hwquant.list_profiles() if i.plugin == "builtin"]
    assert len(builtins) >= 6
    for info in builtins:
        assert f"## `{info.name}`" in text and info.source in text and f"profiles/{info.name}.toml" in text


def test_hook_reference_documents_every_hookspec():
    from hwquant.plugins import hookspecs

    text = (DOCS / "reference" / "hooks.md").read_text(encoding="utf-8")
    specs = [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "hwquant_spec")]
    assert specs
    for name in specs:
        assert f"### `{name}`" in text


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_nav_has_every_page_the_site_needs():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs: pip install -e '.[docs]'")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # mkdocs' !relative etc.
    config = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    assert config["docs_dir"] == "docs" and config["theme"]["name"] == "material"
    nav = _nav_pages(config["nav"])
    assert set(nav) >= REQUIRED_PAGES, REQUIRED_PAGES - set(nav)
    assert len(nav) == len(set(nav))


def test_readme_links_to_the_documentation():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(r"\]\(docs/[\w/-]+\.md\)", readme), "README.md should link to the documentation (docs/index.md)"


def test_mkdocs_build_strict(tmp_path: Path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed: pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=clean_env(NO_MKDOCS_2_WARNING="1"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    for page in REQUIRED_PAGES:
        folder = page.removesuffix(".md").removesuffix("index").strip("/")  # recipes/index.md -> recipes/
        built = tmp_path / "site" / folder / "index.html"
        assert built.is_file(), f"{page} was not built ({built})"


def test_shlex_safe_commands():
    """Every command on the pages parses as shell (an unbalanced quote would run something else)."""
    for p in pages():
        for b in blocks(p):
            if b.lang in SHELLS:
                for c in b.commands():
                    shlex.split(c.text, comments=True)
