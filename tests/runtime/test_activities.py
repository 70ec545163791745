"""Activities: sub-processes, call activities, multi-instance."""

from __future__ import annotations

import pytest

from bpmnlite import Engine, ExecutionError

from ..bpmn import bpmn, chain, flow


def test_embedded_subprocess_runs_and_completes_scope(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <subProcess id="sub">
          <startEvent id="ss"/><userTask id="inner"/><endEvent id="se"/>
          <sequenceFlow id="i1" sourceRef="ss" targetRef="inner"/><sequenceFlow id="i2" sourceRef="inner" targetRef="se"/>
        </subProcess>
        <scriptTask id="after"><script>after = True</script></scriptTask><endEvent id="e"/>
        """
        + chain("s", "sub", "after", "e")
    ))
    inst = engine.start("p")
    assert inst.active_elements == ("inner",)
    done = engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert done.state == "completed" and done.variables == {"after": True}
    kinds = {a.element_id: a.element_kind for a in engine.history(inst.id)}
    assert kinds["sub"] == "subProcess"


CHILD = bpmn(
    """
    <startEvent id="cs"/><scriptTask id="work"><script>result = input * 2
secret = 1</script></scriptTask><userTask id="child_wait"/><endEvent id="ce"/>
    """
    + chain("cs", "work", "child_wait", "ce"),
    "child",
)

PARENT = bpmn(
    """
    <startEvent id="s"/>
    <callActivity id="call" calledElement="child">
      <extensionElements>
        <camunda:in source="amount" target="input"/>
        <camunda:in businessKey="${execution.processBusinessKey}"/>
        <camunda:out source="result" target="doubled"/>
      </extensionElements>
    </callActivity>
    <endEvent id="e"/>
    """
    + chain("s", "call", "e"),
    "parent",
)


def test_call_activity_with_mappings_and_business_key(engine: Engine) -> None:
    engine.deploy(CHILD)
    engine.deploy(PARENT)
    parent = engine.start("parent", {"amount": 21, "private": "x"}, business_key="bk-1")
    assert parent.state == "waiting" and parent.active_elements == ("call",)
    children = engine.instances(parent_instance_id=parent.id)
    assert len(children) == 1
    child = children[0]
    assert child.business_key == "bk-1"
    assert child.variables == {"input": 21, "result": 42, "secret": 1}
    engine.complete_task(engine.tasks(instance_id=child.id)[0].id)
    done = engine.instance(parent.id)
    assert done.state == "completed"
    assert done.variables == {"amount": 21, "private": "x", "doubled": 42}


def test_call_activity_all_variables_flowable_form(engine: Engine) -> None:
    engine.deploy(CHILD)
    engine.deploy(bpmn(
        '<startEvent id="s"/><callActivity id="call" calledElement="child"><extensionElements>'
        '<flowable:in variables="all"/><flowable:out variables="all"/></extensionElements></callActivity>'
        '<endEvent id="e"/>' + chain("s", "call", "e"),
        "parent2",
    ))
    parent = engine.start("parent2", {"input": 5})
    child = engine.instances(parent_instance_id=parent.id)[0]
    assert child.variables["input"] == 5
    engine.complete_task(engine.tasks(instance_id=child.id)[0].id)
    assert engine.instance(parent.id).variables == {"input": 5, "result": 10, "secret": 1}


def test_cancel_parent_cancels_child(engine: Engine) -> None:
    engine.deploy(CHILD)
    engine.deploy(PARENT)
    parent = engine.start("parent", {"amount": 1})
    child = engine.instances(parent_instance_id=parent.id)[0]
    engine.cancel(parent.id)
    assert engine.instance(child.id).state == "cancelled"


def test_error_in_child_is_caught_by_boundary_on_call_activity(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="cs"/><endEvent id="ce"><errorEventDefinition errorRef="er"/></endEvent>' + flow("cs", "ce"),
        "failing_child", extra='<error id="er" errorCode="Broken"/>',
    ))
    engine.deploy(bpmn(
        """
        <startEvent id="s"/><callActivity id="call" calledElement="failing_child"/>
        <boundaryEvent id="caught" attachedToRef="call"><errorEventDefinition errorRef="er"/></boundaryEvent>
        <endEvent id="e"/><endEvent id="handled"/>
        """
        + flow("s", "call") + flow("call", "e") + flow("caught", "handled"),
        "catching_parent", extra='<error id="er" errorCode="Broken"/>',
    ))
    parent = engine.start("catching_parent")
    assert parent.state == "completed"
    assert "handled" in [a.element_id for a in engine.history(parent.id)]


@pytest.mark.parametrize("sequential", [False, True])
def test_multi_instance_collection_standard_and_camunda(engine: Engine, sequential: bool) -> None:
    seq = "true" if sequential else "false"
    engine.deploy(bpmn(
        f"""
        <startEvent id="s"/>
        <userTask id="review">
          <multiInstanceLoopCharacteristics isSequential="{seq}" camunda:collection="reviewers" camunda:elementVariable="reviewer"/>
        </userTask>
        <scriptTask id="after"><script>finished = True</script></scriptTask>
        <endEvent id="e"/>
        """
        + chain("s", "review", "after", "e")
    ))
    inst = engine.start("p", {"reviewers": ["ann", "bob", "cy"]})
    seen = []
    for _ in range(3):
        tasks = engine.tasks(instance_id=inst.id)
        assert len(tasks) == (1 if sequential else 3 - len(seen))
        engine.complete_task(tasks[0].id, {"last": tasks[0].id})
        seen.append(tasks[0].id)
    done = engine.instance(inst.id)
    assert done.state == "completed" and done.variables["finished"] is True
    assert "reviewer" not in done.variables and "loopCounter" not in done.variables


def test_multi_instance_element_variable_visible_to_scripts(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <scriptTask id="sq"><multiInstanceLoopCharacteristics isSequential="true">
            <loopDataInputRef>numbers</loopDataInputRef><inputDataItem name="n"/>
          </multiInstanceLoopCharacteristics>
          <script>total = total + n * 10 + loopCounter</script></scriptTask>
        <endEvent id="e"/>
        """
        + chain("s", "sq", "e")
    ))
    inst = engine.start("p", {"numbers": [1, 2, 3], "total": 0})
    assert inst.variables["total"] == 60 + 0 + 1 + 2


def test_multi_instance_cardinality_and_completion_condition(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <userTask id="vote"><multiInstanceLoopCharacteristics isSequential="false">
            <loopCardinality>${voters}</loopCardinality>
            <completionCondition>${nrOfCompletedInstances &gt;= 2}</completionCondition>
          </multiInstanceLoopCharacteristics></userTask>
        <endEvent id="e"/>
        """
        + chain("s", "vote", "e")
    ))
    inst = engine.start("p", {"voters": 4})
    tasks = engine.tasks(instance_id=inst.id)
    assert len(tasks) == 4
    engine.complete_task(tasks[0].id)
    assert engine.complete_task(tasks[1].id).state == "completed"
    assert engine.tasks(instance_id=inst.id) == []
    assert len(engine.tasks(instance_id=inst.id, state="cancelled")) == 2


def test_multi_instance_subprocess_parallel(engine: Engine) -> None:
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <subProcess id="per_item">
          <multiInstanceLoopCharacteristics flowable:collection="items" flowable:elementVariable="item"/>
          <startEvent id="ss"/><userTask id="handle"/><endEvent id="se"/>
          <sequenceFlow id="i1" sourceRef="ss" targetRef="handle"/><sequenceFlow id="i2" sourceRef="handle" targetRef="se"/>
        </subProcess>
        <endEvent id="e"/>
        """
        + chain("s", "per_item", "e")
    ))
    inst = engine.start("p", {"items": ["a", "b"]})
    tasks = engine.tasks(instance_id=inst.id)
    assert len(tasks) == 2
    engine.complete_task(tasks[0].id)
    assert engine.complete_task(tasks[1].id).state == "completed"


def test_multi_instance_empty_collection_skips(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><userTask id="t"><multiInstanceLoopCharacteristics camunda:collection="xs" '
        'camunda:elementVariable="x"/></userTask><endEvent id="e"/>' + chain("s", "t", "e")
    ))
    assert engine.start("p", {"xs": []}).state == "completed"


def test_multi_instance_bad_collection_names_element(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><userTask id="t"><multiInstanceLoopCharacteristics camunda:collection="xs" '
        'camunda:elementVariable="x"/></userTask><endEvent id="e"/>' + chain("s", "t", "e")
    ))
    with pytest.raises(ExecutionError, match="'t'"):
        engine.start("p", {"xs": 5})


def test_send_task_message_reaches_waiting_instance_with_same_business_key(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><receiveTask id="wait" messageRef="m"/><endEvent id="e"/>' + chain("s", "wait", "e"),
        "receiver", extra='<message id="m" name="shipped"/>',
    ))
    engine.deploy(bpmn(
        '<startEvent id="s"/><sendTask id="notify" messageRef="m"/><endEvent id="e"/>' + chain("s", "notify", "e"),
        "sender", extra='<message id="m" name="shipped"/>',
    ))
    waiting = engine.start("receiver", business_key="o-7")
    other = engine.start("receiver", business_key="o-8")
    engine.start("sender", business_key="o-7")
    assert engine.instance(waiting.id).state == "completed"
    assert engine.instance(other.id).state == "waiting"


def test_business_rule_task_and_manual_task(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><manualTask id="m"/><businessRuleTask id="rules" bpmnlite:type="record"/>'
        '<endEvent id="e"/>' + chain("s", "m", "rules", "e")
    ))
    inst = engine.start("p")
    assert inst.state == "completed" and inst.variables["trace"] == ["rules"]


def test_link_events_jump_within_the_process(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><intermediateThrowEvent id="go"><linkEventDefinition name="L"/></intermediateThrowEvent>'
        '<intermediateCatchEvent id="land"><linkEventDefinition name="L"/></intermediateCatchEvent>'
        '<scriptTask id="after"><script>landed = True</script></scriptTask><endEvent id="e"/>'
        + flow("s", "go") + flow("land", "after") + flow("after", "e")
    ))
    inst = engine.start("p")
    assert inst.state == "completed" and inst.variables == {"landed": True}


def test_background_call_reports_back_with_a_completion_message(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="fetch" bpmnlite:type="record" bpmnlite:async="true"/>'
        '<scriptTask id="shape"><script>answer = 42</script></scriptTask><endEvent id="e"/>'
        + chain("s", "fetch", "shape", "e"),
        "api_call",
    ))
    engine.deploy(bpmn(
        """
        <startEvent id="s"/>
        <callActivity id="ask" calledElement="api_call" bpmnlite:background="true" bpmnlite:completionMessage="api_done"/>
        <scriptTask id="go_on"><script>continued = True</script></scriptTask>
        <receiveTask id="wait_result" messageRef="m"/>
        <scriptTask id="use"><script>used = result["answer"]</script></scriptTask>
        <endEvent id="e"/>
        """
        + chain("s", "ask", "go_on", "wait_result", "use", "e"),
        "caller", extra='<message id="m" name="api_done"/>',
    ))
    parent = engine.start("caller", {"q": 1})
    assert parent.variables["continued"] is True and parent.active_elements == ("wait_result",)
    (child,) = engine.instances(parent_instance_id=parent.id)
    assert child.variables == {"q": 1} and child.state == "waiting"  # an input snapshot, running on its own
    engine.run_jobs()
    assert engine.handle(parent.id).result(timeout=10)["used"] == 42
    assert engine.instance(child.id).state == "completed"


def test_handle_times_out_and_polls(engine: Engine) -> None:
    engine.deploy(bpmn('<startEvent id="s"/><userTask id="t"/><endEvent id="e"/>' + chain("s", "t", "e")))
    inst = engine.start("p")
    handle = engine.handle(inst.id)
    assert not handle.done() and handle.poll().active_elements == ("t",)
    with pytest.raises(TimeoutError, match="waits at t"):
        handle.result(timeout=0.2)
    engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert handle.result(timeout=5) == {}


def test_background_child_failure_does_not_roll_back_the_parent(engine: Engine) -> None:
    engine.deploy(bpmn('<startEvent id="s"/><scriptTask id="boom"><script>x = 1 / 0</script></scriptTask>'
                       '<endEvent id="e"/>' + chain("s", "boom", "e"), "fragile"))
    engine.deploy(bpmn('<startEvent id="s"/><callActivity id="fire" calledElement="fragile" '
                       'bpmnlite:background="true"/><endEvent id="e"/>' + chain("s", "fire", "e"), "launcher"))
    parent = engine.start("launcher")
    assert parent.state == "completed"
    (child,) = engine.instances(parent_instance_id=parent.id)
    for _ in range(3):
        engine.run_jobs()
        engine.clock.advance(seconds=11)  # type: ignore[attr-defined]
    assert len(engine.incidents(instance_id=child.id)) == 1
    assert engine.instance(parent.id).state == "completed"


def test_completion_condition_must_be_boolean(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><userTask id="t"><multiInstanceLoopCharacteristics><loopCardinality>2</loopCardinality>'
        '<completionCondition>${"yes"}</completionCondition></multiInstanceLoopCharacteristics></userTask>'
        '<endEvent id="e"/>' + chain("s", "t", "e")
    ))
    inst = engine.start("p")
    with pytest.raises(ExecutionError, match="true or false"):
        engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
