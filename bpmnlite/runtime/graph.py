"""The execution graph: a process plus every lookup the runtime needs, precomputed.

Built once per deployed definition and shared by all its instances. Every
question the runtime asks while moving a token (what starts this scope, which
boundary events sit on this activity, can this token still reach that join)
is a dict lookup here, so the cost of one step does not grow with the size of
the model or the number of tokens.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bpmnlite.model import EventKind, FlowNode, NodeKind, Process, SequenceFlow


@dataclass(frozen=True, slots=True)
class ExecutionGraph:
    process: Process
    nodes: dict[str, FlowNode]
    flows: dict[str, SequenceFlow]
    # scope id (process id or sub-process id) -> none/timer/message/signal start events (not event sub-process starts)
    starts: dict[str, tuple[FlowNode, ...]]
    # scope id -> event sub-processes directly inside it
    event_subprocesses: dict[str, tuple[FlowNode, ...]]
    # event sub-process id -> its start event
    event_subprocess_start: dict[str, FlowNode]
    # activity id -> boundary events attached to it
    boundaries: dict[str, tuple[FlowNode, ...]]
    # inclusive join id -> incoming flow id -> node ids from which that flow can be reached
    inclusive_reach: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    # scope id -> parent scope id (None for the process)
    parent_scope: dict[str, str | None] = field(default_factory=dict)
    # node id -> the flows a token leaving it takes whatever the variables, for nodes where no
    # condition decides (one unconditional flow, a parallel gateway, no outgoing flow...)
    fixed_outgoing: dict[str, tuple[SequenceFlow, ...]] = field(default_factory=dict)
    # parallel and inclusive gateways with several incoming flows (one history row per activation)
    joins: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return self.process.id

    def node(self, node_id: str) -> FlowNode:
        return self.nodes[node_id]

    def outgoing(self, node: FlowNode) -> list[SequenceFlow]:
        return [self.flows[f] for f in node.outgoing]

    def none_start(self, scope_id: str) -> FlowNode | None:
        """The start event a plain start (no trigger) begins with, if any."""
        for node in self.starts.get(scope_id, ()):
            if node.event is None or node.event.kind is EventKind.NONE:
                return node
        return None


def build_graph(process: Process) -> ExecutionGraph:
    """Precompute every lookup the runtime needs for ``process``."""
    nodes = dict(process.nodes)
    flows = dict(process.flows)
    starts: dict[str, list[FlowNode]] = defaultdict(list)
    event_subs: dict[str, list[FlowNode]] = defaultdict(list)
    evsub_start: dict[str, FlowNode] = {}
    boundaries: dict[str, list[FlowNode]] = defaultdict(list)
    parent_scope: dict[str, str | None] = {process.id: None}

    for node in nodes.values():
        if node.kind in (NodeKind.SUB_PROCESS, NodeKind.TRANSACTION, NodeKind.AD_HOC_SUB_PROCESS):
            parent_scope[node.id] = node.scope_id
            if node.triggered_by_event:
                event_subs[node.scope_id].append(node)
    for node in nodes.values():
        if node.kind is NodeKind.START_EVENT:
            scope = nodes.get(node.scope_id)
            if scope is not None and scope.triggered_by_event:
                evsub_start[scope.id] = node
            else:
                starts[node.scope_id].append(node)
        elif node.kind is NodeKind.BOUNDARY_EVENT and node.attached_to:
            boundaries[node.attached_to].append(node)

    graph = ExecutionGraph(
        process=process,
        nodes=nodes,
        flows=flows,
        starts={k: tuple(v) for k, v in starts.items()},
        event_subprocesses={k: tuple(v) for k, v in event_subs.items()},
        event_subprocess_start=evsub_start,
        boundaries={k: tuple(v) for k, v in boundaries.items()},
        parent_scope=parent_scope,
        fixed_outgoing=_fixed_outgoing(nodes, flows),
        joins=frozenset(
            node.id
            for node in nodes.values()
            if node.kind in (NodeKind.PARALLEL_GATEWAY, NodeKind.INCLUSIVE_GATEWAY) and len(node.incoming) > 1
        ),
    )
    for node in nodes.values():
        if node.kind is NodeKind.INCLUSIVE_GATEWAY and len(node.incoming) > 1:
            graph.inclusive_reach[node.id] = _reachers(graph, node)
    return graph


def _fixed_outgoing(nodes: dict[str, FlowNode], flows: dict[str, SequenceFlow]) -> dict[str, tuple[SequenceFlow, ...]]:
    """The nodes whose leaving tokens take the same flows every time (``gateways.select_outgoing``'s rules)."""
    fixed: dict[str, tuple[SequenceFlow, ...]] = {}
    for node in nodes.values():
        out = tuple(flows[f] for f in node.outgoing)
        unconditional = all(not f.condition for f in out)
        if not out or node.kind is NodeKind.PARALLEL_GATEWAY:
            fixed[node.id] = out
        elif len(out) == 1 and unconditional:
            fixed[node.id] = out  # whether or not it is the default flow, it is the one taken
        elif (
            unconditional
            and node.default_flow is None
            and node.kind not in (NodeKind.EXCLUSIVE_GATEWAY, NodeKind.INCLUSIVE_GATEWAY)
        ):
            fixed[node.id] = out  # an activity's unconditional flows: all of them
    return fixed


def _reachers(graph: ExecutionGraph, join: FlowNode) -> dict[str, frozenset[str]]:
    """For each incoming flow of ``join``: the nodes from which it can still be reached.

    Walks the flows backwards without passing through the join itself. A token
    sitting on one of these nodes may still arrive on that flow, so the join
    must wait for it. Boundary events count as reachable from their activity,
    and a sub-process counts as reaching what its inner nodes reach.
    """
    predecessors: dict[str, list[str]] = defaultdict(list)
    for flow in graph.flows.values():
        predecessors[flow.target].append(flow.source)
    for activity, events in graph.boundaries.items():
        for event in events:
            predecessors[event.id].append(activity)
    # a token inside a sub-process is "at" the sub-process for its parent scope
    result: dict[str, frozenset[str]] = {}
    for flow_id in join.incoming:
        flow = graph.flows[flow_id]
        seen: set[str] = set()
        stack = [flow.source]
        while stack:
            current = stack.pop()
            if current in seen or current == join.id:
                continue
            seen.add(current)
            stack.extend(predecessors.get(current, ()))
        result[flow_id] = frozenset(seen)
    return result
