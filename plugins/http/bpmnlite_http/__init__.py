"""HTTP service tasks for bpmnlite, written as any third-party plugin would be.

Installed, it is found through the ``bpmnlite`` entry point group, which
registers :data:`plugin`; it can also be registered explicitly:
``Engine(plugins=[bpmnlite_http.plugin])``. A model selects it with
``bpmnlite:type="http"``.
"""

from __future__ import annotations

from bpmnlite_http.plugin import HttpPlugin, HttpRequestError
from bpmnlite_http.settings import HttpConfigError

__all__ = ["HttpConfigError", "HttpPlugin", "HttpRequestError", "plugin"]

plugin = HttpPlugin()
"""The instance the entry point registers (30 s default timeout, redirects followed)."""
