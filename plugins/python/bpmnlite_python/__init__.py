"""Python function service tasks for bpmnlite, written as any third-party plugin would be.

Installed, it is found through the ``bpmnlite`` entry point group, which
registers :data:`plugin`. That instance allows no module until the
application says which ones it may call::

    import bpmnlite_python
    bpmnlite_python.plugin.allowed_modules = ("myapp.tasks",)

or registers its own: ``Engine(plugins=[PythonTaskPlugin(allowed_modules=("myapp.",))],
load_entry_points=False)``. A model selects it with ``bpmnlite:type="python"``
and names the callable with ``bpmnlite:function="myapp.tasks:charge"``.
"""

from __future__ import annotations

from bpmnlite_python.plugin import PythonTaskPlugin, PythonTaskRefused

__all__ = ["PythonTaskPlugin", "PythonTaskRefused", "plugin"]

plugin = PythonTaskPlugin()
"""The instance the entry point registers; it allows nothing until ``allowed_modules`` is set."""
