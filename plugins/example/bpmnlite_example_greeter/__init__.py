"""A minimal bpmnlite plugin: the task type ``greet`` sets ``greeting = "Hello, <name>!"``.

Installed, it is found through the ``bpmnlite`` entry point group (see
pyproject.toml); this module is the plugin object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bpmnlite import TaskContext, hookimpl

__all__ = ["bpmnlite_task_types", "greet"]


def greet(ctx: TaskContext) -> None:
    """Greet the variable ``name`` (``world`` when there is none)."""
    name = ctx.get("name") or "world"
    ctx.set("greeting", f"Hello, {name}!")


@hookimpl
def bpmnlite_task_types() -> Mapping[str, Any]:
    """Called once when an engine starts: the task types this plugin adds."""
    return {"greet": greet}
