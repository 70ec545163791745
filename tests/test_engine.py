"""The engine's commands: deploy, start, tasks, rollback, versions, history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bpmnlite import Engine, ExecutionError, ModelError, NotFound, hookimpl

from .bpmn import bpmn, chain, flow
from .conftest import Clock, Recorder

STRAIGHT = bpmn(
    """
    <startEvent id="start"/>
    <scriptTask id="s1"><script>x = x + 1</script></scriptTask>
    <scriptTask id="s2"><script>x = x * 10</script></scriptTask>
    <endEvent id="end"/>
    """
    + chain("start", "s1", "s2", "end")
)

APPROVAL = bpmn(
    """
    <startEvent id="start"/>
    <userTask id="review" name="Review order"/>
    <scriptTask id="after"><script>total = amount * 2
checked = True</script></scriptTask>
    <endEvent id="end"/>
    """
    + chain("start", "review", "after", "end"),
    "approval",
)


def test_straight_through_runs_to_completion(engine: Engine) -> None:
    engine.deploy(STRAIGHT)
    inst = engine.start("p", {"x": 1})
    assert inst.state == "completed"
    assert inst.variables == {"x": 20}
    assert inst.active_elements == ()
    stored = engine.instance(inst.id)
    assert stored.state == "completed" and stored.variables == {"x": 20}
    visited = [a.element_id for a in engine.history(inst.id)]
    assert visited == ["start", "s1", "s2", "end"]
    assert all(a.ended_at is not None and a.outcome == "completed" for a in engine.history(inst.id))


def test_user_task_waits_and_completes(engine: Engine) -> None:
    engine.deploy(APPROVAL)
    inst = engine.start("approval", {"amount": 21}, business_key="o-42")
    assert inst.state == "waiting"
    assert inst.active_elements == ("review",)
    tasks = engine.tasks(instance_id=inst.id)
    assert [(t.element_id, t.name) for t in tasks] == [("review", "Review order")]
    done = engine.complete_task(tasks[0].id, {"approved": True})
    assert done.state == "completed"
    assert done.variables == {"amount": 21, "approved": True, "total": 42, "checked": True}
    assert engine.tasks(instance_id=inst.id) == []
    assert engine.instances(business_key="o-42")[0].id == inst.id


def test_failing_script_after_user_task_rolls_back_to_the_task(engine: Engine) -> None:
    model = bpmn(
        """
        <startEvent id="start"/>
        <userTask id="review"/>
        <scriptTask id="set"><script>y = 5</script></scriptTask>
        <scriptTask id="broken"><script>z = 1 / 0</script></scriptTask>
        <endEvent id="end"/>
        """
        + chain("start", "review", "set", "broken", "end")
    )
    engine.deploy(model)
    inst = engine.start("p", {"x": 1})
    task = engine.tasks(instance_id=inst.id)[0]
    before = engine.instance(inst.id)
    history_before = engine.history(inst.id)
    with pytest.raises(ExecutionError) as err:
        engine.complete_task(task.id, {"approved": True})
    assert "broken" in str(err.value)
    assert "ZeroDivisionError" in str(err.value)
    after = engine.instance(inst.id)
    assert after.variables == before.variables == {"x": 1}
    assert after.active_elements == ("review",)
    assert after.state == "waiting"
    assert [t.id for t in engine.tasks(instance_id=inst.id)] == [task.id]
    assert engine.history(inst.id) == history_before
    assert engine.variable_history(inst.id)[-1].name == "x"


def test_deploy_versions(engine: Engine) -> None:
    first = engine.deploy(APPROVAL)
    assert first.changed and first.definition("approval").version == 1
    again = engine.deploy(APPROVAL)
    assert not again.changed and again.definition("approval").id == first.definition("approval").id
    inst = engine.start("approval", {"amount": 1})
    changed = APPROVAL.replace('name="Review order"', 'name="Review it"')
    second = engine.deploy(changed)
    assert second.changed and second.definition("approval").version == 2
    assert [d.version for d in engine.definitions("approval")] == [1, 2]
    # the running instance keeps version 1; new ones use version 2
    assert engine.instance(inst.id).definition_id == first.definition("approval").id
    new = engine.start("approval", {"amount": 1})
    assert new.definition_id == second.definition("approval").id
    assert engine.tasks(instance_id=new.id)[0].name == "Review it"
    old_task = engine.tasks(instance_id=inst.id)[0]
    assert old_task.name == "Review order"
    assert engine.complete_task(old_task.id).state == "completed"
    assert engine.start("approval", {"amount": 1}, version=1).definition_id == first.definition("approval").id


def test_invalid_model_deploys_nothing(engine: Engine) -> None:
    broken = bpmn(
        """
        <startEvent id="start"/>
        <exclusiveGateway id="gw"/>
        <serviceTask id="svc" bpmnlite:type="no-such-type"/>
        <endEvent id="end"/>
        """
        + flow("start", "gw") + flow("gw", "svc", "${x &gt;}") + flow("gw", "end", "x &lt; 1") + flow("svc", "end")
    )
    with pytest.raises(ModelError) as err:
        engine.deploy(broken)
    problems = err.value.problems
    assert any(p.element_id == "svc" and "no-such-type" in p.message for p in problems)
    assert any(p.element_id == "f_gw_svc" for p in problems)
    assert engine.definitions() == []
    with pytest.raises(NotFound):
        engine.start("p")


def test_not_executable_process_is_refused(engine: Engine) -> None:
    engine.deploy(bpmn('<startEvent id="s"/><endEvent id="e"/>' + flow("s", "e"), executable=False))
    with pytest.raises(ModelError, match="not executable"):
        engine.start("p")


def test_service_task_and_variables_history(engine: Engine, recorder: Recorder) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="a" bpmnlite:type="record"/>'
        '<serviceTask id="b" bpmnlite:type="record"/><endEvent id="e"/>' + chain("s", "a", "b", "e")
    ))
    inst = engine.start("p")
    assert inst.variables["trace"] == ["a", "b"]
    assert recorder.calls == ["a", "b"]
    changes = [(v.name, v.value, v.element_id) for v in engine.variable_history(inst.id)]
    assert changes == [("trace", ["a"], "a"), ("trace", ["a", "b"], "b")]


def test_history_times_include_the_time_a_handler_took(db_url: str, clock: Clock) -> None:
    """A bug: every row of a command carried the command's start time, so a service task whose
    handler took 5 s showed no duration, and the next element seemed to start before it ended."""

    class Slow:
        @hookimpl
        def bpmnlite_task_types(self) -> dict[str, Any]:
            return {"slow": lambda ctx: clock.advance(seconds=5)}  # the handler's 5 s

    engine = Engine(db_url, plugins=[Slow()], load_entry_points=False, clock=clock)
    try:
        engine.deploy(bpmn(
            '<startEvent id="s"/><serviceTask id="a" bpmnlite:type="slow" bpmnlite:async="true"/>'
            '<userTask id="u"/><endEvent id="e"/>' + chain("s", "a", "u", "e")
        ))
        inst = engine.start("p")
        began = clock.now
        clock.advance(seconds=2)  # the job waits 2 s in the queue
        assert engine.run_jobs() == 1
        rows = {a.element_id: a for a in engine.history(inst.id)}
        assert rows["a"].started_at == began
        assert rows["a"].ended_at == began + timedelta(seconds=7)  # queued 2 s, ran 5 s
        assert rows["u"].started_at == began + timedelta(seconds=7)
    finally:
        engine.close()


def test_a_row_of_an_earlier_command_ends_at_its_own_time_not_the_commands_last(db_url: str, clock: Clock) -> None:
    """A bug: an activity begun by an earlier command was ended with the time the rows were written,
    so when a later handler of the same command took 5 s, the first task ended 5 s too late."""

    class Slow:
        @hookimpl
        def bpmnlite_task_types(self) -> dict[str, Any]:
            return {"slow": lambda ctx: clock.advance(seconds=5)}

    engine = Engine(db_url, plugins=[Slow()], load_entry_points=False, clock=clock)
    try:
        engine.deploy(bpmn(
            '<startEvent id="s"/><serviceTask id="a" bpmnlite:type="slow" bpmnlite:async="true"/>'
            '<serviceTask id="b" bpmnlite:type="slow"/><userTask id="u"/><endEvent id="e"/>'
            + chain("s", "a", "b", "u", "e")
        ))
        inst = engine.start("p")
        began = clock.now
        assert engine.run_jobs() == 1  # a's job runs a (5 s), then b (5 s), in one command
        rows = {r.element_id: r for r in engine.history(inst.id)}
        assert rows["a"].ended_at == began + timedelta(seconds=5)
        assert rows["b"].started_at == began + timedelta(seconds=5)
        assert rows["b"].ended_at == began + timedelta(seconds=10)
    finally:
        engine.close()


def test_unknown_things_are_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.instance("nope")
    with pytest.raises(NotFound):
        engine.complete_task("nope")
    with pytest.raises(NotFound):
        engine.correlate_message("nobody-waits")


def test_cancel(engine: Engine) -> None:
    engine.deploy(APPROVAL)
    inst = engine.start("approval", {"amount": 1})
    cancelled = engine.cancel(inst.id)
    assert cancelled.state == "cancelled"
    assert engine.tasks(instance_id=inst.id) == []
    assert engine.tasks(instance_id=inst.id, state="cancelled")[0].element_id == "review"
    assert engine.instance(inst.id).state == "cancelled"


def test_non_json_variable_is_refused_clearly(engine: Engine) -> None:
    engine.deploy(STRAIGHT)
    with pytest.raises(Exception, match="variable 'x' cannot be stored"):
        engine.start("p", {"x": object()})


def test_loop_without_wait_state_stops_with_error_naming_loop(db_url: str, recorder: Recorder) -> None:
    eng = Engine(db_url, plugins=[recorder], max_steps=500)
    eng.deploy(bpmn(
        '<startEvent id="s"/><exclusiveGateway id="loop"/><scriptTask id="inc"><script>n = n + 1</script></scriptTask>'
        + flow("s", "loop") + flow("loop", "inc") + flow("inc", "loop")
    ))
    with pytest.raises(ExecutionError) as err:
        eng.start("p", {"n": 0})
    assert "loop" in str(err.value) and "500 steps" in str(err.value)
    assert eng.instances() == []
    eng.close()


def test_a_failing_listener_does_not_fail_a_committed_command(db_url: str) -> None:
    from bpmnlite import hookimpl

    class Broken:
        @hookimpl
        def bpmnlite_instance_started(self) -> None:
            raise RuntimeError("listener bug")

    eng = Engine(db_url, plugins=[Broken()])
    eng.deploy(APPROVAL)
    inst = eng.start("approval", {"amount": 1})
    assert eng.instance(inst.id).state == "waiting"
    eng.close()


def test_a_handler_storing_a_non_json_value_is_told_which_variable(engine: Engine) -> None:
    engine.deploy(bpmn('<startEvent id="s"/><scriptTask id="when"><script>'
                       'stamp = {1: "int keys are not JSON"}</script></scriptTask><endEvent id="e"/>'
                       + chain("s", "when", "e")))
    with pytest.raises(ExecutionError) as err:
        engine.start("p")
    assert err.value.element_id == "when" and "'stamp'" in str(err.value)


def test_set_variables_refuses_an_ended_instance(engine: Engine) -> None:
    engine.deploy(STRAIGHT)
    inst = engine.start("p", {"x": 1})
    with pytest.raises(Exception, match="already ended"):
        engine.set_variables(inst.id, {"x": 2})
    assert engine.instance(inst.id).variables == {"x": 20}
