"""The token loop driven directly, without an engine or a database: joins, outgoing flows, ids."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from bpmnlite.errors import ExecutionError
from bpmnlite.model import FlowNode
from bpmnlite.parser import parse
from bpmnlite.runtime import gateways
from bpmnlite.runtime.activities import start_process_scope
from bpmnlite.runtime.graph import ExecutionGraph, build_graph
from bpmnlite.runtime.runner import Runner
from bpmnlite.runtime.state import Instance, InstanceState, Phase, Token, Wait, new_id

from ..bpmn import bpmn, chain, flow


class StubEnvironment:
    """Just enough of ``runtime.environment.Environment`` for models without tasks that call out."""

    trusted_scripts = False
    max_steps = 10_000
    functions: Mapping[str, Callable[..., Any]] = {}

    def __init__(self, graph: ExecutionGraph) -> None:
        self._graph = graph

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def graph(self, definition_id: str) -> ExecutionGraph:
        return self._graph


def graph_of(body: str) -> ExecutionGraph:
    return build_graph(parse(bpmn(body)).processes[0])


def new_runner(graph: ExecutionGraph) -> tuple[Runner, Instance]:
    runner = Runner(StubEnvironment(graph))  # type: ignore[arg-type]
    inst = runner.adopt(Instance(id=new_id(), definition_id="d", process_key="p", business_key=None,
                                 variables={}, is_new=True))
    return runner, inst


FORK_JOIN = (
    '<startEvent id="s"/><parallelGateway id="fork"/><task id="a"/><task id="b"/><task id="c"/>'
    '<parallelGateway id="join"/><endEvent id="e"/>'
    + flow("s", "fork") + "".join(flow("fork", t) + flow(t, "join", fid=f"to_{t}") for t in "abc")
    + flow("join", "e")
)


def test_a_fork_and_join_ends_the_instance_with_one_pass_through_the_join() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    start_process_scope(runner, inst, graph.nodes["s"])

    runner.run()

    assert inst.state is InstanceState.COMPLETED
    visited = [a.element_id for a in runner.effects.activities.values()]
    assert sorted(visited) == ["a", "b", "c", "e", "fork", "join", "s"]  # one row for the join's activation
    assert [a.outcome for a in runner.effects.activities.values()] == ["completed"] * 7


def join_rows(runner: Runner) -> list[tuple[str | None, int]]:
    """(outcome, seq) of the join's history rows, in start order."""
    return [(a.outcome, a.seq) for a in runner.effects.activities.values() if a.element_id == "join"]


def arrive(runner: Runner, inst: Instance, node: FlowNode, flow_id: str) -> Token:
    token = runner.new_token(inst, node.id, parent_id=None, phase=Phase.EXECUTE, flow_id=flow_id)
    gateways.execute_gateway(runner, inst, token, node)
    return token


def test_a_parallel_join_does_not_count_a_waiting_token_that_was_cancelled() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]

    first = arrive(runner, inst, join, "to_a")
    runner.cancel_token(inst, first)
    arrive(runner, inst, join, "to_b")
    arrive(runner, inst, join, "to_c")

    assert [t.wait for t in inst.tokens.values()] == [Wait.JOIN, Wait.JOIN]
    assert not runner.queue

    arrive(runner, inst, join, "to_a")

    assert len(inst.tokens) == 1
    survivor = next(iter(inst.tokens.values()))
    assert (survivor.wait, survivor.phase, survivor.flow_id) == (Wait.NONE, Phase.LEAVE, None)
    assert [token for _, token in runner.queue] == [survivor]


def test_the_first_token_at_a_join_holds_its_history_row_and_the_token_that_goes_on_carries_it() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]

    first = arrive(runner, inst, join, "to_b")
    second = arrive(runner, inst, join, "to_a")

    assert first.activity_id is not None and second.activity_id is None
    assert join_rows(runner) == [(None, runner.seq - 1)]
    arrive(runner, inst, join, "to_c")
    [survivor] = inst.tokens.values()
    assert survivor is first and survivor.activity_id is not None
    runner.run()
    assert [outcome for outcome, _ in join_rows(runner)] == ["completed"]


def test_a_cancelled_holder_hands_the_join_row_to_a_token_still_waiting() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]

    first = arrive(runner, inst, join, "to_a")
    second = arrive(runner, inst, join, "to_b")
    row = first.activity_id
    runner.cancel_token(inst, first)

    assert second.activity_id == row and join_rows(runner)[0][0] is None
    arrive(runner, inst, join, "to_c")
    arrive(runner, inst, join, "to_a")
    runner.run()
    assert [outcome for outcome, _ in join_rows(runner)] == ["completed"]


def test_a_join_row_is_cancelled_when_its_last_waiting_token_is() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]
    waiting = [arrive(runner, inst, join, flow_id) for flow_id in ("to_a", "to_b")]

    for token in waiting:
        runner.cancel_token(inst, token)

    assert [outcome for outcome, _ in join_rows(runner)] == ["cancelled"]


def test_tokens_saved_with_a_join_row_each_close_them_all_when_the_join_fires() -> None:
    """State written before one row per activation: every waiting token holds a row of its own."""
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]
    for flow_id in ("to_a", "to_b"):
        token = runner.new_token(inst, join.id, parent_id=None, phase=Phase.EXECUTE, flow_id=flow_id)
        token.wait = Wait.JOIN
        runner.begin_activity(inst, token, join)

    arrive(runner, inst, join, "to_c")
    runner.run()

    assert inst.state is InstanceState.COMPLETED
    assert [outcome for outcome, _ in join_rows(runner)] == ["completed", "completed"]


def test_a_parallel_join_counts_tokens_that_waited_before_the_command() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]
    for flow_id in ("to_a", "to_b"):  # as loaded from the store: already waiting
        token = runner.new_token(inst, join.id, parent_id=None, phase=Phase.EXECUTE, flow_id=flow_id)
        token.wait = Wait.JOIN

    arrive(runner, inst, join, "to_c")

    assert len(inst.tokens) == 1 and len(runner.queue) == 1


def test_a_second_token_on_the_same_flow_waits_for_the_next_round() -> None:
    graph = graph_of(FORK_JOIN)
    runner, inst = new_runner(graph)
    join = graph.nodes["join"]

    for flow_id in ("to_a", "to_a", "to_b", "to_c"):
        arrive(runner, inst, join, flow_id)

    assert len(runner.queue) == 1
    left = [t for t in inst.tokens.values() if t.wait is Wait.JOIN]
    assert [t.flow_id for t in left] == ["to_a"]
    arrive(runner, inst, join, "to_b")
    arrive(runner, inst, join, "to_c")
    assert len(runner.queue) == 2
    # one row per firing; the second round's row starts when the first round fired
    assert [outcome for outcome, _ in join_rows(runner)] == [None, None]
    runner.run()
    assert [outcome for outcome, _ in join_rows(runner)] == ["completed", "completed"]


def test_a_loop_without_wait_state_is_stopped_at_the_step_limit_naming_its_elements() -> None:
    graph = graph_of(
        '<startEvent id="s"/><task id="t1"/><task id="t2"/><exclusiveGateway id="loop"/><task id="again"/>'
        + chain("s", "t1", "t2", "loop", "again", "loop")
    )
    runner, inst = new_runner(graph)
    start_process_scope(runner, inst, graph.nodes["s"])

    with pytest.raises(ExecutionError) as err:
        runner.run()

    assert runner.steps == StubEnvironment.max_steps + 1
    assert "more than 10000 steps" in str(err.value)
    assert err.value.element_id in ("loop", "again")
    assert "'loop'" in str(err.value) and "'again'" in str(err.value) and "'t1'" not in str(err.value)


OUTGOING = (
    '<startEvent id="s"/><task id="plain"/><task id="cond"/><task id="two"/><task id="withdefault" default="d1"/>'
    '<exclusiveGateway id="xor"/><exclusiveGateway id="merge"/><inclusiveGateway id="or"/>'
    '<parallelGateway id="and"/><endEvent id="e"/>'
    + chain("s", "plain", "cond")
    + flow("cond", "two", "x &gt; 0") + flow("cond", "e", "x &lt;= 0", fid="c2")
    + flow("two", "xor") + flow("two", "merge")
    + flow("xor", "withdefault", "x &gt; 1") + flow("xor", "or", "x &lt;= 1")
    + flow("withdefault", "e", fid="d1") + flow("withdefault", "and", "x &gt; 5")
    + flow("merge", "or", fid="m1")
    + flow("or", "and", fid="o1") + flow("or", "e", fid="o2")
    + flow("and", "e", "x &gt; 100", fid="a1") + flow("and", "e", fid="a2")
)


def test_fixed_outgoing_flows_are_those_the_rules_pick_without_conditions() -> None:
    graph = graph_of(OUTGOING)

    fixed = {node_id: [f.id for f in flows] for node_id, flows in graph.fixed_outgoing.items()}

    assert fixed == {
        "s": ["f_s_plain"],
        "plain": ["f_plain_cond"],
        "two": ["f_two_xor", "f_two_merge"],  # an activity's unconditional flows: all
        "merge": ["m1"],
        "and": ["a1", "a2"],  # a parallel gateway ignores conditions
        "e": [],
    }


@pytest.mark.parametrize("x", [-1, 1, 3, 10])
def test_select_outgoing_agrees_with_and_without_the_fixed_flows(x: int) -> None:
    graph = graph_of(OUTGOING)
    bare = build_graph(graph.process)
    bare.fixed_outgoing.clear()
    for node in graph.nodes.values():
        picked = []
        for g in (graph, bare):
            runner, inst = new_runner(g)
            inst.variables["x"] = x
            token = runner.new_token(inst, node.id, parent_id=None)
            picked.append([f.id for f in gateways.select_outgoing(runner, inst, token, node)])
        assert picked[0] == picked[1], node.id


def test_new_ids_are_32_hex_characters_in_sequence() -> None:
    ids = [new_id() for _ in range(10_000)]

    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    # one process's ids follow each other (index locality), but with a 48-bit counter that wraps
    steps = {int(b[:12], 16) - int(a[:12], 16) for a, b in zip(ids, ids[1:], strict=False)}
    assert steps <= {1, 1 - (1 << 48)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_draws_its_own_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    mine = new_id()

    assert len(child) == 96
    assert mine[12:] not in child  # another process suffix
    assert mine[:12] not in child
