"""Gateway rules: exclusive, parallel, inclusive (fork and join), event-based."""

from __future__ import annotations

import pytest

from bpmnlite import Engine, ExecutionError, ModelError

from ..bpmn import bpmn, flow
from ..conftest import SHARED, Clock

EXCLUSIVE = bpmn(
    """
    <startEvent id="s"/>
    <exclusiveGateway id="gw" default="f_default"/>
    <task id="big"/><task id="medium"/><task id="small"/>
    <endEvent id="e"/>
    """
    + flow("s", "gw")
    + flow("gw", "big", "${x &gt; 100}")
    + flow("gw", "medium", "x &gt; 10")
    + flow("gw", "small", fid="f_default")
    + flow("big", "e") + flow("medium", "e") + flow("small", "e")
)


@pytest.mark.parametrize(("x", "expected"), [(500, "big"), (50, "medium"), (5, "small")])
def test_exclusive_first_true_then_default(engine: Engine, x: int, expected: str) -> None:
    engine.deploy(EXCLUSIVE)
    inst = engine.start("p", {"x": x})
    visited = [a.element_id for a in engine.history(inst.id)]
    assert expected in visited
    assert {"big", "medium", "small"} & set(visited) == {expected}


def test_exclusive_takes_first_true_in_document_order(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><exclusiveGateway id="gw"/><task id="a"/><task id="b"/><endEvent id="e"/>'
        + flow("s", "gw") + flow("gw", "b", "x &gt; 1", fid="first") + flow("gw", "a", "x &gt; 0", fid="second")
        + flow("a", "e") + flow("b", "e")
    ))
    visited = [a.element_id for a in engine.history(engine.start("p", {"x": 5}).id)]
    assert "b" in visited and "a" not in visited


def test_exclusive_without_match_or_default_names_gateway(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><exclusiveGateway id="check"/><task id="a"/><task id="b"/><endEvent id="e"/>'
        + flow("s", "check") + flow("check", "a", "x &gt; 1") + flow("check", "b", "x &lt; 1")
        + flow("a", "e") + flow("b", "e")
    ))
    with pytest.raises(ExecutionError) as err:
        engine.start("p", {"x": 1})
    assert "'check'" in str(err.value) and "default" in str(err.value)
    assert engine.instances() == []


PARALLEL = bpmn(
    """
    <startEvent id="s"/>
    <parallelGateway id="fork"/>
    <userTask id="a"/><userTask id="b"/>
    <parallelGateway id="join"/>
    <scriptTask id="after"><script>joined = joined + 1</script></scriptTask>
    <endEvent id="e"/>
    """
    + flow("s", "fork") + flow("fork", "a", "${false}") + flow("fork", "b")
    + flow("a", "join") + flow("b", "join") + flow("join", "after") + flow("after", "e"),
)


def test_parallel_ignores_conditions_and_joins_once(engine: Engine) -> None:
    engine.deploy(PARALLEL)
    inst = engine.start("p", {"joined": 0})
    tasks = {t.element_id: t for t in engine.tasks(instance_id=inst.id)}
    assert set(tasks) == {"a", "b"}
    mid = engine.complete_task(tasks["a"].id)
    assert mid.state == "waiting" and mid.active_elements == ("b", "join")
    done = engine.complete_task(tasks["b"].id)
    assert done.state == "completed"
    assert done.variables["joined"] == 1
    assert [a.element_id for a in engine.history(inst.id)].count("after") == 1


def join_history(engine: Engine, instance_id: str) -> list[tuple[object, object, str | None]]:
    return [(a.started_at, a.ended_at, a.outcome) for a in engine.history(instance_id) if a.element_id == "join"]


THREE_USER_TASKS = bpmn(
    '<startEvent id="s"/><parallelGateway id="fork"/><userTask id="a"/><userTask id="b"/><userTask id="c"/>'
    '<parallelGateway id="join"/><endEvent id="e"/>'
    + flow("s", "fork") + "".join(flow("fork", t) + flow(t, "join") for t in "abc") + flow("join", "e")
)


def test_a_parallel_join_writes_one_history_row_across_commands(engine: Engine, clock: Clock) -> None:
    engine.deploy(THREE_USER_TASKS)
    inst = engine.start("p")
    tasks = {t.element_id: t for t in engine.tasks(instance_id=inst.id)}
    clock.advance(seconds=10)
    first_arrival = clock.now
    engine.complete_task(tasks["b"].id)
    clock.advance(seconds=10)
    engine.complete_task(tasks["a"].id)

    assert join_history(engine, inst.id) == [(first_arrival, None, None)]  # open while the join waits
    clock.advance(seconds=10)
    assert engine.complete_task(tasks["c"].id).state == "completed"
    assert join_history(engine, inst.id) == [(first_arrival, clock.now, "completed")]
    assert [a.element_id for a in engine.history(inst.id)][-2:] == ["join", "e"]


def test_a_join_cancelled_while_waiting_closes_its_one_row_as_cancelled(engine: Engine) -> None:
    engine.deploy(THREE_USER_TASKS)
    inst = engine.start("p")
    tasks = {t.element_id: t for t in engine.tasks(instance_id=inst.id)}
    engine.complete_task(tasks["a"].id)
    engine.complete_task(tasks["b"].id)

    engine.cancel(inst.id)

    [(started, ended, outcome)] = join_history(engine, inst.id)
    assert outcome == "cancelled" and started is not None and ended is not None and started <= ended


def test_a_boundary_timer_interrupting_a_waiting_join_cancels_its_one_row(engine: Engine, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/>'
        '<subProcess id="sub"><startEvent id="in"/><parallelGateway id="fork"/><task id="a"/><task id="b"/>'
        '<userTask id="c"/><parallelGateway id="join"/><endEvent id="out"/>'
        + flow("in", "fork") + "".join(flow("fork", t) + flow(t, "join") for t in "abc") + flow("join", "out")
        + '</subProcess>'
        '<boundaryEvent id="late" attachedToRef="sub"><timerEventDefinition><timeDuration>PT1H</timeDuration>'
        '</timerEventDefinition></boundaryEvent><endEvent id="e"/><endEvent id="timed_out"/>'
        + flow("s", "sub") + flow("sub", "e") + flow("late", "timed_out")
    ))
    inst = engine.start("p")
    [(started, _, _)] = join_history(engine, inst.id)  # a and b wait at the join, c at its user task

    clock.advance(hours=2)
    assert engine.fire_due_timers() == 1

    assert engine.instance(inst.id).state == "completed"
    assert join_history(engine, inst.id) == [(started, clock.now, "cancelled")]


def test_a_join_with_async_before_writes_one_row_from_the_first_arrival(engine: Engine, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><parallelGateway id="fork"/><task id="a"/><task id="b"/><task id="c"/>'
        '<parallelGateway id="join" camunda:asyncBefore="true"/><endEvent id="e"/>'
        + flow("s", "fork") + "".join(flow("fork", t) + flow(t, "join") for t in "abc") + flow("join", "e")
    ))
    inst = engine.start("p")
    arrived = clock.now
    assert len(engine.jobs(instance_id=inst.id)) == 3  # one job per arriving token
    assert join_history(engine, inst.id) == [(arrived, None, None)]

    clock.advance(seconds=5)
    engine.run_jobs()

    assert engine.instance(inst.id).state == "completed"
    assert join_history(engine, inst.id) == [(arrived, clock.now, "completed")]


INCLUSIVE = bpmn(
    """
    <startEvent id="s"/>
    <inclusiveGateway id="fork" default="f_none"/>
    <userTask id="a"/><userTask id="b"/><userTask id="c"/>
    <inclusiveGateway id="join"/>
    <scriptTask id="after"><script>count = count + 1</script></scriptTask>
    <endEvent id="e"/>
    """
    + flow("s", "fork")
    + flow("fork", "a", "${wantA}") + flow("fork", "b", "wantB") + flow("fork", "c", fid="f_none")
    + flow("a", "join") + flow("b", "join") + flow("c", "join") + flow("join", "after") + flow("after", "e")
)


def test_inclusive_fork_takes_all_true_and_join_waits_only_for_those(engine: Engine) -> None:
    engine.deploy(INCLUSIVE)
    inst = engine.start("p", {"wantA": True, "wantB": True, "count": 0})
    tasks = {t.element_id: t for t in engine.tasks(instance_id=inst.id)}
    assert set(tasks) == {"a", "b"}
    assert engine.complete_task(tasks["b"].id).state == "waiting"
    done = engine.complete_task(tasks["a"].id)
    assert done.state == "completed" and done.variables["count"] == 1
    assert [outcome for _, _, outcome in join_history(engine, inst.id)] == ["completed"]


def test_inclusive_join_fires_with_single_branch(engine: Engine) -> None:
    engine.deploy(INCLUSIVE)
    inst = engine.start("p", {"wantA": False, "wantB": True, "count": 0})
    tasks = engine.tasks(instance_id=inst.id)
    assert [t.element_id for t in tasks] == ["b"]
    assert engine.complete_task(tasks[0].id).state == "completed"


def test_inclusive_default_flow(engine: Engine) -> None:
    engine.deploy(INCLUSIVE)
    inst = engine.start("p", {"wantA": False, "wantB": False, "count": 0})
    assert [t.element_id for t in engine.tasks(instance_id=inst.id)] == ["c"]


def test_inclusive_join_waits_for_token_still_upstream(engine: Engine) -> None:
    """One branch has a longer path: the join must wait while a token can still reach it."""
    engine.deploy(bpmn(
        """
        <startEvent id="s"/><inclusiveGateway id="fork"/>
        <scriptTask id="fast"><script>order = order + ["fast"]</script></scriptTask>
        <userTask id="slow1"/><userTask id="slow2"/>
        <inclusiveGateway id="join"/>
        <scriptTask id="after"><script>order = order + ["after"]</script></scriptTask>
        <endEvent id="e"/>
        """
        + flow("s", "fork") + flow("fork", "fast", "True") + flow("fork", "slow1", "True")
        + flow("fast", "join") + flow("slow1", "slow2") + flow("slow2", "join") + flow("join", "after") + flow("after", "e")
    ))
    inst = engine.start("p", {"order": []})
    assert inst.state == "waiting" and inst.variables["order"] == ["fast"]
    task = engine.tasks(instance_id=inst.id)[0]
    mid = engine.complete_task(task.id)
    assert mid.state == "waiting" and mid.variables["order"] == ["fast"]
    done = engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert done.variables["order"] == ["fast", "after"]


def test_inclusive_join_fires_when_other_branch_ends_elsewhere(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/><inclusiveGateway id="fork"/>
        <userTask id="a"/><userTask id="b"/><exclusiveGateway id="x"/>
        <inclusiveGateway id="join"/><endEvent id="e"/><endEvent id="e2"/>
        """
        + flow("s", "fork") + flow("fork", "a", "True") + flow("fork", "b", "True")
        + flow("a", "join") + flow("b", "x") + flow("x", "join", "go") + flow("x", "e2", "not go")
        + flow("join", "e")
    ))
    inst = engine.start("p", {"go": False})
    tasks = {t.element_id: t for t in engine.tasks(instance_id=inst.id)}
    assert engine.complete_task(tasks["a"].id).active_elements == ("b", "join")
    done = engine.complete_task(tasks["b"].id)
    assert done.state == "completed"
    assert "join" in [a.element_id for a in engine.history(inst.id) if a.outcome == "completed"]


EVENT_GATEWAY = bpmn(
    """
    <startEvent id="s"/>
    <eventBasedGateway id="gw"/>
    <intermediateCatchEvent id="paid"><messageEventDefinition messageRef="m_paid"/></intermediateCatchEvent>
    <intermediateCatchEvent id="timeout"><timerEventDefinition><timeDuration>PT1H</timeDuration></timerEventDefinition></intermediateCatchEvent>
    <endEvent id="ok"/><endEvent id="late"/>
    """
    + flow("s", "gw") + flow("gw", "paid") + flow("gw", "timeout") + flow("paid", "ok") + flow("timeout", "late"),
    extra='<message id="m_paid" name="paid"/>',
)


def test_event_gateway_message_wins_and_timer_is_removed(engine: Engine) -> None:
    engine.deploy(EVENT_GATEWAY)
    inst = engine.start("p", business_key="o-1")
    assert inst.active_elements == ("gw",)
    assert len(engine.jobs(instance_id=inst.id, kind="timer")) == 1
    done = engine.correlate_message("paid", business_key="o-1", variables={"amount": 3})
    assert done.id == inst.id and done.state == "completed" and done.variables == {"amount": 3}
    assert engine.jobs(instance_id=inst.id) == []
    visited = [a.element_id for a in engine.history(inst.id)]
    assert "ok" in visited and "late" not in visited


def test_event_gateway_timer_wins_and_subscription_is_removed(engine: Engine, clock: Clock) -> None:
    engine.deploy(EVENT_GATEWAY)
    inst = engine.start("p", business_key="o-2")
    assert engine.fire_due_timers() == 0
    clock.advance(hours=1, seconds=1)
    assert engine.fire_due_timers() == 1
    assert engine.instance(inst.id).state == "completed"
    assert "late" in [a.element_id for a in engine.history(inst.id)]
    with pytest.raises(Exception, match="no instance or start event waits"):
        engine.correlate_message("paid", business_key="o-2")


def test_parallel_join_loop_back_is_refused_with_reason(engine: Engine) -> None:
    path = SHARED / "corpus/public/spiffworkflow/gateway_loop_input.bpmn"
    with pytest.raises(ModelError) as err:
        engine.deploy(path)
    assert any(p.element_id == "parallel" and "loop-back" in p.message for p in err.value.problems)
