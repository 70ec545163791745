"""Property (DESIGN §2.3): async flags never change semantics or order.

Hypothesis builds random well-formed models (script tasks, exclusive choices,
parallel blocks, embedded sub-processes), runs each once without async flags
and once with random async-before/after flags on any flow node, and checks
the same final variables and the same trace. Each parallel branch appends to
its own list, so "the same trace up to the order of parallel branches" is
plain equality of the variables.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpmnlite import Engine

from ..bpmn import NS


@dataclass
class Builder:
    """Accumulates nodes and flows; every node id gets an optional async flag later."""

    nodes: list[tuple[str, str]] = field(default_factory=list)  # (id, xml with {ASYNC} placeholder)
    flows: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def new(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def node(self, node_id: str, xml: str) -> str:
        self.nodes.append((node_id, xml))
        return node_id

    def flow(self, source: str, target: str, condition: str | None = None) -> None:
        fid = self.new("f")
        cond = f"<conditionExpression>{condition}</conditionExpression>" if condition else ""
        self.flows.append(f'<sequenceFlow id="{fid}" sourceRef="{source}" targetRef="{target}">{cond}</sequenceFlow>')


Block = tuple  # ("task",) | ("xor", left, right) | ("and", [branches]) | ("sub", seq)


def blocks(depth: int) -> st.SearchStrategy[list[Block]]:
    leaf = st.just(("task",))
    if depth <= 0:
        return st.lists(leaf, min_size=1, max_size=3)
    inner = blocks(depth - 1)
    block = st.one_of(
        leaf,
        leaf,
        st.tuples(st.just("xor"), inner, inner),
        st.tuples(st.just("and"), st.lists(inner, min_size=2, max_size=3)),
        st.tuples(st.just("sub"), inner),
    )
    return st.lists(block, min_size=1, max_size=4)


def emit(b: Builder, seq: list[Block], start: str, lst: str) -> str:
    """Emit ``seq`` after node ``start``, appending to variable ``lst``; return the last node id."""
    current = start
    for blk in seq:
        kind = blk[0]
        if kind == "task":
            tid = b.new("t")
            b.node(tid, f'<scriptTask id="{tid}"{{ASYNC}}><script>{lst} = {lst} + ["{tid}"]\nn = n + 1</script></scriptTask>')
            b.flow(current, tid)
            current = tid
        elif kind == "xor":
            gw, merge, var = b.new("x"), b.new("m"), b.new("c")
            b.choices.append(var)
            b.node(gw, f'<exclusiveGateway id="{gw}"{{ASYNC}}/>')
            b.node(merge, f'<exclusiveGateway id="{merge}"{{ASYNC}}/>')
            b.flow(current, gw)
            for branch, cond in ((blk[1], var), (blk[2], f"not {var}")):
                first = b.new("p")
                b.node(first, f'<task id="{first}"{{ASYNC}}/>')
                b.flow(gw, first, cond)
                b.flow(emit(b, branch, first, lst), merge)
            current = merge
        elif kind == "and":
            fork, join = b.new("a"), b.new("j")
            b.node(fork, f'<parallelGateway id="{fork}"{{ASYNC}}/>')
            b.node(join, f'<parallelGateway id="{join}"{{ASYNC}}/>')
            b.flow(current, fork)
            for branch in blk[1]:
                own = b.new("l")
                b.lists.append(own)
                first = b.new("p")
                b.node(first, f'<task id="{first}"{{ASYNC}}/>')
                b.flow(fork, first)
                b.flow(emit(b, branch, first, own), join)
            current = join
        else:  # embedded sub-process: its nodes are emitted into a nested builder
            sub_id = b.new("s")
            inner = Builder(counter=b.counter, lists=b.lists, choices=b.choices)
            s_start = inner.node(inner.new("ss"), "")
            inner.nodes[-1] = (s_start, f'<startEvent id="{s_start}"/>')
            last = emit(inner, blk[1], s_start, lst)
            s_end = inner.new("se")
            inner.node(s_end, f'<endEvent id="{s_end}"/>')
            inner.flow(last, s_end)
            body = "".join(x for _, x in inner.nodes) + "".join(inner.flows)
            b.node(sub_id, f'<subProcess id="{sub_id}"{{ASYNC}}>{body}</subProcess>')
            b.nodes.extend((nid, "") for nid, _ in inner.nodes)  # flag them too (inner ids only)
            b.flow(current, sub_id)
            current = sub_id
    return current


def build(seq: list[Block]) -> tuple[Builder, str]:
    b = Builder()
    b.node("start", '<startEvent id="start"{ASYNC}/>')
    last = emit(b, seq, "start", "trace")
    b.node("end", '<endEvent id="end"{ASYNC}/>')
    b.flow(last, "end")
    return b, last


def render(b: Builder, flags: dict[str, str]) -> str:
    parts = []
    for node_id, xml in b.nodes:
        if not xml:
            continue
        parts.append(xml.replace(f'id="{node_id}"{{ASYNC}}', f'id="{node_id}"{flags.get(node_id, "")}', 1))
    body = "".join(parts) + "".join(b.flows)
    # flags of nodes inside sub-processes were rendered with the sub-process's text: apply them there
    for node_id, flag in flags.items():
        body = body.replace(f'id="{node_id}"{{ASYNC}}', f'id="{node_id}"{flag}')
    body = body.replace("{ASYNC}", "")
    return f'<definitions {NS} id="d" targetNamespace="t"><process id="p" isExecutable="true">{body}</process></definitions>'


FLAG = st.sampled_from(["", "", ' bpmnlite:async="true"', ' camunda:asyncAfter="true"',
                        ' flowable:async="true" flowable:exclusive="false"', ' bpmnlite:async="true" bpmnlite:asyncAfter="true"'])


def run(xml: str, variables: dict[str, object]) -> dict[str, object]:
    engine = Engine("sqlite://")
    try:
        engine.deploy(xml)
        inst = engine.start("p", variables)
        for _ in range(1000):
            if engine.run_jobs() == 0:
                break
        final = engine.instance(inst.id)
        assert final.state == "completed", (final.state, final.active_elements, engine.incidents())
        return final.variables
    finally:
        engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_async_flags_do_not_change_trace_or_variables(data: st.DataObject) -> None:
    seq = data.draw(blocks(2), label="model")
    b, _ = build(seq)
    ids = [nid for nid, _ in b.nodes]
    flags = {nid: data.draw(FLAG, label=f"flag {nid}") for nid in ids}
    variables: dict[str, object] = {"trace": [], "n": 0}
    variables.update({name: [] for name in b.lists})
    variables.update({name: data.draw(st.booleans(), label=name) for name in b.choices})
    plain = run(render(b, {}), dict(variables))
    flagged = run(render(b, flags), dict(variables))
    assert flagged == plain
    assert plain["n"] == sum(len(v) for k, v in plain.items() if isinstance(v, list))
