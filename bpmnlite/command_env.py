"""What the runtime may ask of the engine during one command (runtime.environment's protocol).

Bound to the command's connection, so everything the runtime reads (other
instances of a call activity, queue lengths) is read in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.errors import ExecutionError
from bpmnlite.hookspecs import ScriptLanguage, TaskHandler
from bpmnlite.model import FlowNode
from bpmnlite.runtime.graph import ExecutionGraph
from bpmnlite.runtime.state import Instance, new_id
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

Clock = Callable[[], datetime]


@dataclass
class CommandEnvironment:
    """The runtime's view of the engine during one command (see runtime.environment)."""

    engine: Engine
    conn: Connection
    trusted_scripts: bool
    max_steps: int
    functions: Mapping[str, Callable[..., Any]]
    clock: Clock

    def now(self) -> datetime:
        return self.clock()

    def graph(self, definition_id: str) -> ExecutionGraph:
        return self.engine.deployer.graph(self.conn, definition_id)

    def latest_definition(self, process_key: str) -> tuple[str, ExecutionGraph]:
        info = self.engine.deployer.latest(self.conn, process_key)
        return info.id, self.graph(info.id)

    def load_instance(self, instance_id: str) -> Instance:
        return repository.load_instance(self.conn, instance_id)

    def task_handler(self, node: FlowNode) -> TaskHandler:
        name = self.engine.resolve_task_type(node)
        handler = self.engine.plugins.task_handler(name) if name else None
        if handler is None:
            known = ", ".join(self.engine.plugins.known_task_types()) or "none"
            raise ExecutionError(f"no handler for task type {name!r} (known: {known})", element_id=node.id)
        return handler

    def listener_handler(self, name: str, node: FlowNode) -> TaskHandler:
        type_name = self.engine.resolve_name(name)
        handler = self.engine.plugins.task_handler(type_name)
        if handler is None:
            raise ExecutionError(f"no handler for execution listener {name!r}", element_id=node.id)
        return handler

    def script_language(self, node: FlowNode) -> ScriptLanguage:
        fmt = (node.script_format or "python").lower()
        lang = self.engine.plugins.script_language(fmt)
        if lang is None:
            raise ExecutionError(f"no script language {fmt!r} is registered", element_id=node.id)
        return lang

    def new_instance_id(self) -> str:
        return new_id()

    def report_progress(self, key: str, **fields: Any) -> Any:
        return self.engine.progress_board.report(key, **fields)

    def stop_requested(self, instance_id: str) -> bool:
        return self.engine.stop_requested(instance_id)

    def queued_jobs(self, definition_id: str, element_id: str) -> int:
        if self.conn.dialect.name == "postgresql":
            # commands that queue at the same element take turns until they commit, so the count
            # they see includes each other's jobs (SQLite transactions are serial already)
            key = f"bpmnlite:queue:{definition_id}:{element_id}"
            self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
        query = sa.select(sa.func.count()).select_from(t.jobs).where(
            t.jobs.c.definition_id == definition_id, t.jobs.c.element_id == element_id,
            t.jobs.c.state == "executable",
        )
        return int(self.conn.execute(query).scalar() or 0)

    def has_listeners(self, hook: str) -> bool:
        return self.engine.plugins.has_listeners(hook)
