"""Conformance: every model in shared/corpus/public reaches the outcome its MANIFEST.md states.

The files are unmodified public test data (licenses in shared/corpus/public/LICENSES:
Apache-2.0 for camunda-bpm-platform, camunda-bpm-examples and flowable-engine,
LGPL-3.0 for the SpiffWorkflow data files, MIT for bpmn-io/bpmn-js-examples).
Java classes and delegate beans named by the models are stood in for by the
small plugin below, mapped through ``class_map`` as a user would.

One case per file; ``test_every_public_file_has_a_case`` fails if a file is
added to the corpus without one, so none is skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bpmnlite import Engine, ExecutionError, ModelError, TaskContext, hookimpl

from .conftest import SHARED, Clock

PUBLIC = SHARED / "corpus" / "public"


class JavaStandIns:
    """What the upstream Java stubs do, as bpmnlite task handlers."""

    def __init__(self) -> None:
        self.said_hello = 0

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"test-async-listener": self.async_listener, "test-say-hello": self.say_hello}

    def async_listener(self, ctx: TaskContext) -> None:
        ctx.set("listener", "listener invoked")  # org.camunda.bpm.engine.test.bpmn.async.AsyncListener

    def say_hello(self, ctx: TaskContext) -> None:
        self.said_hello += 1  # SayHelloDelegate only logs


CLASS_MAP = {
    "org.camunda.bpm.engine.test.bpmn.async.AsyncListener": "test-async-listener",
    "sayHelloDelegate": "test-say-hello",
}


@pytest.fixture
def corpus_engine(db_url: str, clock: Clock) -> Iterator[tuple[Engine, JavaStandIns]]:
    if not PUBLIC.is_dir():
        pytest.fail(f"the public corpus is missing: expected it at {PUBLIC} (shared/ beside the checkout)")
    stand_ins = JavaStandIns()
    eng = Engine(db_url, plugins=[stand_ins], class_map=CLASS_MAP, clock=clock)
    try:
        yield eng, stand_ins
    finally:
        eng.close()


def tasks_at(engine: Engine, instance_id: str) -> list[str]:
    return sorted(t.element_id for t in engine.tasks(instance_id=instance_id))


def case_async_exclusive_gateway(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "camunda-bpm-platform/AsyncTaskTest.testAsyncExclusiveGateway.bpmn20.xml")
    inst = engine.start("asyncExclusiveGateway", {"flow": False})
    assert len(engine.jobs(instance_id=inst.id)) == 1
    assert "listener" not in inst.variables
    assert engine.tasks(instance_id=inst.id) == []
    engine.run_jobs()
    after = engine.instance(inst.id)
    assert after.variables["listener"] == "listener invoked"
    assert engine.jobs(instance_id=inst.id) == []
    assert tasks_at(engine, inst.id) == ["userTask1"]
    assert engine.complete_task(engine.tasks(instance_id=inst.id)[0].id).state == "completed"


def case_async_after_catch_event(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "camunda-bpm-platform/AsyncAfterTest.testAsyncAfterIntermediateCatchEvent.bpmn20.xml")
    inst = engine.start("testIntermediateCatchEvent")
    assert inst.active_elements == ("intermediateCatchEvent",)
    after = engine.correlate_message("testMessage1")
    assert after.variables == {"listenerStartInvoked": True, "listenerEndInvoked": True}
    assert len(engine.jobs(instance_id=inst.id)) == 1
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"


def case_async_subprocess_start(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "camunda-bpm-platform/AsyncStartEventTest.testAsyncSubProcessStartEvent.bpmn")
    inst = engine.start("process")
    assert engine.tasks(instance_id=inst.id) == []
    assert inst.active_elements == ("StartEvent_2",)
    jobs = engine.jobs(instance_id=inst.id)
    assert [j.element_id for j in jobs] == ["StartEvent_2"]
    engine.run_jobs()
    assert "StartEvent_2" not in engine.instance(inst.id).active_elements
    assert tasks_at(engine, inst.id) == ["UserTask_1"]


def case_flowable_parallel_async(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "flowable-engine/ParallelGatewayTest.testAsyncBehavior.bpmn20.xml")
    inst = engine.start("async")
    assert inst.state == "waiting"
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"
    visited = [a.element_id for a in engine.history(inst.id)]
    assert visited.count("task1") == visited.count("task2") == 1
    assert visited.count("end1") == 1  # the join fired once


def case_flowable_async_start(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "flowable-engine/NoneStartEventActivityBehaviorTest.asyncStartEvent.bpmn20.xml")
    inst = engine.start("asyncNoneStartEvent")
    assert inst.state == "waiting" and inst.active_elements == ("theStart",)
    assert len(engine.jobs(instance_id=inst.id)) == 1
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"


def case_flowable_async_leave(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "flowable-engine/AsyncLeaveTest.testParallelGatewayAsyncLeave.bpmn20.xml")
    inst = engine.start("process", {"input": 2})
    assert engine.tasks(instance_id=inst.id) == []
    assert len(engine.jobs(instance_id=inst.id)) == 1  # flowable:asyncLeave: one job for the leave
    engine.run_jobs()
    assert len(engine.tasks(instance_id=inst.id)) == 2  # conditions on a parallel gateway are ignored


def case_spiff_no_default(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "spiffworkflow/exclusive_gateway_no_default.bpmn")
    with pytest.raises(ExecutionError) as err:
        engine.start("NoDefaultGateway", {"x": 1})
    assert err.value.element_id == "Gateway_CheckValue"
    for x, passed in ((2, "Activity_Greater"), (0, "Activity_Less")):
        inst = engine.start("NoDefaultGateway", {"x": x})
        assert inst.state == "completed"
        visited = [a.element_id for a in engine.history(inst.id)]
        assert passed in visited
        ends = [a for a in engine.history(inst.id) if a.element_kind == "endEvent"]
        assert len(ends) == 1


def case_spiff_boundary_timer(engine: Engine, _s: JavaStandIns, clock: Clock) -> None:
    engine.deploy(PUBLIC / "spiffworkflow/boundary_timer_on_task.bpmn")
    inst = engine.start("test_timer")
    assert inst.variables == {"timer_called": False}
    assert tasks_at(engine, inst.id) == ["user_task"]
    clock.advance(seconds=0.01)
    assert engine.fire_due_timers() == 1
    mid = engine.instance(inst.id)
    assert mid.variables == {"timer_called": True}
    assert tasks_at(engine, inst.id) == ["user_task"]
    assert engine.complete_task(engine.tasks(instance_id=inst.id)[0].id).state == "completed"


def case_spiff_loop_into_join(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    # bpmnlite keeps the BPMN rule (a parallel join waits for every incoming flow), so this
    # model would wait forever on its first pass; it is refused at deploy time, naming the join.
    with pytest.raises(ModelError) as err:
        engine.deploy(PUBLIC / "spiffworkflow/gateway_loop_input.bpmn")
    assert [p.element_id for p in err.value.problems] == ["parallel"]
    assert "loop-back" in err.value.problems[0].message


def case_camunda_sample(engine: Engine, stand_ins: JavaStandIns, _c: Clock) -> None:
    engine.deploy(PUBLIC / "camunda-bpm-examples/sample.bpmn")
    inst = engine.start("Sample")
    assert tasks_at(engine, inst.id) == ["UserTask_1"]
    after = engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert after.active_elements == ("ServiceTask_1",)
    assert [j.element_id for j in engine.jobs(instance_id=inst.id)] == ["ServiceTask_1"]
    assert stand_ins.said_hello == 0
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"
    assert stand_ins.said_hello == 1


def case_pizza_collaboration(engine: Engine, _s: JavaStandIns, _c: Clock) -> None:
    deployment = engine.deploy(PUBLIC / "bpmn-js-examples/pizza-collaboration.bpmn")
    assert {d.key for d in deployment.definitions} == {"_6-1", "_6-2"}
    assert not any(d.executable for d in deployment.definitions)
    defs = engine.validate(PUBLIC / "bpmn-js-examples/pizza-collaboration.bpmn")
    assert len(defs.collaborations[0].participants) == 2
    assert len(defs.collaborations[0].message_flows) == 6
    assert defs.diagrams and defs.diagrams[0].shapes
    with pytest.raises(ModelError, match="not executable"):
        engine.start("_6-1")


CASES: dict[str, Callable[[Engine, JavaStandIns, Clock], None]] = {
    "camunda-bpm-platform/AsyncTaskTest.testAsyncExclusiveGateway.bpmn20.xml": case_async_exclusive_gateway,
    "camunda-bpm-platform/AsyncAfterTest.testAsyncAfterIntermediateCatchEvent.bpmn20.xml": case_async_after_catch_event,
    "camunda-bpm-platform/AsyncStartEventTest.testAsyncSubProcessStartEvent.bpmn": case_async_subprocess_start,
    "flowable-engine/ParallelGatewayTest.testAsyncBehavior.bpmn20.xml": case_flowable_parallel_async,
    "flowable-engine/NoneStartEventActivityBehaviorTest.asyncStartEvent.bpmn20.xml": case_flowable_async_start,
    "flowable-engine/AsyncLeaveTest.testParallelGatewayAsyncLeave.bpmn20.xml": case_flowable_async_leave,
    "spiffworkflow/exclusive_gateway_no_default.bpmn": case_spiff_no_default,
    "spiffworkflow/boundary_timer_on_task.bpmn": case_spiff_boundary_timer,
    "spiffworkflow/gateway_loop_input.bpmn": case_spiff_loop_into_join,
    "camunda-bpm-examples/sample.bpmn": case_camunda_sample,
    "bpmn-js-examples/pizza-collaboration.bpmn": case_pizza_collaboration,
}


def _public_files() -> list[str]:
    files = [p for p in PUBLIC.rglob("*") if p.suffix in (".bpmn", ".xml") and "LICENSES" not in p.parts]
    return sorted(str(p.relative_to(PUBLIC)) for p in files)


def test_every_public_file_has_a_case() -> None:
    assert PUBLIC.is_dir(), f"the public corpus is missing at {PUBLIC}"
    files = _public_files()
    assert files, "no model found in the public corpus"
    assert sorted(CASES) == files


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_model_outcome(name: str, corpus_engine: tuple[Engine, JavaStandIns], clock: Clock) -> None:
    engine, stand_ins = corpus_engine
    assert (PUBLIC / name).is_file(), f"{name} is missing from the corpus"
    CASES[name](engine, stand_ins, clock)


def test_manifest_lists_every_case() -> None:
    manifest = (PUBLIC / "MANIFEST.md").read_text(encoding="utf-8")
    for name in CASES:
        assert f"`{name}`" in manifest, name
    assert Path(__file__).name == "test_corpus.py"
