"""Task types of bpmnlite's example processes, one module per seed tutorial.

Each module defines ``TASK_TYPES``, a mapping of task type names (prefixed by
the example's name) to handlers; this module registers them all.
"""

from __future__ import annotations

from typing import Any

from bpmnlite import hookimpl

from . import api_later, contracts, pizza, publish, welcome

MODULES = (welcome, pizza, publish, api_later, contracts)


@hookimpl
def bpmnlite_task_types() -> dict[str, Any]:
    table: dict[str, Any] = {}
    for module in MODULES:
        table.update(module.TASK_TYPES)
    return table
