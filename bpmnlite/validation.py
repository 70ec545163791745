"""Can a parsed model run? Structural checks made before deployment.

The parser refuses documents it cannot read; this module looks at models it
could read and reports what would make an executable process misbehave: dead
ends, ambiguous gateways, elements the engine does not execute, and joins that
can never fire. Expressions are not compiled here: the engine checks them at
deploy time with the expression languages it was configured with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .errors import Problem
from .model import (
    ACTIVITY_KINDS,
    Definitions,
    EventKind,
    FlowNode,
    NodeKind,
    Process,
)

__all__ = ["validate"]

_K = EventKind
_CATCH_TRIGGERS = frozenset({_K.MESSAGE, _K.TIMER, _K.SIGNAL})
# Which event definitions BPMN allows where; anything else is a modeling error.
_ALLOWED: dict[str, frozenset[EventKind]] = {
    "process start": frozenset({_K.NONE, _K.MESSAGE, _K.TIMER, _K.SIGNAL, _K.CONDITIONAL}),
    "sub-process start": frozenset({_K.NONE}),
    "event sub-process start": frozenset(
        {_K.MESSAGE, _K.TIMER, _K.SIGNAL, _K.ERROR, _K.ESCALATION, _K.CONDITIONAL, _K.COMPENSATE}
    ),
    "intermediate catch": frozenset({_K.MESSAGE, _K.TIMER, _K.SIGNAL, _K.LINK, _K.CONDITIONAL}),
    "intermediate throw": frozenset({_K.NONE, _K.MESSAGE, _K.SIGNAL, _K.ESCALATION, _K.LINK, _K.COMPENSATE}),
    "boundary": frozenset(
        {_K.MESSAGE, _K.TIMER, _K.SIGNAL, _K.ERROR, _K.ESCALATION, _K.CONDITIONAL, _K.COMPENSATE, _K.CANCEL}
    ),
    "end": frozenset({_K.NONE, _K.MESSAGE, _K.SIGNAL, _K.ERROR, _K.ESCALATION, _K.TERMINATE, _K.COMPENSATE, _K.CANCEL}),
}
_UNSUPPORTED_EVENTS = {
    _K.CONDITIONAL: "conditional event",
    _K.COMPENSATE: "compensation event",
    _K.CANCEL: "cancel event",
}
_UNSUPPORTED_NODES = {
    NodeKind.COMPLEX_GATEWAY: "complex gateway",
    NodeKind.TRANSACTION: "transaction",
    NodeKind.AD_HOC_SUB_PROCESS: "ad-hoc sub-process",
}
_EMBEDDED_SCOPES = frozenset({NodeKind.SUB_PROCESS, NodeKind.TRANSACTION, NodeKind.AD_HOC_SUB_PROCESS})


def validate(definitions: Definitions) -> list[Problem]:
    """Return every problem that keeps an executable process of ``definitions`` from running.

    Processes marked ``isExecutable="false"`` are skipped: they are documentation
    until someone tries to start them, and the engine refuses that. An empty
    list means the structure is sound; expressions are not checked here.
    """
    problems: list[Problem] = []
    for process in definitions.processes:
        if process.is_executable is not False:
            problems.extend(_ProcessCheck(process, definitions.source_name).run())
    return problems


class _ProcessCheck:
    """All checks of one process; nodes are visited in document order."""

    def __init__(self, process: Process, source: str | None) -> None:
        self.process = process
        self.nodes = process.nodes
        self.source = source
        self.problems: list[Problem] = []
        self.members: dict[str, list[FlowNode]] = {process.id: []}
        self.link_catches: set[tuple[str, str]] = set()
        for node in self.nodes.values():
            self.members.setdefault(node.scope_id, []).append(node)
            if node.kind in _EMBEDDED_SCOPES:
                self.members.setdefault(node.id, [])
            if node.kind is NodeKind.INTERMEDIATE_CATCH_EVENT and node.event and node.event.kind is _K.LINK:
                self.link_catches.add((node.scope_id, node.event.name or ""))

    def report(self, message: str, element_id: str | None, line: int | None) -> None:
        self.problems.append(Problem(message, element_id, line or None, self.source))

    def run(self) -> list[Problem]:
        for scope_id in self.members:
            self._check_scope_start(scope_id)
        for node in self.nodes.values():
            self._check_node(node)
        self._check_flows()
        for scope_id, members in self.members.items():
            self._check_parallel_joins(scope_id, members)
        return self.problems

    # --- scopes --------------------------------------------------------

    def _scope_node(self, scope_id: str) -> FlowNode | None:
        return self.nodes.get(scope_id) if scope_id != self.process.id else None

    def _check_scope_start(self, scope_id: str) -> None:
        members = self.members[scope_id]
        scope = self._scope_node(scope_id)
        starts = [n for n in members if n.kind is NodeKind.START_EVENT]
        if scope is not None and scope.triggered_by_event:
            if len(starts) != 1:
                self.report(
                    f"event sub-process '{scope_id}' must have exactly one start event, it has {len(starts)}",
                    scope_id,
                    scope.line,
                )
            if scope.incoming or scope.outgoing:
                self.report(f"event sub-process '{scope_id}' cannot have sequence flows", scope_id, scope.line)
            return
        if not members or (scope is not None and scope.kind in _UNSUPPORTED_NODES):
            return
        triggers = (_K.NONE,) if scope is not None else (_K.NONE, _K.MESSAGE, _K.TIMER, _K.SIGNAL)
        if not any(_event_kind(n) in triggers for n in starts):
            if scope is None:
                self.report(
                    f"process '{scope_id}' has no none, message, timer or signal start event",
                    scope_id,
                    self.process.line,
                )
            else:
                self.report(f"sub-process '{scope_id}' has no none start event", scope_id, scope.line)

    # --- nodes ---------------------------------------------------------

    def _check_node(self, node: FlowNode) -> None:
        kind, nid, line = node.kind, node.id, node.line
        if kind in _UNSUPPORTED_NODES:
            self.report(f"not supported for execution: {_UNSUPPORTED_NODES[kind]} '{nid}'", nid, line)
        if node.attributes.get("bpmn:standardLoop") == "true":
            self.report(
                f"not supported for execution: standard loop on '{nid}' (use multi-instance instead)", nid, line
            )
        if node.event is not None and kind.value.endswith("Event"):
            self._check_event(node)
        self._check_incoming(node)
        if kind is NodeKind.CALL_ACTIVITY and not node.called_element:
            self.report(f"call activity '{nid}' has no calledElement", nid, line)
        mi = node.multi_instance
        if mi is not None and not mi.cardinality and not mi.collection:
            self.report(f"multi-instance '{nid}' has neither a loopCardinality nor a collection", nid, line)
        if kind in (NodeKind.EXCLUSIVE_GATEWAY, NodeKind.INCLUSIVE_GATEWAY) and len(node.outgoing) > 1:
            for flow_id in node.outgoing:
                flow = self.process.flows[flow_id]
                if flow_id != node.default_flow and flow.condition is None:
                    self.report(
                        f"{_label(kind)} '{nid}': outgoing flow '{flow_id}' has no condition and is not the default flow",
                        flow_id,
                        flow.line,
                    )
        if kind is NodeKind.EVENT_BASED_GATEWAY:
            self._check_event_gateway(node)
        if kind is NodeKind.BOUNDARY_EVENT:
            self._check_attachment(node)

    def _check_incoming(self, node: FlowNode) -> None:
        kind = node.kind
        if kind in (NodeKind.START_EVENT, NodeKind.BOUNDARY_EVENT):
            if node.incoming:
                self.report(f"{_label(kind)} '{node.id}' cannot have an incoming sequence flow", node.id, node.line)
            return
        if node.incoming or node.triggered_by_event or node.attributes.get("bpmn:isForCompensation") == "true":
            return
        scope = self._scope_node(node.scope_id)
        if scope is not None and scope.kind is NodeKind.AD_HOC_SUB_PROCESS:
            return  # activities of an ad-hoc sub-process have no flows by design
        if node.event is not None and node.event.kind is _K.LINK and kind is NodeKind.INTERMEDIATE_CATCH_EVENT:
            if self._has_link_throw(node):
                return
        self.report("unreachable: no incoming sequence flow", node.id, node.line)

    def _has_link_throw(self, catch: FlowNode) -> bool:
        name = catch.event.name if catch.event else None
        return any(
            n.kind is NodeKind.INTERMEDIATE_THROW_EVENT
            and n.event is not None
            and n.event.kind is _K.LINK
            and n.event.name == name
            for n in self.members[catch.scope_id]
        )

    def _event_position(self, node: FlowNode) -> str:
        if node.kind is NodeKind.START_EVENT:
            scope = self._scope_node(node.scope_id)
            if scope is None:
                return "process start"
            return "event sub-process start" if scope.triggered_by_event else "sub-process start"
        return {
            NodeKind.INTERMEDIATE_CATCH_EVENT: "intermediate catch",
            NodeKind.INTERMEDIATE_THROW_EVENT: "intermediate throw",
            NodeKind.BOUNDARY_EVENT: "boundary",
        }.get(node.kind, "end")

    def _check_event(self, node: FlowNode) -> None:
        assert node.event is not None
        event, nid, line = node.event, node.id, node.line
        position = self._event_position(node)
        if event.kind not in _ALLOWED[position]:
            what = (
                "has no event definition" if event.kind is _K.NONE else f"cannot have a {event.kind.value} definition"
            )
            self.report(f"{position} event '{nid}' {what}", nid, line)
        if event.kind in _UNSUPPORTED_EVENTS:
            self.report(f"not supported for execution: {_UNSUPPORTED_EVENTS[event.kind]} '{nid}'", nid, line)
        if several := node.attributes.get("bpmn:eventDefinitions"):
            self.report(
                f"not supported for execution: event '{nid}' has several event definitions ({several}); "
                "only the first would be used",
                nid,
                line,
            )
        if event.timer is not None and not event.timer.expression:
            self.report(f"timer event '{nid}' has an empty {event.timer.kind.value}", nid, line)
        catching = node.kind is not NodeKind.INTERMEDIATE_THROW_EVENT and node.kind is not NodeKind.END_EVENT
        if catching and event.kind in (_K.MESSAGE, _K.SIGNAL) and not event.name:
            self.report(f"{event.kind.value} event '{nid}' names no {event.kind.value} to wait for", nid, line)
        if node.kind is NodeKind.INTERMEDIATE_THROW_EVENT and event.kind is _K.LINK:
            if (node.scope_id, event.name or "") not in self.link_catches:
                self.report(
                    f"not supported for execution: link event '{nid}' has no matching catch event "
                    f"named {event.name!r} in its scope",
                    nid,
                    line,
                )
        if position == "event sub-process start" and event.kind is _K.ERROR and not node.is_interrupting:
            self.report(f"error start event '{nid}' of an event sub-process must be interrupting", nid, line)
        if node.kind is NodeKind.BOUNDARY_EVENT and event.kind in (_K.ERROR, _K.CANCEL) and not node.cancel_activity:
            self.report(f"{event.kind.value} boundary event '{nid}' must be interrupting", nid, line)

    def _check_event_gateway(self, gateway: FlowNode) -> None:
        for flow_id in gateway.outgoing:
            target = self.nodes.get(self.process.flows[flow_id].target)
            if target is None:
                continue
            ok = target.kind is NodeKind.RECEIVE_TASK or (
                target.kind is NodeKind.INTERMEDIATE_CATCH_EVENT and _event_kind(target) in _CATCH_TRIGGERS
            )
            if not ok:
                self.report(
                    f"event-based gateway '{gateway.id}': target '{target.id}' of flow '{flow_id}' must be a "
                    "message, timer or signal intermediate catch event or a receive task",
                    gateway.id,
                    gateway.line,
                )

    def _check_attachment(self, boundary: FlowNode) -> None:
        host = self.nodes.get(boundary.attached_to or "")
        if host is None:
            self.report(f"boundary event '{boundary.id}' is attached to no element", boundary.id, boundary.line)
        elif host.kind not in ACTIVITY_KINDS:
            self.report(
                f"boundary event '{boundary.id}' is attached to '{host.id}', which is not an activity",
                boundary.id,
                boundary.line,
            )
        elif host.scope_id != boundary.scope_id:
            self.report(
                f"boundary event '{boundary.id}' is not in the same scope as '{host.id}'", boundary.id, boundary.line
            )

    # --- flows ---------------------------------------------------------

    def _check_flows(self) -> None:
        for flow in self.process.flows.values():
            source, target = self.nodes.get(flow.source), self.nodes.get(flow.target)
            if source is None or target is None:
                continue
            if source.scope_id != flow.scope_id or target.scope_id != flow.scope_id:
                self.report(
                    f"sequence flow '{flow.id}' crosses a scope boundary: '{source.id}' is in '{source.scope_id}', "
                    f"'{target.id}' is in '{target.scope_id}'",
                    flow.id,
                    flow.line,
                )

    def _check_parallel_joins(self, scope_id: str, members: list[FlowNode]) -> None:
        """Report joins that wait for a flow which only a token passing the join can feed.

        By the BPMN rule a parallel join fires once every incoming flow holds a
        token. If a flow can only be reached through the join itself (a
        loop-back), the first token waits forever.
        """
        joins = [n for n in members if n.kind is NodeKind.PARALLEL_GATEWAY and len(n.incoming) >= 2]
        if not joins:
            return
        entries = [n.id for n in members if n.kind is NodeKind.START_EVENT]
        successors = self._successors(members)
        reachable = _reach(entries, successors, blocked=None)
        for join in joins:
            without = _reach(entries, successors, blocked=join.id)
            for flow_id in join.incoming:
                source = self.process.flows[flow_id].source
                if source in reachable and source not in without:
                    self.report(
                        f"parallel gateway '{join.id}' joins the loop-back flow '{flow_id}': by the BPMN rule it "
                        "waits for a token on every incoming flow, so the first token would wait forever; "
                        "merge the loop with an exclusive gateway before it",
                        join.id,
                        join.line,
                    )

    def _successors(self, members: list[FlowNode]) -> dict[str, list[str]]:
        """Token moves inside one scope: flows, activity -> its boundary events, link throw -> catch."""
        succ: dict[str, list[str]] = {n.id: [self.process.flows[f].target for f in n.outgoing] for n in members}
        catches: dict[str, list[str]] = {}
        for n in members:
            if n.kind is NodeKind.BOUNDARY_EVENT and n.attached_to in succ:
                succ[n.attached_to].append(n.id)
            if n.kind is NodeKind.INTERMEDIATE_CATCH_EVENT and n.event is not None and n.event.kind is _K.LINK:
                catches.setdefault(n.event.name or "", []).append(n.id)
        for n in members:
            if n.kind is NodeKind.INTERMEDIATE_THROW_EVENT and _event_kind(n) is _K.LINK and n.event is not None:
                succ[n.id].extend(catches.get(n.event.name or "", ()))
        return succ


def _reach(entries: Iterable[str], successors: dict[str, list[str]], blocked: str | None) -> set[str]:
    seen = {e for e in entries if e != blocked}
    queue = deque(seen)
    while queue:
        for nxt in successors.get(queue.popleft(), ()):
            if nxt != blocked and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _event_kind(node: FlowNode) -> EventKind:
    return node.event.kind if node.event is not None else EventKind.NONE


def _label(kind: NodeKind) -> str:
    """``exclusiveGateway`` -> ``exclusive gateway``."""
    out = []
    for ch in kind.value:
        out.append(f" {ch.lower()}" if ch.isupper() else ch)
    return "".join(out)
