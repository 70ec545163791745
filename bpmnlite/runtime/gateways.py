"""Gateways and conditional flows: which way a token goes, and when joins fire.

* Exclusive: the first flow (document order) whose condition holds, else the
  default flow, else an error naming the gateway.
* Parallel: every outgoing flow, conditions ignored; the join waits for one
  token per incoming flow (the BPMN rule; a loop-back into a parallel join is
  refused at deploy time because it would wait forever).
* Inclusive: every flow whose condition holds (else the default); the join
  waits only for tokens that can still arrive, using reachability sets
  precomputed in the execution graph.
* Event-based: see ``events``.

A join writes one history row per activation, not one per arriving token:
the first token of the activation to arrive (waiting at the join, or for its
async-before job in front of it) holds the row, later arrivals get none, and
the token that goes on when the join fires carries the row to its end. A
holder cancelled while others still wait hands the row to one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpmnlite.errors import ExecutionError, ExpressionError
from bpmnlite.expressions import is_truthy_condition
from bpmnlite.model import FlowNode, NodeKind, SequenceFlow
from bpmnlite.runtime.state import Instance, Phase, Token, Wait

if TYPE_CHECKING:
    from bpmnlite.runtime.runner import Runner


def _holds(runner: Runner, inst: Instance, token: Token, flow: SequenceFlow) -> bool:
    if flow.condition is None or flow.condition == "":
        return True
    value = runner.evaluate(inst, token, flow.condition, flow)
    try:
        return is_truthy_condition(value, expression=flow.condition)
    except ExpressionError as exc:
        raise exc.at(flow.id, flow.line) from None


def select_outgoing(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> list[SequenceFlow]:
    """The flows a token leaving ``node`` takes."""
    graph = runner.graph_of(inst)
    fixed = graph.fixed_outgoing.get(node.id)
    if fixed is not None:
        return list(fixed)
    if not node.outgoing:
        return []
    flows = [graph.flows[f] for f in node.outgoing]
    kind = node.kind
    if kind is NodeKind.PARALLEL_GATEWAY:
        return flows
    if kind is NodeKind.EXCLUSIVE_GATEWAY:
        for flow in flows:
            if flow.id != node.default_flow and _holds(runner, inst, token, flow):
                return [flow]
        if node.default_flow:
            return [graph.flows[node.default_flow]]
        raise ExecutionError(
            "no outgoing flow of the exclusive gateway has a condition that holds, and it has no default flow",
            element_id=node.id,
            instance_id=inst.id,
        )
    if len(flows) == 1 and flows[0].condition is None and kind is not NodeKind.INCLUSIVE_GATEWAY:
        return flows
    taken = [f for f in flows if f.id != node.default_flow and _holds(runner, inst, token, f)]
    if taken:
        return taken
    if node.default_flow:
        return [graph.flows[node.default_flow]]
    if kind is NodeKind.INCLUSIVE_GATEWAY:
        raise ExecutionError(
            "no outgoing flow of the inclusive gateway has a condition that holds, and it has no default flow",
            element_id=node.id,
            instance_id=inst.id,
        )
    # an activity whose conditional flows all fail: the token ends here (BPMN implicit end)
    return []


def execute_gateway(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    """Run a parallel/inclusive/exclusive gateway: join first if it has several inputs."""
    if len(node.incoming) > 1 and node.kind is NodeKind.PARALLEL_GATEWAY:
        _arrive_at_join(runner, inst, token, node)
        _try_parallel_join(runner, inst, node, token)
        return
    if len(node.incoming) > 1 and node.kind is NodeKind.INCLUSIVE_GATEWAY:
        _arrive_at_join(runner, inst, token, node)
        try_inclusive_join(runner, inst, node, token.parent_id)
        return
    runner.complete(inst, token)


def _arrive_at_join(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    token.wait = Wait.JOIN
    begin_join_record(runner, inst, token, node)


def _waiting_at(inst: Instance, node: FlowNode, scope: str | None) -> list[Token]:
    return [t for t in inst.tokens.values() if t.node_id == node.id and t.parent_id == scope and t.wait is Wait.JOIN]


# the waits of a token in front of or at a join that can hold the activation's history row
_AT_JOIN = (Wait.JOIN, Wait.ASYNC_BEFORE)


def begin_join_record(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    """Open the join's history row for ``token`` unless another token of this activation holds it."""
    if token.activity_id is None and _record_holder(runner, inst, node, token.parent_id) is None:
        runner.begin_activity(inst, token, node)
        runner.join_holders[(inst.id, node.id, token.parent_id)] = token


def _record_holder(runner: Runner, inst: Instance, node: FlowNode, scope: str | None) -> Token | None:
    """The token at the join in ``scope`` that holds the open history row, if any.

    Remembered per command, so the tokens are looked at once per activation,
    not on every arrival.
    """
    key = (inst.id, node.id, scope)
    known = runner.join_holders.get(key)
    if known is not None and _holds_record(inst, node, scope, known):
        return known
    for token in inst.tokens.values():
        if _holds_record(inst, node, scope, token):
            runner.join_holders[key] = token
            return token
    return None


def _holds_record(inst: Instance, node: FlowNode, scope: str | None, token: Token) -> bool:
    return (
        token.activity_id is not None
        and token.node_id == node.id
        and token.parent_id == scope
        and token.wait in _AT_JOIN
        and inst.tokens.get(token.id) is token
    )


def pass_on_join_record(runner: Runner, inst: Instance, token: Token) -> bool:
    """A token leaving a join without firing it hands its history row to another token still waiting there.

    Returns whether it did; if nobody is left, the caller closes the row.
    """
    if token.activity_id is None or token.wait not in _AT_JOIN:
        return False
    if token.node_id not in runner.graph_of(inst).joins:
        return False
    for other in inst.tokens.values():
        if (
            other is not token
            and other.activity_id is None
            and other.node_id == token.node_id
            and other.parent_id == token.parent_id
            and other.wait in _AT_JOIN
        ):
            other.activity_id, token.activity_id = token.activity_id, None
            runner.join_holders[(inst.id, token.node_id, token.parent_id)] = other
            return True
    return False


def _fire(runner: Runner, inst: Instance, node: FlowNode, arrived: list[Token]) -> None:
    """Consume one waiting token per flow and let a single token go on, carrying the history row."""
    holder = _record_holder(runner, inst, node, arrived[0].parent_id)
    if holder is not None and holder.wait is Wait.JOIN:
        # consumed first, so the row is this activation's and the holder is the token that goes on
        arrived = [holder, *(t for t in arrived if t is not holder)]
    by_flow: dict[str | None, Token] = {}
    for t in arrived:
        by_flow.setdefault(t.flow_id, t)
    consumed = list(by_flow.values())
    # a second token on one flow waits for the next activation, which starts when this one fires
    next_round = [t for t in arrived if by_flow[t.flow_id] is not t] if len(consumed) < len(arrived) else []
    survivor = consumed[0]
    for t in consumed[1:]:
        runner.end_activity(inst, t)  # only tokens of a state saved before one row per activation hold one
        runner.clear_rows(t)
        inst.tokens.pop(t.id, None)
    if survivor.activity_id is None:
        if holder is not None:  # the first to arrive still waits for its async-before job
            survivor.activity_id, holder.activity_id = holder.activity_id, None
        else:
            runner.begin_activity(inst, survivor, node)
    survivor.wait = Wait.NONE
    survivor.flow_id = None
    runner.complete(inst, survivor)
    if next_round:
        begin_join_record(runner, inst, next_round[0], node)


def _try_parallel_join(runner: Runner, inst: Instance, node: FlowNode, arrived: Token) -> None:
    """Fire the join once a token waits on every incoming flow.

    Looking at every token of the instance on each arrival made a fork of n
    branches cost n² steps, so the runner remembers which flows a join still
    misses. An arrival on a missing flow only strikes it off; the tokens are
    looked at when the first arrives and when nothing seems missing any more
    (a token counted earlier may have been cancelled since).
    """
    scope = arrived.parent_id
    key = (inst.id, node.id, scope)
    known = runner.join_missing.get(key)
    if known is not None and known[0] is inst:
        missing = known[1]
        missing.discard(arrived.flow_id)
        if missing:
            return
    waiting = _waiting_at(inst, node, scope)
    flows = {t.flow_id for t in waiting}
    missing = {f for f in node.incoming if f not in flows}
    if missing:
        runner.join_missing[key] = (inst, missing)
        return
    runner.join_missing.pop(key, None)
    _fire(runner, inst, node, waiting)


def try_inclusive_join(runner: Runner, inst: Instance, node: FlowNode, scope: str | None) -> bool:
    """Fire the inclusive join if no token that could still reach it is left."""
    waiting = _waiting_at(inst, node, scope)
    if not waiting:
        return False
    have = {t.flow_id for t in waiting}
    missing = [f for f in node.incoming if f not in have]
    if missing:
        reach = runner.graph_of(inst).inclusive_reach.get(node.id, {})
        for other in inst.tokens.values():
            if other.parent_id != scope or other.wait is Wait.JOIN and other.node_id == node.id:
                continue
            if any(other.node_id in reach.get(f, ()) for f in missing):
                return False
            if other.node_id == node.id and other.phase is Phase.ARRIVE:
                return False  # about to arrive (e.g. waiting for its async-before job)
    _fire(runner, inst, node, waiting)
    return True


def recheck_inclusive_joins(runner: Runner) -> bool:
    """After the queue drained: fire inclusive joins no other token can reach any more."""
    fired = False
    for inst in runner.instances.values():
        graph = runner.graph_of(inst)
        if not graph.inclusive_reach:
            continue
        seen: set[tuple[str, str | None]] = set()
        for token in list(inst.tokens.values()):
            if token.wait is not Wait.JOIN or (token.node_id, token.parent_id) in seen:
                continue
            node = graph.nodes[token.node_id]
            if node.kind is NodeKind.INCLUSIVE_GATEWAY:
                seen.add((token.node_id, token.parent_id))
                fired = try_inclusive_join(runner, inst, node, token.parent_id) or fired
    return fired and bool(runner.queue)
