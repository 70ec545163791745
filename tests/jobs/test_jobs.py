"""Async flags, retries, incidents and element limits, run by the engine's own job path."""

from __future__ import annotations

import pytest

from bpmnlite import Engine

from ..bpmn import bpmn, chain, flow
from ..conftest import Clock, Recorder

ASYNC_CHAIN = bpmn(
    """
    <startEvent id="s"/>
    <serviceTask id="a" bpmnlite:type="record"/>
    <serviceTask id="b" bpmnlite:type="record" bpmnlite:async="true"/>
    <serviceTask id="c" bpmnlite:type="record" camunda:asyncAfter="true"/>
    <userTask id="wait"/>
    <endEvent id="e"/>
    """
    + chain("s", "a", "b", "c", "wait", "e")
)


def test_start_returns_at_the_async_point_and_later_outputs_are_not_in_it(engine: Engine, recorder: Recorder) -> None:
    engine.deploy(ASYNC_CHAIN)
    inst = engine.start("p")
    assert inst.state == "waiting" and inst.active_elements == ("b",)
    assert inst.variables == {"trace": ["a"]}
    jobs = engine.jobs(instance_id=inst.id)
    assert [(j.element_id, j.kind, j.retries) for j in jobs] == [("b", "async-before", 3)]
    assert engine.execute_job(jobs[0].id) == "done"
    mid = engine.instance(inst.id)
    assert mid.active_elements == ("c",) and mid.variables["trace"] == ["a", "b", "c"]
    assert [j.kind for j in engine.jobs(instance_id=inst.id)] == ["async-after"]
    engine.run_jobs()
    assert engine.instance(inst.id).active_elements == ("wait",)
    assert inst.variables == {"trace": ["a"]}  # the snapshot start() returned did not change
    assert recorder.calls == ["a", "b", "c"]


def test_async_flag_keeps_order(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><scriptTask id="t1" flowable:async="true"><script>log = log + ["t1"]</script></scriptTask>'
        '<scriptTask id="t2" flowable:async="true"><script>log = log + ["t2"]</script></scriptTask><endEvent id="e"/>'
        + chain("s", "t1", "t2", "e")
    ))
    inst = engine.start("p", {"log": []})
    engine.run_jobs()
    assert engine.instance(inst.id).variables["log"] == ["t1", "t2"]


def test_handler_failing_twice_then_succeeding_has_no_incident(engine: Engine, recorder: Recorder, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="flaky" bpmnlite:type="record" bpmnlite:async="true"/><endEvent id="e"/>'
        + chain("s", "flaky", "e")
    ))
    recorder.fail_times["flaky"] = 2
    inst = engine.start("p")
    job = engine.jobs(instance_id=inst.id)[0]
    assert engine.execute_job(job.id) == "failed"
    after_one = engine.jobs(instance_id=inst.id)[0]
    assert after_one.retries == 2 and after_one.attempts == 1
    assert after_one.error_message == "step 'flaky' failed"
    assert "planned failure of flaky" in (after_one.error_detail or "")
    assert engine.instance(inst.id).active_elements == ("flaky",)
    assert engine.run_jobs() == 0  # the back-off has not passed
    clock.advance(seconds=10)
    assert engine.execute_job(job.id) == "failed"
    clock.advance(seconds=10)
    assert engine.execute_job(job.id) == "done"
    assert engine.instance(inst.id).state == "completed"
    assert engine.incidents() == []
    assert recorder.calls == ["flaky"] * 3


def test_always_failing_handler_makes_one_incident_then_retry_fixes_it(
    engine: Engine, recorder: Recorder, clock: Clock
) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="charge" bpmnlite:type="record" bpmnlite:async="true"/><endEvent id="e"/>'
        + chain("s", "charge", "e")
    ))
    recorder.fail_times["charge"] = 1000
    inst = engine.start("p")
    for _ in range(5):
        engine.run_jobs()
        clock.advance(seconds=11)
    incidents = engine.incidents()
    assert len(incidents) == 1
    assert incidents[0].attempts == 3 and incidents[0].retries == 0
    assert "planned failure of charge" in (incidents[0].error_detail or "")
    assert recorder.calls == ["charge"] * 3
    assert engine.instance(inst.id).active_elements == ("charge",)
    recorder.fail_times["charge"] = 0  # the operator fixed the cause
    engine.retry(incidents[0].id)
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"
    assert engine.incidents() == []
    assert recorder.calls == ["charge"] * 4


def test_retry_cycle_from_camunda_attribute(engine: Engine, recorder: Recorder, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="x" bpmnlite:type="fail" camunda:asyncBefore="true">'
        '<extensionElements><camunda:failedJobRetryTimeCycle>R5/PT1M</camunda:failedJobRetryTimeCycle>'
        '</extensionElements></serviceTask><endEvent id="e"/>' + chain("s", "x", "e")
    ))
    inst = engine.start("p")
    assert engine.jobs(instance_id=inst.id)[0].retries == 5
    for _ in range(4):
        engine.run_jobs()
        clock.advance(seconds=30)
        assert engine.run_jobs() == 0  # one minute between attempts
        clock.advance(seconds=31)
    engine.run_jobs()
    assert len(recorder.calls) == 5
    assert len(engine.incidents(instance_id=inst.id)) == 1


def test_uncaught_bpmn_error_in_job_is_an_incident_at_once(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="x" bpmnlite:type="throw" bpmnlite:async="true" '
        'bpmnlite:errorCode="Unhandled"/><endEvent id="e"/>' + chain("s", "x", "e")
    ))
    engine.start("p")
    engine.run_jobs()
    (incident,) = engine.incidents()
    assert incident.attempts == 1 and "Unhandled" in (incident.error_detail or "")


def test_max_queue_takes_the_queue_full_outcome(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <serviceTask id="make" bpmnlite:type="record" bpmnlite:async="true" bpmnlite:maxQueue="2"/>
        <boundaryEvent id="full" attachedToRef="make"><errorEventDefinition errorRef="qf"/></boundaryEvent>
        <endEvent id="e"/><endEvent id="rejected"/>
        """
        + flow("s", "make") + flow("make", "e") + flow("full", "rejected"),
        extra='<error id="qf" errorCode="QueueFull"/>',
    ))
    first, second, third = (engine.start("p") for _ in range(3))
    assert first.state == second.state == "waiting"
    assert third.state == "completed"
    assert "rejected" in [a.element_id for a in engine.history(third.id)]
    engine.run_jobs()
    assert engine.start("p").state == "waiting"  # the queue drained


def test_suspend_and_activate(engine: Engine) -> None:
    engine.deploy(ASYNC_CHAIN)
    inst = engine.start("p")
    engine.suspend(inst.id)
    assert engine.run_jobs() == 0
    assert [j.state for j in engine.jobs(instance_id=inst.id)] == ["suspended"]
    engine.activate(inst.id)
    engine.run_jobs()
    assert engine.instance(inst.id).active_elements == ("wait",)
    task = engine.tasks(instance_id=inst.id)[0]
    engine.suspend(inst.id)
    with pytest.raises(Exception, match="suspended"):
        engine.complete_task(task.id)


def test_async_after_on_forking_gateway_makes_one_job_per_flow(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><parallelGateway id="fork" camunda:asyncAfter="true"/>'
        '<userTask id="a"/><userTask id="b"/><userTask id="c"/>'
        + flow("s", "fork") + flow("fork", "a") + flow("fork", "b") + flow("fork", "c")
    ))
    inst = engine.start("p")
    jobs = engine.jobs(instance_id=inst.id)
    assert len(jobs) == 3 and {j.kind for j in jobs} == {"async-after"}
    engine.run_jobs()
    assert sorted(t.element_id for t in engine.tasks(instance_id=inst.id)) == ["a", "b", "c"]


def test_run_until_idle_with_in_process_worker(engine: Engine, recorder: Recorder) -> None:
    engine.deploy(ASYNC_CHAIN)
    ids = [engine.start("p").id for _ in range(5)]
    engine.run_until_idle(timeout=60)
    for inst_id in ids:
        assert engine.instance(inst_id).active_elements == ("wait",)
    assert sorted(recorder.calls) == sorted(["a", "b", "c"] * 5)
    assert engine.jobs() == []
