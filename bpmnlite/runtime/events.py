"""Events: starting instances, waiting for and delivering triggers, throwing.

A waiting event is a row owned by a token: a message or signal subscription,
or a timer job. Delivering a trigger names the owning token and the catching
element; this module decides what moves: the catch event itself, a boundary
event (cancelling its activity when interrupting), an event sub-process
(cancelling its scope when interrupting) or the chosen branch of an
event-based gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bpmnlite.errors import ExecutionError
from bpmnlite.model import ACTIVITY_KINDS, EventKind, FlowNode, NodeKind, TimerKind
from bpmnlite.runtime import timers
from bpmnlite.runtime.effects import JobKind, SubscriptionKind, SubscriptionRecord
from bpmnlite.runtime.graph import ExecutionGraph
from bpmnlite.runtime.state import Instance, InstanceState, Phase, Token, Wait, new_id

if TYPE_CHECKING:
    from bpmnlite.runtime.runner import Runner


# ---------------------------------------------------------------- starting
def start_instance(
    runner: Runner,
    definition_id: str,
    graph: ExecutionGraph,
    variables: dict[str, Any],
    business_key: str | None,
    *,
    start: FlowNode | None = None,
    parent: tuple[Instance, Token] | None = None,
    instance_id: str | None = None,
    deferred: bool = False,
) -> Instance:
    """Create an instance and queue its first token on ``start`` (the none start by default)."""
    from bpmnlite.runtime.activities import start_process_scope

    if graph.process.is_executable is False:
        raise ExecutionError(
            f'process {graph.id!r} is not executable (isExecutable="false"); it can be deployed and drawn, not run',
            element_id=graph.id,
        )
    first = start or graph.none_start(graph.id)
    if first is None:
        raise ExecutionError(
            f"process {graph.id!r} has no none start event; start it by message or signal instead",
            element_id=graph.id,
        )
    inst = Instance(
        id=instance_id or runner.env.new_instance_id(),
        definition_id=definition_id,
        process_key=graph.id,
        business_key=business_key,
        variables={},
        is_new=True,
    )
    if parent is not None:
        parent_inst, parent_token = parent
        inst.parent_instance_id = parent_inst.id
        inst.parent_token_id = parent_token.id
        inst.root_instance_id = parent_inst.root_instance_id or parent_inst.id
    runner.graphs.setdefault(definition_id, graph)
    runner.adopt(inst)
    runner.set_variables(inst, None, variables, first.id)
    runner.effects.events.append(
        ("bpmnlite_instance_started", {"instance_id": inst.id, "process_key": inst.process_key, "variables": variables})
    )
    start_process_scope(runner, inst, first, deferred=deferred)
    return inst


# ---------------------------------------------------------------- arming
def _subscribe(
    runner: Runner, inst: Instance, owner: Token | None, element: FlowNode, kind: SubscriptionKind, name: str
) -> None:
    runner.effects.subscriptions.append(
        SubscriptionRecord(
            id=new_id(),
            kind=kind,
            name=name,
            instance_id=inst.id,
            token_id=owner.id if owner else inst.id,
            element_id=element.id,
            definition_id=inst.definition_id,
            business_key=inst.business_key,
        )
    )
    if owner is not None:
        runner.mark_rows(owner, "s")


def _timer_text(runner: Runner, inst: Instance, token: Token | None, node: FlowNode) -> tuple[TimerKind, str]:
    assert node.event is not None and node.event.timer is not None
    spec = node.event.timer
    text = spec.expression.strip()
    if not text:
        raise ExecutionError(f"the timer has an empty {spec.kind.value}", element_id=node.id, instance_id=inst.id)
    if text.startswith(("${", "#{", '"', "'")):
        value = runner.evaluate(inst, token, text, node)
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return spec.kind, text


def arm_timer(runner: Runner, inst: Instance, owner: Token | None, element: FlowNode) -> None:
    kind, text = _timer_text(runner, inst, owner, element)
    try:
        sched = timers.schedule(kind, text, runner.now)
    except Exception as exc:
        raise ExecutionError(str(exc), element_id=element.id, instance_id=inst.id) from None
    job = runner.add_job(
        inst,
        owner,
        element,
        JobKind.TIMER,
        due_at=sched.due_at,
        payload={"timer": timers.to_json(sched), "element": element.id},
    )
    job.token_id = owner.id if owner else inst.id


def arm_trigger(runner: Runner, inst: Instance, owner: Token | None, element: FlowNode) -> None:
    """Make ``element`` (a catching event) wait for its trigger, owned by ``owner``."""
    event = element.event
    if event is None:
        return
    if event.kind is EventKind.MESSAGE:
        _subscribe(runner, inst, owner, element, SubscriptionKind.MESSAGE, event.name or element.id)
    elif event.kind is EventKind.SIGNAL:
        _subscribe(runner, inst, owner, element, SubscriptionKind.SIGNAL, event.name or element.id)
    elif event.kind is EventKind.TIMER:
        arm_timer(runner, inst, owner, element)


def arm_boundaries(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    for boundary in runner.graph_of(inst).boundaries.get(node.id, ()):
        arm_trigger(runner, inst, token, boundary)


def arm_event_subprocesses(runner: Runner, inst: Instance, scope: Token | None, scope_id: str) -> None:
    graph = runner.graph_of(inst)
    for esp in graph.event_subprocesses.get(scope_id, ()):
        start = graph.event_subprocess_start.get(esp.id)
        if start is not None:
            arm_trigger(runner, inst, scope, start)


def wait_for_message(runner: Runner, inst: Instance, token: Token, node: FlowNode, name: str | None) -> None:
    token.wait = Wait.RECEIVE
    _subscribe(runner, inst, token, node, SubscriptionKind.MESSAGE, name or node.id)


def catch(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    event = node.event
    if event is None or event.kind in (EventKind.NONE, EventKind.LINK):
        runner.complete(inst, token)
        return
    waits = {EventKind.MESSAGE: Wait.RECEIVE, EventKind.SIGNAL: Wait.SIGNAL, EventKind.TIMER: Wait.TIMER}
    if event.kind not in waits:
        raise ExecutionError(f"{event.kind.value} catch events are not supported", element_id=node.id)
    token.wait = waits[event.kind]
    arm_trigger(runner, inst, token, node)


def arm_event_gateway(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    graph = runner.graph_of(inst)
    token.wait = Wait.EVENT_GATEWAY
    for flow_id in node.outgoing:
        target = graph.nodes[graph.flows[flow_id].target]
        if target.kind is NodeKind.RECEIVE_TASK:
            _subscribe(
                runner,
                inst,
                token,
                target,
                SubscriptionKind.MESSAGE,
                target.event.name if target.event and target.event.name else target.id,
            )
        else:
            arm_trigger(runner, inst, token, target)


# ---------------------------------------------------------------- throwing
def throw(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    event = node.event
    if event is not None:
        if event.kind is EventKind.SIGNAL and event.name:
            runner.effects.signals.append((event.name, {}))
        elif event.kind is EventKind.MESSAGE and event.name:
            runner.effects.messages.append((event.name, inst.business_key, {}, None))
        elif event.kind is EventKind.ESCALATION:
            if route_thrown(runner, inst, token, EventKind.ESCALATION, event.name, None, thrower_continues=True):
                if inst.tokens.get(token.id) is not token:
                    return
        elif event.kind is EventKind.LINK and event.name:
            target = _link_target(runner.graph_of(inst), node, event.name)
            runner.end_activity(inst, token)
            token.node_id = target.id
            token.phase = Phase.ARRIVE
            runner.enqueue(inst, token)
            return
    runner.complete(inst, token)


def _link_target(graph: ExecutionGraph, node: FlowNode, name: str) -> FlowNode:
    for other in graph.nodes.values():
        if (
            other.kind is NodeKind.INTERMEDIATE_CATCH_EVENT
            and other.scope_id == node.scope_id
            and other.event is not None
            and other.event.kind is EventKind.LINK
            and other.event.name == name
        ):
            return other
    raise ExecutionError(f"no link catch event named {name!r}", element_id=node.id)


def end(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    event = node.event
    kind = event.kind if event else EventKind.NONE
    if kind is EventKind.ERROR:
        assert event is not None
        runner.end_activity(inst, token)
        runner.throw_error(inst, token, event.name or "", None, None)
        return
    if kind is EventKind.TERMINATE:
        runner.end_activity(inst, token)
        scope = token.parent_id
        runner.cancel_scope(inst, scope, keep=[token.id])
        inst.tokens.pop(token.id, None)
        if scope is None:
            runner.finish_instance(inst, InstanceState.COMPLETED)
        else:
            runner.scope_maybe_done(inst, scope)
        return
    if kind in (EventKind.SIGNAL, EventKind.MESSAGE, EventKind.ESCALATION):
        throw(runner, inst, token, node)
        return
    runner.complete(inst, token)


# ---------------------------------------------------------------- routing errors and escalations
def _matches(candidate: FlowNode, kind: EventKind, code: str | None) -> bool:
    ev = candidate.event
    if ev is None or ev.kind is not kind:
        return False
    return ev.name is None or ev.name == "" or ev.name == code


def route_thrown(
    runner: Runner,
    inst: Instance,
    token: Token,
    kind: EventKind,
    code: str | None,
    variables: dict[str, Any] | None,
    *,
    thrower_continues: bool = False,
) -> bool:
    """Find the nearest boundary event or event sub-process catching ``kind``/``code``.

    Specific catchers win over catch-all ones at the same level. Returns False
    when nothing in this instance catches it.
    """
    graph = runner.graph_of(inst)
    current: Token | None = token
    while current is not None:
        node = graph.nodes[current.node_id]
        if (
            node.kind in ACTIVITY_KINDS
            and not current.data.get("mi_inner")
            and (current is not token or node.kind in ACTIVITY_KINDS)
        ):
            boundary = _best(graph.boundaries.get(node.id, ()), kind, code)
            if boundary is not None:
                _fire_boundary(runner, inst, current, boundary, variables, code)
                return True
        parent = inst.tokens.get(current.parent_id) if current.parent_id else None
        if parent is None or parent.wait is Wait.SCOPE:
            scope_id = parent.node_id if parent is not None else graph.id
            starts = [
                graph.event_subprocess_start[e.id]
                for e in graph.event_subprocesses.get(scope_id, ())
                if e.id in graph.event_subprocess_start
            ]
            start = _best(starts, kind, code)
            if start is not None:
                trigger_event_subprocess(runner, inst, parent, start, variables, code)
                return True
        current = parent
    return False


def _best(candidates: Any, kind: EventKind, code: str | None) -> FlowNode | None:
    fallback = None
    for c in candidates:
        if _matches(c, kind, code):
            assert c.event is not None
            if c.event.name:
                return c  # type: ignore[no-any-return]
            fallback = fallback or c
    return fallback  # type: ignore[no-any-return]


def _error_variables(node: FlowNode, code: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    code_var = node.attributes.get("camunda:errorCodeVariable") or node.attributes.get("bpmnlite:errorCodeVariable")
    if code_var and code is not None:
        out[code_var] = code
    return out


def _fire_boundary(
    runner: Runner,
    inst: Instance,
    activity: Token,
    boundary: FlowNode,
    variables: dict[str, Any] | None,
    code: str | None = None,
) -> None:
    """Move a new token out of ``boundary``; cancel the activity when interrupting."""
    parent = activity.parent_id
    if boundary.cancel_activity:
        runner.cancel_token(inst, activity)
    token = runner.new_token(inst, boundary.id, parent_id=parent, phase=Phase.EXECUTE)
    runner.begin_activity(inst, token, boundary)
    runner.set_variables(inst, token, {**_error_variables(boundary, code), **(variables or {})}, boundary.id)
    runner.complete(inst, token)


def trigger_event_subprocess(
    runner: Runner,
    inst: Instance,
    scope: Token | None,
    start: FlowNode,
    variables: dict[str, Any] | None,
    code: str | None = None,
) -> None:
    """Start an event sub-process inside ``scope`` (None: the process scope)."""

    graph = runner.graph_of(inst)
    esp = graph.nodes[start.scope_id]
    scope_id = scope.id if scope else None
    if start.is_interrupting:
        runner.cancel_scope(inst, scope_id)
        # the other event sub-processes of the scope stop listening
        runner.forget_rows(scope.id if scope else inst.id)
    token = runner.new_token(inst, esp.id, parent_id=scope_id, phase=Phase.EXECUTE)
    runner.begin_activity(inst, token, esp)
    token.wait = Wait.SCOPE
    inner = runner.new_token(inst, start.id, parent_id=token.id, phase=Phase.EXECUTE)
    runner.begin_activity(inst, inner, start)
    arm_event_subprocesses(runner, inst, token, esp.id)
    runner.set_variables(inst, inner, {**_error_variables(start, code), **(variables or {})}, start.id)
    runner.complete(inst, inner)


# ---------------------------------------------------------------- delivering triggers
def deliver(runner: Runner, inst: Instance, owner_id: str, element_id: str, variables: dict[str, Any] | None) -> None:
    """A message, signal or timer for ``element_id`` arrived; move whatever waited for it.

    ``owner_id`` is the token that owns the subscription (or the instance id for
    the process scope's event sub-processes).
    """
    graph = runner.graph_of(inst)
    element = graph.nodes[element_id]
    owner = inst.tokens.get(owner_id)
    if owner is None and owner_id != inst.id:
        raise ExecutionError("the waiting token is gone", element_id=element_id, instance_id=inst.id)
    if element.kind is NodeKind.BOUNDARY_EVENT:
        assert owner is not None
        _fire_boundary(runner, inst, owner, element, variables)
        return
    if (
        element.kind is NodeKind.START_EVENT
        and graph.nodes.get(element.scope_id) is not None
        and graph.nodes[element.scope_id].triggered_by_event
    ):
        trigger_event_subprocess(runner, inst, owner, element, variables)
        return
    assert owner is not None
    if owner.wait is Wait.EVENT_GATEWAY:
        # the first event wins; the others' subscriptions and timers go with the gateway's rows
        runner.end_activity(inst, owner)
        runner.clear_rows(owner)
        owner.node_id = element.id
        owner.data.clear()
        owner.wait = Wait.NONE
        runner.begin_activity(inst, owner, element)
        runner.set_variables(inst, owner, variables, element.id)
        if element.kind is NodeKind.RECEIVE_TASK:
            owner.phase = Phase.LEAVE
        runner.complete(inst, owner)
        return
    runner.set_variables(inst, owner, variables, element.id)
    runner.clear_rows(owner)
    runner.complete(inst, owner)


def is_cycle_reusable(element: FlowNode) -> bool:
    """Whether a fired timer keeps its owner waiting (non-interrupting boundary or event sub-process)."""
    if element.kind is NodeKind.BOUNDARY_EVENT:
        return not element.cancel_activity
    return element.kind is NodeKind.START_EVENT and not element.is_interrupting
