"""Activities: tasks, sub-processes, call activities and multi-instance.

``execute`` is the dispatch from node kind to behaviour; each behaviour either
completes the token at once (``runner.complete``) or puts it in a wait state.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any

from bpmnlite.context import TaskContext
from bpmnlite.errors import BpmnError, ExecutionError, ScriptError
from bpmnlite.expressions import is_truthy_condition
from bpmnlite.model import EventKind, FlowNode, NodeKind, VariableMapping
from bpmnlite.runtime import events, gateways, io_mapping
from bpmnlite.runtime.effects import JobKind, JobRecord, TaskRecord
from bpmnlite.runtime.state import FINAL_STATES, Instance, InstanceState, Phase, Token, Wait, new_id

if TYPE_CHECKING:
    from bpmnlite.runtime.runner import Runner


def execute(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    if node.extensions and io_mapping.has_mapping(node):
        io_mapping.apply_inputs(runner, inst, token, node)
    behaviour = _BEHAVIOURS.get(node.kind)
    if behaviour is None:
        raise ExecutionError(
            f"{node.kind.value} is not supported for execution", element_id=node.id, instance_id=inst.id
        )
    behaviour(runner, inst, token, node)


def _complete(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    runner.complete(inst, token)


def _send(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    if node.task_type:
        _service(runner, inst, token, node)
        return
    if node.event is not None and node.event.name:
        runner.effects.messages.append((node.event.name, inst.business_key, {}, None))
    runner.complete(inst, token)


def _receive(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    events.wait_for_message(runner, inst, token, node, node.event.name if node.event else None)


def _sub_process(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    start_scope(runner, inst, token, node)


# ---------------------------------------------------------------- tasks
def _script(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    if not node.script:
        runner.complete(inst, token)
        return
    language = runner.script_language(node)
    view = inst.view(token)
    try:
        assigned = language.run(node.script, dict(view), trusted=runner.env.trusted_scripts, element_id=node.id)
    except (ScriptError, BpmnError):
        raise
    except Exception as exc:
        raise ScriptError(f"script failed: {type(exc).__name__}: {exc}", element_id=node.id, line=node.line) from exc
    for name, value in assigned.items():
        runner.set_variable(inst, token, name, value, node.id)
    runner.complete(inst, token)


def _user_task(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    task = TaskRecord(
        id=new_id(),
        instance_id=inst.id,
        token_id=token.id,
        element_id=node.id,
        name=node.name,
        definition_id=inst.definition_id,
        created_at=runner.now,
        attributes=dict(node.attributes),
    )
    runner.effects.tasks.append(task)
    token.wait = Wait.USER_TASK
    token.data["task"] = task.id
    runner.mark_rows(token, "t")


def idempotency_key(inst: Instance, token: Token) -> str:
    """Stable for one activity instance: retries of its job see the same key."""
    return f"{inst.id}:{token.activity_id or token.id}"


def _service(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    handler = runner.env.task_handler(node)

    def write(name: str, value: Any) -> None:
        runner.set_variable(inst, token, name, value, node.id)

    ctx = TaskContext(
        element=node,
        instance_id=inst.id,
        business_key=inst.business_key,
        idempotency_key=idempotency_key(inst, token),
        variables=inst.view(token),
        write=write,
        report=runner.env.report_progress,
        stop_requested=lambda: runner.env.stop_requested(inst.id),
    )
    result = handler(ctx)
    # a handler may take seconds (a call to another system): what follows in this command (the
    # task's end, the next elements) happened after it, not at the command's start
    runner.now = runner.env.now()
    if node.result_variable and result is not None:
        write(node.result_variable, result)
    runner.complete(inst, token)


# ---------------------------------------------------------------- scopes
def start_scope(runner: Runner, inst: Instance, token: Token, node: FlowNode, start: FlowNode | None = None) -> None:
    """Enter an embedded (or event) sub-process: a scope token with inner tokens."""
    graph = runner.graph_of(inst)
    token.wait = Wait.SCOPE
    first = start or graph.none_start(node.id)
    if first is None:
        raise ExecutionError("the sub-process has no none start event", element_id=node.id, instance_id=inst.id)
    events.arm_event_subprocesses(runner, inst, token, node.id)
    inner = runner.new_token(inst, first.id, parent_id=token.id)
    runner.enqueue(inst, inner)


def start_process_scope(runner: Runner, inst: Instance, start: FlowNode, *, deferred: bool = False) -> Token:
    """Put the first token of an instance on its start event.

    ``deferred`` parks it there behind a job (as if the start event were
    async), so the instance's first steps run in a transaction of their own.
    """
    graph = runner.graph_of(inst)
    events.arm_event_subprocesses(runner, inst, None, graph.id)
    token = runner.new_token(inst, start.id, parent_id=None)
    if deferred:
        runner.begin_activity(inst, token, start)
        token.wait = Wait.ASYNC_BEFORE
        runner.add_job(inst, token, start, JobKind.ASYNC_BEFORE, due_at=runner.now)
    else:
        runner.enqueue(inst, token)
    return token


# ---------------------------------------------------------------- call activity
def _mapped(
    runner: Runner,
    inst: Instance,
    token: Token | None,
    node: FlowNode,
    mappings: tuple[VariableMapping, ...],
    source: Instance,
    default_all: bool,
) -> dict[str, Any]:
    view = source.view(token) if source is inst else source.variables
    if not mappings:
        return dict(view) if default_all else {}
    out: dict[str, Any] = {}
    for m in mappings:
        if m.all_variables:
            out.update(dict(view))
        elif m.source_expression:
            out[m.target or ""] = runner.evaluate(source, token if source is inst else None, m.source_expression, node)
        elif m.source:
            if m.source in view:
                out[m.target or m.source] = view[m.source]
    return out


def _call(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    from bpmnlite.runtime.events import start_instance

    key = node.called_element or ""
    if key.startswith(("${", "#{")):
        key = str(runner.evaluate(inst, token, key, node))
    definition_id, graph = runner.env.latest_definition(key)
    # Camunda and Flowable pass nothing unless mapped; bpmnlite:background passes all (an input snapshot)
    variables = _mapped(runner, inst, token, node, node.call_inputs, inst, default_all=node.call_background)
    business_key = inst.business_key
    if node.call_business_key:
        value = runner.evaluate(inst, token, node.call_business_key, node)
        business_key = None if value is None else str(value)
    child = start_instance(
        runner,
        definition_id,
        graph,
        variables,
        business_key,
        parent=None if node.call_background else (inst, token),
        deferred=node.call_background,  # fire and forget: the child never runs in the parent's transaction
    )
    if node.call_background:
        # listed under its parent, but the parent does not wait; it may ask for a completion message
        child.parent_instance_id = inst.id
        child.root_instance_id = inst.root_instance_id or inst.id
        child.callback_message = node.attributes.get("bpmnlite:completionMessage")
        token.data["child"] = child.id
        runner.complete(inst, token)
        return
    token.wait = Wait.CALL
    token.data["child"] = child.id
    if child.state in FINAL_STATES:
        return  # the child already told us (it ran to completion in this command)


def child_completed(runner: Runner, child: Instance) -> None:
    """A called instance ended: map its outputs and let the parent go on.

    Inside a job, when the parent is not already part of this command, the
    parent goes on in a job of its own (``call-return``, exclusive on the
    parent): children finishing at the same time then never collide on the
    parent's row, so no child's job is rolled back and replayed with its
    side effects.
    """
    if not child.parent_instance_id or not child.parent_token_id:
        return
    if runner.in_job and child.parent_instance_id not in runner.instances:
        parent_row = runner.env.load_instance(child.parent_instance_id)  # read only: not saved by this command
        waiting = parent_row.tokens.get(child.parent_token_id)
        if waiting is None or waiting.wait is not Wait.CALL:
            return
        runner.effects.jobs.append(JobRecord(
            id=new_id(), kind=JobKind.CALL_RETURN, instance_id=parent_row.id, token_id=waiting.id,
            element_id=waiting.node_id, definition_id=parent_row.definition_id, due_at=runner.now,
            payload={"child": child.id},
        ))
        return
    parent = runner.instance(child.parent_instance_id)
    token = parent.tokens.get(child.parent_token_id)
    if token is None or token.data.get("child") not in (None, child.id):
        return
    return_from_child(runner, parent, token, child)


def return_from_child(runner: Runner, parent: Instance, token: Token, child: Instance) -> None:
    """Map a completed child's outputs into the parent and move the call activity's token on."""
    graph = runner.graph_of(parent)
    node = graph.nodes[token.node_id]
    outputs = _mapped(runner, child, None, node, node.call_outputs, child, default_all=False)
    for name, value in outputs.items():
        runner.set_variable(parent, token, name, value, node.id)
    runner.complete(parent, token)


# ---------------------------------------------------------------- multi-instance
def start_multi_instance(runner: Runner, inst: Instance, body: Token, node: FlowNode) -> None:
    mi = node.multi_instance
    assert mi is not None
    items: list[Any] | None = None
    if mi.collection:
        value = runner.evaluate(inst, body, mi.collection, node)
        if value is None:
            raise ExecutionError(f"multi-instance collection {mi.collection!r} is null", element_id=node.id)
        if isinstance(value, dict):
            value = list(value.items())
        if not isinstance(value, Sized) or isinstance(value, (str, bytes)):
            raise ExecutionError(
                f"multi-instance collection {mi.collection!r} is a {type(value).__name__}, not a list",
                element_id=node.id,
                instance_id=inst.id,
            )
        items = list(value)  # type: ignore[call-overload]
        count = len(items)
    else:
        raw = runner.evaluate(inst, body, mi.cardinality or "0", node)
        try:
            count = int(raw)
        except (TypeError, ValueError):
            raise ExecutionError(f"loop cardinality {raw!r} is not a number", element_id=node.id) from None
    if count < 0:
        raise ExecutionError(f"loop cardinality {count} is negative", element_id=node.id, instance_id=inst.id)
    body.wait = Wait.MULTI_INSTANCE
    body.data["mi"] = {"n": count, "done": 0, "next": 0, "items": items}
    body.local = {"nrOfInstances": count, "nrOfCompletedInstances": 0, "nrOfActiveInstances": 0}
    if count == 0:
        runner.complete(inst, body)
        return
    for _ in range(1 if mi.sequential else count):
        _spawn_inner(runner, inst, body, node)


def _spawn_inner(runner: Runner, inst: Instance, body: Token, node: FlowNode) -> None:
    state = body.data["mi"]
    index = state["next"]
    state["next"] = index + 1
    inner = runner.new_token(inst, node.id, parent_id=body.id, phase=Phase.EXECUTE)
    inner.data["mi_inner"] = 1
    local: dict[str, Any] = {"loopCounter": index}
    mi = node.multi_instance
    assert mi is not None
    if state["items"] is not None and mi.element_variable:
        local[mi.element_variable] = state["items"][index]
    inner.local = local
    assert body.local is not None
    body.local["nrOfActiveInstances"] += 1
    runner.begin_activity(inst, inner, node)
    runner.enqueue(inst, inner)


def complete_multi_instance_inner(runner: Runner, inst: Instance, inner: Token, node: FlowNode) -> None:
    body = inst.tokens.get(inner.parent_id or "")
    if body is None:
        raise ExecutionError("multi-instance body is missing", element_id=node.id, instance_id=inst.id)
    state = body.data["mi"]
    state["done"] += 1
    assert body.local is not None
    body.local["nrOfCompletedInstances"] = state["done"]
    body.local["nrOfActiveInstances"] -= 1
    mi = node.multi_instance
    assert mi is not None
    finished = state["done"] >= state["n"]
    if not finished and mi.completion_condition:
        value = runner.evaluate(inst, inner, mi.completion_condition, node)
        finished = is_truthy_condition(value, expression=mi.completion_condition)
    runner.end_activity(inst, inner)
    runner.clear_rows(inner)
    inst.tokens.pop(inner.id, None)
    if finished:
        runner.cancel_scope(inst, body.id)
        body.local = None
        runner.complete(inst, body)
    elif mi.sequential:
        _spawn_inner(runner, inst, body, node)


_Behaviour = Callable[["Runner", Instance, Token, FlowNode], None]
# node kind -> what a token executing such a node does (one lookup per step instead of a chain of tests)
_BEHAVIOURS: dict[NodeKind, _Behaviour] = {
    NodeKind.TASK: _complete,
    NodeKind.MANUAL_TASK: _complete,
    NodeKind.SCRIPT_TASK: _script,
    NodeKind.USER_TASK: _user_task,
    NodeKind.SERVICE_TASK: _service,
    NodeKind.BUSINESS_RULE_TASK: _service,
    NodeKind.SEND_TASK: _send,
    NodeKind.RECEIVE_TASK: _receive,
    NodeKind.SUB_PROCESS: _sub_process,
    NodeKind.TRANSACTION: _sub_process,
    NodeKind.CALL_ACTIVITY: _call,
    NodeKind.EXCLUSIVE_GATEWAY: gateways.execute_gateway,
    NodeKind.PARALLEL_GATEWAY: gateways.execute_gateway,
    NodeKind.INCLUSIVE_GATEWAY: gateways.execute_gateway,
    NodeKind.EVENT_BASED_GATEWAY: events.arm_event_gateway,
    NodeKind.START_EVENT: _complete,
    NodeKind.BOUNDARY_EVENT: _complete,
    NodeKind.INTERMEDIATE_CATCH_EVENT: events.catch,
    NodeKind.INTERMEDIATE_THROW_EVENT: events.throw,
    NodeKind.END_EVENT: events.end,
}


def is_error_end(node: FlowNode) -> bool:
    return node.kind is NodeKind.END_EVENT and node.event is not None and node.event.kind is EventKind.ERROR


__all__ = ["execute", "start_scope", "start_process_scope", "child_completed", "InstanceState"]
