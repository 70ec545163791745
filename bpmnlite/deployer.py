"""Deploying models: check everything, then store a new version (or nothing).

A file is parsed, validated, and checked against this engine's plugins
(task types, script languages) and expression language before anything is
written; an invalid file deploys nothing. A changed file becomes version n+1
of each process key it contains; an identical redeploy changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite import parser
from bpmnlite.errors import ExpressionError, ModelError, NotFound, Problem
from bpmnlite.expressions import compile_expression
from bpmnlite.jobs.retry import parse_retries
from bpmnlite.model import Definitions, EventKind, FlowNode, NodeKind, Process, TimerKind
from bpmnlite.records import DefinitionInfo, Deployment
from bpmnlite.runtime import io_mapping, timers
from bpmnlite.runtime.effects import Effects, JobKind, JobRecord, SubscriptionKind, SubscriptionRecord
from bpmnlite.runtime.graph import ExecutionGraph, build_graph
from bpmnlite.runtime.listeners import execution_listeners, listener_target
from bpmnlite.runtime.state import new_id
from bpmnlite.store import repository
from bpmnlite.store import tables as t
from bpmnlite.store.writer import driver_query_one
from bpmnlite.validation import validate

if TYPE_CHECKING:
    from bpmnlite.plugins import PluginRegistry

Source = str | bytes | os.PathLike[str]


def read_source(source: Source) -> tuple[bytes, str | None]:
    """The bytes of a model given as a path, XML text or bytes, and a name for messages."""
    if isinstance(source, bytes):
        return source, None
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip("\ufeff \t\r\n").startswith("<")
    ):
        path = Path(source)
        if not path.is_file():
            raise NotFound(f"no such model file: {path}")
        return path.read_bytes(), path.name
    return source.encode("utf-8"), None


def _expression_sites(node: FlowNode) -> Iterator[str]:
    mi = node.multi_instance
    if mi is not None:
        for text in (mi.cardinality, mi.collection, mi.completion_condition):
            if text:
                yield text
    for m in node.call_inputs + node.call_outputs:
        if m.source_expression:
            yield m.source_expression
    if node.call_business_key:
        yield node.call_business_key


def check_for_engine(
    defs: Definitions,
    registry: PluginRegistry,
    resolve_name: Callable[[str], str],
    functions: dict[str, Callable[..., Any]],
    source_name: str | None,
) -> list[Problem]:
    """Problems only this engine can see: expressions, task types, script languages, timers, retries."""
    problems: list[Problem] = []

    def problem(msg: str, node: Any) -> None:
        problems.append(Problem(msg, node.id, node.line, source_name))

    def check_expr(text: str, node: Any) -> None:
        try:
            compile_expression(text, functions=functions)
        except ExpressionError as exc:
            problem(f"invalid expression {text!r}: {exc}", node)

    for proc in defs.processes:
        if proc.is_executable is False:
            continue
        for flow in proc.flows.values():
            if flow.condition:
                check_expr(flow.condition, flow)
        for node in proc.nodes.values():
            for text in _expression_sites(node):
                check_expr(text, node)
            if node.kind in (NodeKind.SERVICE_TASK, NodeKind.BUSINESS_RULE_TASK) or (
                node.kind is NodeKind.SEND_TASK and node.task_type
            ):
                name = resolve_name(node.task_type) if node.task_type else None
                known = ", ".join(registry.known_task_types()) or "none registered"
                if name is None:
                    problem(f"{node.kind.value} has no type (set bpmnlite:type); known types: {known}", node)
                elif registry.task_handler(name) is None:
                    problem(f"no handler for task type {name!r}; known types: {known}", node)
            if node.kind is NodeKind.SCRIPT_TASK and node.script:
                fmt = (node.script_format or "python").lower()
                if registry.script_language(fmt) is None:
                    langs = ", ".join(registry.known_script_languages()) or "none registered"
                    problem(f"no script language {fmt!r} is registered; known: {langs}", node)
            for event in ("start", "end"):
                for ext in execution_listeners(node, event):
                    target = listener_target(ext)
                    if target is None:
                        problem("execution listener needs expression, class or delegateExpression "
                                "(script listeners are not supported)", node)
                    elif target[0] == "expression":
                        check_expr(target[1], node)
                    elif registry.task_handler(resolve_name(target[1])) is None:
                        problem(f"no handler for execution listener {target[1]!r}; map it with class_map "
                                "to a registered task type", node)
            for kind in ("inputParameter", "outputParameter"):
                for param in io_mapping.parameters(node, kind):
                    reason = io_mapping.unsupported(param)
                    if reason:
                        problem(reason, node)
                    for text in io_mapping.expressions_in(param):
                        if text.startswith(("${", "#{")) and text.endswith("}"):
                            check_expr(text, node)
            cfg = node.asynchronous
            try:
                parse_retries(cfg.retries, 3, cfg.retry_backoff)
            except ValueError as exc:
                problem(str(exc), node)
            if cfg.timeout:
                try:
                    timers.parse_duration(cfg.timeout)
                except Exception:  # isodate raises several kinds
                    problem(f"bpmnlite:timeout {cfg.timeout!r} is not an ISO 8601 duration (e.g. PT5M)", node)
            if registry.has_listeners("bpmnlite_check_element"):
                task_type = resolve_name(node.task_type) if node.task_type else None
                for messages in registry.hook.bpmnlite_check_element(element=node, task_type=task_type):
                    for message in [messages] if isinstance(messages, str) else messages or ():
                        problem(str(message), node)
            if node.event is not None and node.event.kind is EventKind.TIMER and node.event.timer is not None:
                spec = node.event.timer
                text = spec.expression.strip()
                if text and not text.startswith(("${", "#{", '"', "'")):
                    try:
                        timers.schedule(spec.kind, text, datetime(2000, 1, 1, tzinfo=UTC))
                    except ExpressionError as exc:
                        problem(str(exc).split(" [expression")[0], node)
                elif text:
                    check_expr(text, node)
    return problems


class Deployer:
    """Deploys files and serves execution graphs of deployed definitions (cached)."""

    def __init__(
        self,
        registry: PluginRegistry,
        resolve_name: Callable[[str], str],
        functions: dict[str, Callable[..., Any]],
    ) -> None:
        self.registry = registry
        self.resolve_name = resolve_name
        self.functions = functions
        self._graphs: dict[str, ExecutionGraph] = {}
        self._parsed: dict[str, Definitions] = {}
        self._lock = threading.Lock()

    def check(self, source: Source, name: str | None = None) -> tuple[Definitions, bytes, str | None]:
        data, source_name = read_source(source)
        source_name = name or source_name
        defs = parser.parse(data, source_name=source_name)
        problems = [p if p.source else Problem(p.message, p.element_id, p.line, source_name) for p in validate(defs)]
        problems += check_for_engine(defs, self.registry, self.resolve_name, self.functions, source_name)
        if problems:
            raise ModelError(problems, f"{source_name or 'model'}: {len(problems)} problem(s); nothing was deployed")
        return defs, data, source_name

    def deploy(self, conn: Connection, source: Source, name: str | None, now: datetime) -> Deployment:
        defs, data, source_name = self.check(source, name)
        checksum = hashlib.sha256(data).hexdigest()
        if not defs.processes:
            raise ModelError([Problem("the file contains no process", None, None, source_name)])
        latest = {
            row.key: row
            for row in conn.execute(
                sa.select(t.definitions)
                .where(t.definitions.c.key.in_([p.id for p in defs.processes]))
                .order_by(t.definitions.c.version)
            )
        }
        if all(p.id in latest and latest[p.id].checksum == checksum for p in defs.processes):
            infos = tuple(_info(latest[p.id]) for p in defs.processes)
            return Deployment(infos[0].deployment_id, infos, changed=False)
        deployment_id = new_id()
        stamp = repository.db_time(now)
        conn.execute(
            t.deployments.insert().values(
                id=deployment_id,
                name=name,
                source_name=source_name,
                checksum=checksum,
                source=data.decode("utf-8", errors="replace"),
                deployed_at=stamp,
            )
        )
        created: list[DefinitionInfo] = []
        effects = Effects()
        for proc in defs.processes:
            version = latest[proc.id].version + 1 if proc.id in latest else 1
            definition_id = new_id()
            executable = proc.is_executable is not False
            conn.execute(
                t.definitions.insert().values(
                    id=definition_id,
                    deployment_id=deployment_id,
                    key=proc.id,
                    version=version,
                    name=proc.name,
                    checksum=checksum,
                    executable=executable,
                    deployed_at=stamp,
                )
            )
            with self._lock:
                self._parsed[deployment_id] = defs
                self._graphs[definition_id] = build_graph(proc)
            created.append(DefinitionInfo(definition_id, proc.id, version, proc.name, executable, deployment_id, now))
            if executable:
                self._replace_start_triggers(conn, proc, definition_id, effects, now)
        repository.write_effects(conn, effects, now, 3)
        return Deployment(deployment_id, tuple(created), changed=True)

    def _replace_start_triggers(
        self, conn: Connection, proc: Process, definition_id: str, effects: Effects, now: datetime
    ) -> None:
        """Message and timer start events of the new version replace the old version's."""
        old = [
            r.id
            for r in conn.execute(
                sa.select(t.definitions.c.id).where(t.definitions.c.key == proc.id, t.definitions.c.id != definition_id)
            )
        ]
        if old:
            conn.execute(
                t.subscriptions.delete().where(
                    t.subscriptions.c.definition_id.in_(old), t.subscriptions.c.instance_id.is_(None)
                )
            )
            conn.execute(
                t.jobs.delete().where(t.jobs.c.definition_id.in_(old), t.jobs.c.kind == JobKind.START_TIMER.value)
            )
        for node in proc.nodes.values():
            if node.kind is not NodeKind.START_EVENT or node.scope_id != proc.id or node.event is None:
                continue
            ev = node.event
            if ev.kind in (EventKind.MESSAGE, EventKind.SIGNAL) and ev.name:
                kind = SubscriptionKind.MESSAGE if ev.kind is EventKind.MESSAGE else SubscriptionKind.SIGNAL
                effects.subscriptions.append(
                    SubscriptionRecord(
                        id=new_id(),
                        kind=kind,
                        name=ev.name,
                        instance_id=None,
                        token_id=None,
                        element_id=node.id,
                        definition_id=definition_id,
                    )
                )
            elif ev.kind is EventKind.TIMER and ev.timer is not None and ev.timer.expression.strip():
                text = ev.timer.expression.strip()
                if text.startswith(("${", "#{", '"', "'")):
                    from bpmnlite.expressions import evaluate

                    text = str(evaluate(text, {}, functions=self.functions))
                sched = timers.schedule(ev.timer.kind, text, now)
                effects.jobs.append(
                    JobRecord(
                        id=new_id(),
                        kind=JobKind.START_TIMER,
                        instance_id=None,
                        token_id=None,
                        element_id=node.id,
                        definition_id=definition_id,
                        due_at=sched.due_at,
                        payload={"timer": timers.to_json(sched), "element": node.id},
                    )
                )

    def graph(self, conn: Connection, definition_id: str) -> ExecutionGraph:
        graph = self._graphs.get(definition_id)
        if graph is not None:
            return graph
        row = conn.execute(
            sa.select(t.definitions.c.key, t.definitions.c.deployment_id).where(t.definitions.c.id == definition_id)
        ).first()
        if row is None:
            raise NotFound(f"no process definition {definition_id!r}")
        defs = self._parsed.get(row.deployment_id)
        if defs is None:
            source = conn.execute(
                sa.select(t.deployments.c.source, t.deployments.c.source_name).where(
                    t.deployments.c.id == row.deployment_id
                )
            ).first()
            assert source is not None
            defs = parser.parse(source.source.encode("utf-8"), source_name=source.source_name)
        graph = build_graph(defs.process(row.key))
        with self._lock:
            self._parsed[row.deployment_id] = defs
            self._graphs[definition_id] = graph
        return graph

    def latest(self, conn: Connection, key: str, version: int | None = None) -> DefinitionInfo:
        if version is None:
            # straight to the driver: start() asks on every call, and always the database (a version
            # deployed by another process counts at once)
            if conn.dialect.name == "sqlite":
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                cursor.execute(_LATEST_SQL.replace("{mark}", "?"), (key,))
                found = cursor.fetchone()
                cursor.close()
            else:  # a start's first statement: it carries the transaction's BEGIN (driver_query_one)
                found = driver_query_one(conn, _LATEST_SQL.replace("{mark}", "%(key)s"), {"key": key}, carry_begin=True)
            if found is not None:
                return _info_from_tuple(found, conn.dialect.name == "sqlite")
            row = None
        else:
            row = conn.execute(_VERSION, {"key": key, "version": version}).first()
        if row is None:
            suffix = f" version {version}" if version is not None else ""
            raise NotFound(f"no deployed process {key!r}{suffix}")
        return _info(row)


# built once: start() looks the latest version up on every call (always from the database,
# so a version deployed by another process is seen at once)
_LATEST = (
    sa.select(t.definitions)
    .where(t.definitions.c.key == sa.bindparam("key"))
    .order_by(t.definitions.c.version.desc())
    .limit(1)
)
_VERSION = sa.select(t.definitions).where(
    t.definitions.c.key == sa.bindparam("key"), t.definitions.c.version == sa.bindparam("version")
)


_LATEST_SQL = (
    "SELECT id, key, version, name, executable, deployment_id, deployed_at FROM bpm_definitions "
    "WHERE key = {mark} ORDER BY version DESC LIMIT 1"
)


def _info_from_tuple(found: tuple[Any, ...], sqlite: bool) -> DefinitionInfo:
    """A definition from ``_LATEST_SQL``'s driver row (SQLite returns times as text, booleans as 0/1)."""
    def_id, key, version, name, executable, deployment_id, deployed_at = found
    if sqlite:
        deployed_at = datetime.fromisoformat(deployed_at)
    return DefinitionInfo(def_id, key, version, name, bool(executable), deployment_id,
                          repository.py_time(deployed_at) or deployed_at)


def _info(row: Any) -> DefinitionInfo:
    return DefinitionInfo(
        row.id,
        row.key,
        row.version,
        row.name,
        row.executable,
        row.deployment_id,
        repository.py_time(row.deployed_at) or datetime.min,
    )


__all__ = ["Deployer", "read_source", "check_for_engine", "TimerKind"]
