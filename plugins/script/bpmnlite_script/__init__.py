"""Python script tasks for bpmnlite, written as any third-party plugin would be.

Installed, it is found through the ``bpmnlite`` entry point group; it can also
be registered explicitly: ``Engine(plugins=[bpmnlite_script])``. Change the
budgets of every sandboxed run through the shared runner::

    import bpmnlite_script
    bpmnlite_script.python_script.limits = bpmnlite_script.Limits(time=1.0)
"""

from __future__ import annotations

from collections.abc import Mapping

from bpmnlite.hookspecs import ScriptLanguage, hookimpl
from bpmnlite_script.sandbox import DEFAULT_ALLOWED_MODULES, Limits, PythonScript

__all__ = ["DEFAULT_ALLOWED_MODULES", "Limits", "PythonScript", "python_script", "bpmnlite_script_languages"]

python_script = PythonScript()
"""The runner this plugin registers; one per process, so its settings apply to every engine."""


@hookimpl
def bpmnlite_script_languages() -> Mapping[str, ScriptLanguage]:
    """``python`` and the aliases modelers write for it."""
    return {"python": python_script, "python3": python_script, "py": python_script}
