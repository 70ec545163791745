"""The example plugin, built and installed as a separate package beside bpmnlite in a fresh virtual environment.

The engine there is created with its defaults (entry points loaded, no explicit
plugins), so the task type ``greet`` can only come from the installed
package's entry point: this checks the packaging, not just the code.

Both packages are copied to ``tmp_path`` first: pip builds a local project in
place, and building in the repository would leave ``build/`` and
``*.egg-info`` behind in a tree other people are working in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plugins" / "example"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")

RUN = r"""
import importlib.metadata, json, sys
from bpmnlite import Engine

MODEL = '''<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmnlite="http://bpmnlite.org/schema/bpmn" id="d" targetNamespace="x">
  <process id="hello" isExecutable="true">
    <startEvent id="s"/><serviceTask id="greet" bpmnlite:type="greet"/><endEvent id="e"/>
    <sequenceFlow id="f1" sourceRef="s" targetRef="greet"/>
    <sequenceFlow id="f2" sourceRef="greet" targetRef="e"/>
  </process></definitions>'''

engine = Engine(sys.argv[1])
engine.deploy(MODEL)
inst = engine.start("hello", {"name": "Ada"})
import bpmnlite_example_greeter
print(json.dumps({
    "state": inst.state,
    "greeting": inst.variables.get("greeting"),
    "task_types": engine.plugins.known_task_types(),
    "entry_points": {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bpmnlite")},
    "plugin_file": bpmnlite_example_greeter.__file__,
}))
"""


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_clean_env())
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _clean_env() -> dict[str, str]:
    # nothing from this test process may leak in: no PYTHONPATH, no virtual environment
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.mark.timeout(300)
def test_the_example_plugin_installs_beside_bpmnlite_and_is_found_through_its_entry_point(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT / "bpmnlite", source / "bpmnlite" / "bpmnlite", ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / "bpmnlite" / name)
    shutil.copytree(EXAMPLE, source / "example", ignore=IGNORED)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    python = venv / "bin" / "python"
    # one pip command, so the example's dependency "bpmnlite" resolves to the local project
    _run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(source / "bpmnlite"), str(source / "example")],
        tmp_path,
        240,
    )

    done = _run([str(python), "-c", RUN, f"sqlite:///{tmp_path / 'greet.db'}"], tmp_path, 120)

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["greeting"] == "Hello, Ada!"
    assert result["state"] == "completed"
    assert result["task_types"] == ["greet"]
    assert result["entry_points"] == {"greeter": "bpmnlite_example_greeter"}
    assert Path(result["plugin_file"]).is_relative_to(venv)  # the installed copy, not this repository's
