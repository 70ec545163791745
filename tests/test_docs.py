"""The documentation stays true to the code.

* Every ```python block of ``docs/*.md`` whose first line is ``# runnable``
  runs, in a fresh process and a fresh temporary directory, and must exit 0
  (the blocks check their own results with ``assert``). A block finds the
  repository root in ``$BPMNLITE_REPO``.
* Every name of ``bpmnlite.__all__`` is mentioned in ``docs/api.md``, every
  public ``Engine`` method has an ``engine.<name>`` entry there, and every
  parameter of a method (and of the constructor) is named in its entry.
* Every CLI command has a section in ``docs/cli.md``, the example models
  in ``docs/examples/`` deploy (except ``broken.bpmn``), and the output of
  ``bpmnlite validate`` quoted there is what the command prints.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bpmnlite
from bpmnlite import Engine
from bpmnlite.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = "# runnable"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def runnable_blocks() -> list[tuple[str, int, str]]:
    """(page, line, code) of every runnable Python block in docs/*.md."""
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            code = match.group(1)
            if code.lstrip().startswith(RUNNABLE):
                line = text.count("\n", 0, match.start()) + 1
                blocks.append((page.name, line, code))
    return blocks


BLOCKS = runnable_blocks()


def test_blocks_are_found() -> None:
    pages = {page for page, _line, _code in BLOCKS}
    assert {"index.md", "concepts.md", "elements.md", "expressions.md", "api.md", "cli.md"} <= pages


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS, ids=[f"{p}:{n}" for p, n, _ in BLOCKS])
def test_runnable_block(page: str, line: int, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "BPMNLITE_REPO": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("BPMNLITE_DB", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"docs/{page}:{line} failed:\n{result.stderr[-4000:]}"


# ------------------------------------------------------------------ the API page
API = (DOCS / "api.md").read_text(encoding="utf-8")


def _public_methods() -> list[str]:
    return sorted(name for name, value in vars(Engine).items() if not name.startswith("_") and callable(value))


def _entry(name: str) -> str:
    """The text of the ``engine.<name>`` entry: from its heading to the next heading."""
    heading = re.search(rf"^#+ .*`engine\.{re.escape(name)}\b.*$", API, re.MULTILINE)
    assert heading is not None, f"docs/api.md has no heading for engine.{name}"
    following = re.compile(r"^#+ ", re.MULTILINE).search(API, heading.end())
    return API[heading.start() : following.start() if following else len(API)]


@pytest.mark.parametrize("name", bpmnlite.__all__)
def test_public_name_is_documented(name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", API), f"bpmnlite.{name} is not mentioned in docs/api.md"


@pytest.mark.parametrize("name", _public_methods())
def test_engine_method_is_documented(name: str) -> None:
    entry = _entry(name)
    for param in list(inspect.signature(getattr(Engine, name)).parameters)[1:]:
        assert re.search(rf"\b{param}\b", entry), f"docs/api.md: engine.{name} does not mention {param!r}"


def test_documented_methods_exist() -> None:
    documented = set(re.findall(r"^#+ .*?`engine\.(\w+)", API, re.MULTILINE))
    documented |= set(re.findall(r"^#+ .*? and `engine\.(\w+)", API, re.MULTILINE))
    missing = sorted(name for name in documented if not callable(getattr(Engine, name, None)))
    assert not missing, f"docs/api.md documents Engine methods that do not exist: {missing}"


def test_engine_constructor_is_documented() -> None:
    heading = re.search(r"^### `Engine\((.*)\)`$", API, re.MULTILINE)
    assert heading is not None, "docs/api.md has no `Engine(...)` heading"
    for param in list(inspect.signature(Engine.__init__).parameters)[1:]:
        assert re.search(rf"\b{param}=", heading.group(1)), f"docs/api.md: Engine argument {param!r} is missing"
        assert re.search(rf"^\| `{param}` \|", API, re.MULTILINE), f"docs/api.md: Engine argument {param!r} has no row"


# ------------------------------------------------------------------ the CLI page
def test_every_cli_command_has_a_section() -> None:
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command in subparsers.choices:  # type: ignore[union-attr]
        assert f"`bpmnlite {command}`" in cli, f"docs/cli.md has no section for `bpmnlite {command}`"


def test_example_models_deploy() -> None:
    with Engine("sqlite://") as engine:
        for path in sorted((DOCS / "examples").glob("*.bpmn")):
            if path.name != "broken.bpmn":
                assert engine.deploy(path).changed, path.name


def test_quoted_validate_output_is_real(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    files = ["processes/order.bpmn", "docs/examples/approval.bpmn", "docs/examples/broken.bpmn"]
    assert main(["validate", *files]) == 1
    printed = capsys.readouterr().out.splitlines()
    cli = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert len(printed) >= 3
    for line in printed:
        assert line in cli, f"docs/cli.md does not show this line of `bpmnlite validate`: {line}"
