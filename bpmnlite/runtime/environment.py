"""What the runtime needs from its host (the engine), as a protocol.

The runtime moves tokens; anything that needs the database, the plugin
registry or the clock comes through this interface, so the runtime can be
driven by the engine in a transaction or by a test with plain objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from bpmnlite.hookspecs import ScriptLanguage, TaskHandler
from bpmnlite.model import FlowNode
from bpmnlite.runtime.graph import ExecutionGraph
from bpmnlite.runtime.state import Instance


class Environment(Protocol):
    trusted_scripts: bool
    max_steps: int
    functions: Mapping[str, Callable[..., Any]]

    def now(self) -> datetime:
        """The current time (an injectable clock)."""
        ...

    def graph(self, definition_id: str) -> ExecutionGraph:
        """The execution graph of a deployed definition."""
        ...

    def latest_definition(self, process_key: str) -> tuple[str, ExecutionGraph]:
        """(definition id, graph) of the latest version of a process key; raises NotFound."""
        ...

    def load_instance(self, instance_id: str) -> Instance:
        """Another instance of the same command (a call activity's parent or child)."""
        ...

    def task_handler(self, node: FlowNode) -> TaskHandler:
        """The handler for a service/send/business rule task; raises when none fits."""
        ...

    def listener_handler(self, name: str, node: FlowNode) -> TaskHandler:
        """The handler for an execution listener's class or delegate expression."""
        ...

    def script_language(self, node: FlowNode) -> ScriptLanguage:
        """The runner for a script task's format; raises when none is registered."""
        ...

    def new_instance_id(self) -> str: ...

    def stop_requested(self, instance_id: str) -> bool:
        """Whether a cancel of this instance is waiting for the running handler."""
        ...

    def report_progress(self, key: str, **fields: Any) -> Any:
        """Write a progress report outside the command's transaction (see ``bpmnlite.progress``)."""
        ...

    def queued_jobs(self, definition_id: str, element_id: str) -> int:
        """Jobs of an element waiting to run (for ``bpmnlite:maxQueue``)."""
        ...
