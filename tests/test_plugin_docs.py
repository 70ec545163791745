"""The plugin guide (``docs/plugins.md``) stays true to ``bpmnlite/hookspecs.py``.

* Every hook (a ``bpmnlite_*`` function of ``bpmnlite.hookspecs`` marked with
  ``@hookspec``) has a heading in the guide's hook reference showing its name
  and its signature as ``inspect.signature`` renders it (parameter names,
  annotations and return type), and its docstring is quoted there word for
  word; its first sentence appears in the guide in any case.
* Every ``bpmnlite_*`` name the guide mentions is a hook, or the package of a
  plugin in ``plugins/`` (``bpmnlite_http``...): a renamed or removed hook
  cannot linger in the text.
* Every ```python block of the guide whose first line is ``# runnable`` runs
  as ``tests/test_docs.py`` runs those of the other pages: in a fresh process
  and a fresh temporary directory, with the repository root in
  ``$BPMNLITE_REPO``; it must exit 0.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bpmnlite import hookspecs

from .test_docs import runnable_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
TEXT = PAGE.read_text(encoding="utf-8")
REFERENCE_HEADING = "## Hook reference"
_SPEC_MARK = hookspecs.hookspec.project_name + "_spec"  # the attribute pluggy's HookspecMarker sets


def _hooks() -> dict[str, Callable[..., Any]]:
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if name.startswith("bpmnlite_") and callable(value) and getattr(value, _SPEC_MARK, None) is not None
    }


HOOKS = _hooks()


def _reference() -> str:
    """The hook reference: from its heading to the next heading of the same level."""
    start = TEXT.find(f"\n{REFERENCE_HEADING}\n")
    assert start >= 0, f"docs/plugins.md has no '{REFERENCE_HEADING}' section"
    following = re.compile(r"^## ", re.MULTILINE).search(TEXT, start + len(REFERENCE_HEADING) + 2)
    return TEXT[start : following.start() if following else len(TEXT)]


def _section(name: str) -> str:
    """The reference entry of one hook: from its heading to the next heading."""
    reference = _reference()
    heading = re.search(rf"^#+ `{name}\(.*$", reference, re.MULTILINE)
    assert heading is not None, f"docs/plugins.md: the hook reference has no heading for {name}"
    following = re.compile(r"^#+ ", re.MULTILINE).search(reference, heading.end())
    return reference[heading.start() : following.start() if following else len(reference)]


def _rendered(fn: Callable[..., Any]) -> str:
    """``name(a: T, b: U) -> R`` as the guide writes it (the module's annotations are strings)."""
    return fn.__name__ + str(inspect.signature(fn)).replace("'", "")


def _split_top_level(params: str) -> list[str]:
    """Split a parameter list at the commas outside brackets (``Mapping[str, Any]`` stays whole)."""
    parts, depth, current = [], 0, ""
    for char in params:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts]


def _documented_parameters(name: str) -> list[list[str]]:
    """Parameter names of every ``name(...)`` written on a heading or a code line of the guide."""
    found = []
    in_code = False
    for line in TEXT.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not (in_code or line.startswith("#")):
            continue
        for match in re.finditer(rf"\b{name}\(([^()]*(?:\([^()]*\)[^()]*)*)\)", line):
            names = [re.split(r"[:=]", p)[0].strip() for p in _split_top_level(match.group(1))]
            found.append([n for n in names if n not in ("*", "/", "self")])
    return found


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z`]|\s*$)", paragraph)
    return match.group(1) if match else paragraph


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def test_hooks_are_found() -> None:
    assert {"bpmnlite_task_types", "bpmnlite_check_element", "bpmnlite_instance_started"} <= set(HOOKS)


def test_every_bpmnlite_function_of_hookspecs_is_a_hookspec() -> None:
    # the registry treats every bpmnlite_* name of the module as a hook, marked or not
    unmarked = sorted(
        name for name, value in vars(hookspecs).items()
        if name.startswith("bpmnlite_") and callable(value) and name not in HOOKS
    )
    assert not unmarked, f"bpmnlite/hookspecs.py: functions without @hookspec: {unmarked}"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_reference_heading_with_its_signature(name: str) -> None:
    heading = _section(name).splitlines()[0]
    expected = _rendered(HOOKS[name])
    assert f"`{expected}`" in heading, f"docs/plugins.md: the heading of {name} should show `{expected}`:\n{heading}"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_parameters_match_wherever_the_guide_writes_a_call(name: str) -> None:
    expected = list(inspect.signature(HOOKS[name]).parameters)
    written = _documented_parameters(name)
    assert written, f"docs/plugins.md: no heading or code line shows {name}(...)"
    assert expected in written, f"docs/plugins.md: no signature of {name} has the parameters {expected}"
    # in the reference every call form must be complete; elsewhere a plugin may take a subset
    for params in _documented_parameters_in(_section(name), name):
        assert params == expected, f"docs/plugins.md: {name}({', '.join(params)}) differs from {expected}"


def _documented_parameters_in(text: str, name: str) -> list[list[str]]:
    out = []
    for match in re.finditer(rf"^#+ `{name}\(([^`]*)\)", text, re.MULTILINE):
        params = match.group(1).rsplit(") ->", 1)[0]
        out.append([re.split(r"[:=]", p)[0].strip() for p in _split_top_level(params)])
    return out


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_first_sentence_of_the_docstring_is_in_the_guide(name: str) -> None:
    doc = inspect.getdoc(HOOKS[name])
    assert doc, f"bpmnlite/hookspecs.py: {name} has no docstring"
    sentence = _first_sentence(doc)
    assert _squeeze(sentence) in _squeeze(TEXT), f"docs/plugins.md does not quote {name}: {sentence!r}"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_reference_quotes_the_whole_docstring(name: str) -> None:
    doc = inspect.getdoc(HOOKS[name])
    assert doc is not None
    assert _squeeze(doc) in _squeeze(_section(name)), (
        f"docs/plugins.md: the reference entry of {name} does not quote its docstring word for word:\n{doc}"
    )


def _plugin_packages() -> set[str]:
    return {path.parent.name for path in ROOT.glob("plugins/*/bpmnlite_*/__init__.py")}


def test_every_bpmnlite_name_in_the_guide_is_a_hook_or_a_plugin_package() -> None:
    mentioned = set(re.findall(r"\bbpmnlite_\w+", TEXT))
    unknown = sorted(mentioned - set(HOOKS) - _plugin_packages())
    assert not unknown, f"docs/plugins.md mentions bpmnlite_* names that are no hook: {unknown}"


def test_every_hook_is_in_the_reference_once() -> None:
    headings = re.findall(r"^### `(bpmnlite_\w+)\(", _reference(), re.MULTILINE)
    assert sorted(headings) == sorted(HOOKS), "the hook reference should have exactly one heading per hook"


# ------------------------------------------------------------------ the example package and links
@pytest.mark.parametrize("path", ["pyproject.toml", "bpmnlite_example_greeter/__init__.py"])
def test_example_package_files_are_shown_as_they_are(path: str) -> None:
    content = (ROOT / "plugins" / "example" / path).read_text(encoding="utf-8").strip()
    shown = [block.strip() for block in re.findall(r"^```\w*\n(.*?)^```$", TEXT, re.DOTALL | re.MULTILINE)]
    assert content in shown, f"docs/plugins.md does not show plugins/example/{path} as it is"


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_point_to_existing_files_and_headings() -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", TEXT):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        page = (PAGE.parent / path).resolve() if path else PAGE
        if not page.exists():
            broken.append(target)
        elif anchor and page.suffix == ".md" and anchor not in _anchors(page.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"docs/plugins.md has broken links: {broken}"


# ------------------------------------------------------------------ runnable examples
BLOCKS = [(line, code) for page, line, code in runnable_blocks() if page == PAGE.name]


def test_runnable_blocks_are_found() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"plugins.md:{n}" for n, _ in BLOCKS])
def test_runnable_block(line: int, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "BPMNLITE_REPO": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("BPMNLITE_DB", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"docs/plugins.md:{line} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
