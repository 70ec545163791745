"""Events: boundary events, end events, messages, signals, timers, event sub-processes."""

from __future__ import annotations

import pytest

from bpmnlite import Engine, ExecutionError

from ..bpmn import bpmn, chain, flow
from ..conftest import Clock, Recorder

ERRORS = '<error id="err_nf" errorCode="NotFound"/><error id="err_other" errorCode="Other"/>'


def test_error_boundary_catches_bpmn_error_from_handler(engine: Engine, recorder: Recorder) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <serviceTask id="lookup" bpmnlite:type="throw" bpmnlite:errorCode="NotFound"/>
        <boundaryEvent id="on_other" attachedToRef="lookup"><errorEventDefinition errorRef="err_other"/></boundaryEvent>
        <boundaryEvent id="on_nf" attachedToRef="lookup" camunda:errorCodeVariable="code"><errorEventDefinition errorRef="err_nf"/></boundaryEvent>
        <endEvent id="normal"/><endEvent id="handled_nf"/><endEvent id="handled_other"/>
        """
        + flow("s", "lookup") + flow("lookup", "normal") + flow("on_nf", "handled_nf") + flow("on_other", "handled_other"),
        extra=ERRORS,
    ))
    inst = engine.start("p")
    assert inst.state == "completed"
    visited = [a.element_id for a in engine.history(inst.id)]
    assert "handled_nf" in visited and "normal" not in visited and "handled_other" not in visited
    assert inst.variables["code"] == "NotFound"


def test_uncaught_bpmn_error_fails_the_command(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="lookup" bpmnlite:type="throw" bpmnlite:errorCode="Nope"/><endEvent id="e"/>'
        + chain("s", "lookup", "e")
    ))
    with pytest.raises(ExecutionError, match="Nope"):
        engine.start("p")
    assert engine.instances() == []


def test_error_end_event_in_subprocess_caught_by_boundary(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <subProcess id="sub">
          <startEvent id="sub_s"/><userTask id="inner_wait"/><scriptTask id="inner"><script>step = 1</script></scriptTask>
          <endEvent id="sub_err"><errorEventDefinition errorRef="err_nf"/></endEvent>
          <sequenceFlow id="i1" sourceRef="sub_s" targetRef="inner"/>
          <sequenceFlow id="i2" sourceRef="inner" targetRef="sub_err"/>
          <sequenceFlow id="i3" sourceRef="sub_s" targetRef="inner_wait"/>
        </subProcess>
        <boundaryEvent id="caught" attachedToRef="sub"><errorEventDefinition errorRef="err_nf"/></boundaryEvent>
        <endEvent id="normal"/><endEvent id="recovered"/>
        """
        + flow("s", "sub") + flow("sub", "normal") + flow("caught", "recovered"),
        extra=ERRORS,
    ))
    inst = engine.start("p")
    assert inst.state == "completed" and inst.variables == {"step": 1}
    hist = engine.history(inst.id)
    assert "recovered" in [a.element_id for a in hist]
    assert [a.outcome for a in hist if a.element_id == "inner_wait"] == ["cancelled"]
    assert engine.tasks(instance_id=inst.id) == []


USER_TASK_WITH_BOUNDARIES = bpmn(
    """
    <startEvent id="s"/>
    <userTask id="work"/>
    <boundaryEvent id="reminder" attachedToRef="work" cancelActivity="false">
      <timerEventDefinition><timeCycle>R2/PT1H</timeCycle></timerEventDefinition></boundaryEvent>
    <boundaryEvent id="deadline" attachedToRef="work">
      <timerEventDefinition><timeDuration>PT24H</timeDuration></timerEventDefinition></boundaryEvent>
    <boundaryEvent id="cancel_msg" attachedToRef="work"><messageEventDefinition messageRef="m_cancel"/></boundaryEvent>
    <boundaryEvent id="note_sig" attachedToRef="work" cancelActivity="false"><signalEventDefinition signalRef="sig_note"/></boundaryEvent>
    <scriptTask id="remind"><script>reminders = reminders + 1</script></scriptTask>
    <scriptTask id="note"><script>notes = notes + 1</script></scriptTask>
    <endEvent id="done"/><endEvent id="expired"/><endEvent id="cancelled"/><endEvent id="r_end"/><endEvent id="n_end"/>
    """
    + flow("s", "work") + flow("work", "done") + flow("reminder", "remind") + flow("remind", "r_end")
    + flow("deadline", "expired") + flow("cancel_msg", "cancelled") + flow("note_sig", "note") + flow("note", "n_end"),
    extra='<message id="m_cancel" name="cancel"/><signal id="sig_note" name="note"/>',
)


def test_non_interrupting_timer_cycle_fires_while_task_stays_open(engine: Engine, clock: Clock) -> None:
    engine.deploy(USER_TASK_WITH_BOUNDARIES)
    inst = engine.start("p", {"reminders": 0, "notes": 0})
    clock.advance(hours=1)
    assert engine.fire_due_timers() == 1
    assert engine.instance(inst.id).variables["reminders"] == 1
    assert [t.element_id for t in engine.tasks(instance_id=inst.id)] == ["work"]
    clock.advance(hours=1)
    assert engine.fire_due_timers() == 1
    clock.advance(hours=1)
    assert engine.fire_due_timers() == 0  # R2: two reminders in all
    assert engine.instance(inst.id).variables["reminders"] == 2
    done = engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert done.state == "completed"
    assert engine.jobs(instance_id=inst.id) == []


def test_interrupting_timer_cancels_the_task(engine: Engine, clock: Clock) -> None:
    engine.deploy(USER_TASK_WITH_BOUNDARIES)
    inst = engine.start("p", {"reminders": 0, "notes": 0})
    clock.advance(hours=25)
    engine.fire_due_timers()
    after = engine.instance(inst.id)
    assert after.state == "completed"
    assert engine.tasks(instance_id=inst.id) == []
    assert "expired" in [a.element_id for a in engine.history(inst.id)]
    assert engine.jobs(instance_id=inst.id) == []


def test_message_boundary_interrupts_and_signal_boundary_does_not(engine: Engine) -> None:
    engine.deploy(USER_TASK_WITH_BOUNDARIES)
    inst = engine.start("p", {"reminders": 0, "notes": 0}, business_key="k1")
    assert engine.broadcast_signal("note") == 1
    assert engine.broadcast_signal("note") == 1
    mid = engine.instance(inst.id)
    assert mid.variables["notes"] == 2 and mid.active_elements == ("work",)
    done = engine.correlate_message("cancel", business_key="k1")
    assert done.state == "completed"
    assert "cancelled" in [a.element_id for a in engine.history(inst.id)]
    assert engine.broadcast_signal("note") == 0


def test_terminate_end_event_ends_all_branches(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/><parallelGateway id="fork"/><userTask id="wait"/>
        <endEvent id="stop"><terminateEventDefinition/></endEvent><endEvent id="e"/>
        """
        + flow("s", "fork") + flow("fork", "wait") + flow("fork", "stop") + flow("wait", "e")
    ))
    inst = engine.start("p")
    assert inst.state == "completed"
    assert engine.tasks(instance_id=inst.id) == []


def test_signal_end_event_reaches_other_instances(engine: Engine) -> None:
    waiting = bpmn(
        '<startEvent id="s"/><intermediateCatchEvent id="c"><signalEventDefinition signalRef="go"/></intermediateCatchEvent>'
        '<endEvent id="e"/>' + chain("s", "c", "e"),
        "waiter", extra='<signal id="go" name="go"/>',
    )
    thrower = bpmn(
        '<startEvent id="s"/><endEvent id="e"><signalEventDefinition signalRef="go"/></endEvent>' + flow("s", "e"),
        "thrower", extra='<signal id="go" name="go"/>',
    )
    engine.deploy(waiting)
    engine.deploy(thrower)
    a = engine.start("waiter")
    b = engine.start("waiter")
    engine.start("thrower")
    assert engine.instance(a.id).state == "completed"
    assert engine.instance(b.id).state == "completed"


def test_message_correlation_by_business_key_and_variable(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><receiveTask id="wait" messageRef="m"/><endEvent id="e"/>' + chain("s", "wait", "e"),
        extra='<message id="m" name="paid"/>',
    ))
    a = engine.start("p", {"order": 1}, business_key="A")
    b = engine.start("p", {"order": 2}, business_key="B")
    c = engine.start("p", {"order": 3}, business_key="B")
    assert engine.correlate_message("paid", business_key="B", correlation={"order": 3}).id == c.id
    assert engine.correlate_message("paid", business_key="A", variables={"paid": True}).variables["paid"] is True
    assert engine.instance(b.id).state == "waiting"
    assert engine.instance(a.id).state == "completed"


def test_message_start_event_starts_instance(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"><messageEventDefinition messageRef="m"/></startEvent><userTask id="t"/><endEvent id="e"/>'
        + chain("s", "t", "e"),
        extra='<message id="m" name="order-received"/>',
    ))
    inst = engine.correlate_message("order-received", business_key="o-9", variables={"n": 1})
    assert inst.state == "waiting" and inst.business_key == "o-9" and inst.variables == {"n": 1}


def test_timer_start_event_cycle_starts_instances(engine: Engine, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"><timerEventDefinition><timeCycle>R3/PT10M</timeCycle></timerEventDefinition></startEvent>'
        '<userTask id="t"/><endEvent id="e"/>' + chain("s", "t", "e"),
        "cron",
    ))
    assert engine.instances() == []
    for expected in (1, 2, 3, 3):
        clock.advance(minutes=10)
        engine.fire_due_timers()
        assert len(engine.instances(process_key="cron")) == expected


def test_timer_catch_event_with_date_and_expression(engine: Engine, clock: Clock) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><intermediateCatchEvent id="wait"><timerEventDefinition>'
        '<timeDuration>${delay}</timeDuration></timerEventDefinition></intermediateCatchEvent><endEvent id="e"/>'
        + chain("s", "wait", "e")
    ))
    inst = engine.start("p", {"delay": "PT5M"})
    clock.advance(minutes=4)
    assert engine.fire_due_timers() == 0
    clock.advance(minutes=1)
    assert engine.fire_due_timers() == 1
    assert engine.instance(inst.id).state == "completed"


EVENT_SUBPROCESSES = bpmn(
    """
    <startEvent id="s"/><userTask id="main"/><endEvent id="e"/>
    <subProcess id="on_update" triggeredByEvent="true">
      <startEvent id="upd_s" isInterrupting="false"><messageEventDefinition messageRef="m_upd"/></startEvent>
      <scriptTask id="count"><script>updates = updates + 1</script></scriptTask>
      <endEvent id="upd_e"/>
      <sequenceFlow id="u1" sourceRef="upd_s" targetRef="count"/><sequenceFlow id="u2" sourceRef="count" targetRef="upd_e"/>
    </subProcess>
    <subProcess id="on_abort" triggeredByEvent="true">
      <startEvent id="ab_s"><messageEventDefinition messageRef="m_abort"/></startEvent>
      <endEvent id="ab_e"/>
      <sequenceFlow id="a1" sourceRef="ab_s" targetRef="ab_e"/>
    </subProcess>
    <subProcess id="on_error" triggeredByEvent="true">
      <startEvent id="er_s"><errorEventDefinition/></startEvent>
      <scriptTask id="log"><script>handled = True</script></scriptTask>
      <endEvent id="er_e"/>
      <sequenceFlow id="r1" sourceRef="er_s" targetRef="log"/><sequenceFlow id="r2" sourceRef="log" targetRef="er_e"/>
    </subProcess>
    """
    + chain("s", "main", "e"),
    extra='<message id="m_upd" name="update"/><message id="m_abort" name="abort"/>',
)


def test_event_subprocess_non_interrupting_then_interrupting(engine: Engine) -> None:
    engine.deploy(EVENT_SUBPROCESSES)
    inst = engine.start("p", {"updates": 0}, business_key="x")
    engine.correlate_message("update", business_key="x")
    engine.correlate_message("update", business_key="x")
    mid = engine.instance(inst.id)
    assert mid.variables["updates"] == 2 and mid.active_elements == ("main",)
    done = engine.correlate_message("abort", business_key="x")
    assert done.state == "completed"
    assert engine.tasks(instance_id=inst.id) == []
    with pytest.raises(Exception, match="no instance"):
        engine.correlate_message("update", business_key="x")


def test_error_event_subprocess_catches_errors_of_the_scope(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/><serviceTask id="call" bpmnlite:type="throw" bpmnlite:errorCode="Any"/><endEvent id="e"/>
        <subProcess id="on_error" triggeredByEvent="true">
          <startEvent id="er_s"><errorEventDefinition/></startEvent>
          <scriptTask id="log"><script>handled = True</script></scriptTask><endEvent id="er_e"/>
          <sequenceFlow id="r1" sourceRef="er_s" targetRef="log"/><sequenceFlow id="r2" sourceRef="log" targetRef="er_e"/>
        </subProcess>
        """
        + chain("s", "call", "e")
    ))
    inst = engine.start("p")
    assert inst.state == "completed" and inst.variables == {"handled": True}
    assert "e" not in [a.element_id for a in engine.history(inst.id)]


def test_escalation_caught_by_non_interrupting_boundary(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <subProcess id="sub">
          <startEvent id="ss"/>
          <intermediateThrowEvent id="raise"><escalationEventDefinition escalationRef="esc"/></intermediateThrowEvent>
          <scriptTask id="cont"><script>continued = True</script></scriptTask>
          <endEvent id="se"/>
          <sequenceFlow id="q1" sourceRef="ss" targetRef="raise"/><sequenceFlow id="q2" sourceRef="raise" targetRef="cont"/>
          <sequenceFlow id="q3" sourceRef="cont" targetRef="se"/>
        </subProcess>
        <boundaryEvent id="b" attachedToRef="sub" cancelActivity="false"><escalationEventDefinition escalationRef="esc"/></boundaryEvent>
        <scriptTask id="notify"><script>notified = True</script></scriptTask>
        <endEvent id="e"/><endEvent id="e2"/>
        """
        + flow("s", "sub") + flow("sub", "e") + flow("b", "notify") + flow("notify", "e2"),
        extra='<escalation id="esc" escalationCode="late"/>',
    ))
    inst = engine.start("p")
    assert inst.state == "completed"
    assert inst.variables == {"notified": True, "continued": True}
