"""Element limits (seed 004): timeout and max concurrent executions, with real worker threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bpmnlite import Engine, TaskContext, hookimpl

from ..bpmn import bpmn, chain
from ..conftest import _truncate
from .test_workers import wait_for


class Slow:
    """A task type that takes ``seconds`` and records how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.done = 0

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"slow": self.run}

    def run(self, ctx: TaskContext) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            deadline = time.monotonic() + float(ctx.get("seconds", 0.2))
            while time.monotonic() < deadline:  # real work takes time; Dramatiq may interrupt it
                time.sleep(0.01)
        finally:
            with self.lock:
                self.running -= 1
                self.done += 1


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[tuple[Engine, Slow]]:
    _truncate(pg_url)
    slow = Slow()
    eng = Engine(pg_url, plugins=[slow], load_entry_points=False)
    yield eng, slow
    eng.close()


def test_max_concurrent_executions(pg_engine: tuple[Engine, Slow]) -> None:
    engine, slow = pg_engine
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="make" bpmnlite:type="slow" bpmnlite:async="true" '
        'bpmnlite:maxConcurrent="2"/><endEvent id="e"/>' + chain("s", "make", "e")
    ))
    ids = [engine.start("p", {"seconds": 0.3}).id for _ in range(6)]
    with engine.worker(threads=6):
        wait_for(lambda: all(engine.instance(i).state == "completed" for i in ids), 120, "six instances")
    assert slow.done == 6
    assert slow.peak == 2


def test_timeout_stops_the_job_and_counts_as_a_failure(pg_engine: tuple[Engine, Slow]) -> None:
    engine, slow = pg_engine
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="make" bpmnlite:type="slow" bpmnlite:async="true" '
        'bpmnlite:timeout="PT0.5S" bpmnlite:retries="1"/><endEvent id="e"/>' + chain("s", "make", "e")
    ))
    inst = engine.start("p", {"seconds": 30})
    started = time.monotonic()
    with engine.worker(threads=1):
        wait_for(lambda: bool(engine.incidents()), 60, "the timed-out job to become an incident")
    assert time.monotonic() - started < 25  # interrupted long before the handler's 30 s
    (incident,) = engine.incidents()
    assert incident.error_message == "step 'make' timed out"
    assert "timed out" in (incident.error_detail or "")
    assert engine.instance(inst.id).active_elements == ("make",)


def test_max_queue_holds_under_concurrent_starts(pg_engine: tuple[Engine, Slow]) -> None:
    engine, _slow = pg_engine
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="make" bpmnlite:type="slow" bpmnlite:async="true" bpmnlite:maxQueue="2"/>'
        '<boundaryEvent id="full" attachedToRef="make"><errorEventDefinition errorRef="qf"/></boundaryEvent>'
        '<endEvent id="e"/><endEvent id="rejected"/>'
        '<sequenceFlow id="f1" sourceRef="s" targetRef="make"/><sequenceFlow id="f2" sourceRef="make" targetRef="e"/>'
        '<sequenceFlow id="f3" sourceRef="full" targetRef="rejected"/>',
        extra='<error id="qf" errorCode="QueueFull"/>',
    ))
    barrier = threading.Barrier(8)
    states: list[str] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait(30)
        info = engine.start("p", {"seconds": 0})
        with lock:
            states.append(info.state)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert sorted(states) == ["completed"] * 6 + ["waiting"] * 2
    assert len(engine.jobs()) == 2


def test_the_worker_applies_the_time_limit_whoever_sent_the_message(pg_url: str) -> None:
    _truncate(pg_url)
    deployer = Engine(pg_url, plugins=[Slow()], load_entry_points=False)
    deployer.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="make" bpmnlite:type="slow" bpmnlite:async="true" '
        'bpmnlite:timeout="PT0.5S" bpmnlite:retries="1"/><endEvent id="e"/>' + chain("s", "make", "e")
    ))
    inst = deployer.start("p", {"seconds": 30})
    deployer.close()
    worker_engine = Engine(pg_url, plugins=[Slow()], load_entry_points=False)  # has never seen the model
    with worker_engine.worker(threads=1):
        wait_for(lambda: bool(worker_engine.incidents()), 60, "the timed-out job to become an incident")
    assert worker_engine.incidents()[0].error_message == "step 'make' timed out"
    assert worker_engine.instance(inst.id).active_elements == ("make",)
    worker_engine.close()


def test_a_time_limit_replaced_by_another_error_is_still_recognised() -> None:
    from dramatiq.middleware.time_limit import TimeLimitExceeded

    from bpmnlite.dispatch import is_time_limit

    try:
        try:
            raise TimeLimitExceeded()
        except TimeLimitExceeded:
            raise RuntimeError("can't change 'autocommit' now") from None
    except RuntimeError as replaced:
        assert is_time_limit(replaced)
    assert not is_time_limit(RuntimeError("plain failure"))


def test_parallel_children_completing_together_never_replay_their_work(pg_url: str) -> None:
    """Children of a multi-instance call activity finish in parallel jobs; each child's work runs once."""
    from ..conftest import Recorder

    _truncate(pg_url)
    recorder = Recorder()
    engine = Engine(pg_url, plugins=[recorder], load_entry_points=False)
    engine.deploy(bpmn('<startEvent id="cs" bpmnlite:async="true"/><serviceTask id="work" bpmnlite:type="record"/>'
                       '<endEvent id="ce"/>' + chain("cs", "work", "ce"), "child"))
    engine.deploy(bpmn('<startEvent id="s"/><callActivity id="each" calledElement="child">'
                       '<multiInstanceLoopCharacteristics camunda:collection="items" camunda:elementVariable="item"/>'
                       '</callActivity><endEvent id="e"/>' + chain("s", "each", "e"), "parent"))
    parent = engine.start("parent", {"items": list(range(8))})
    with engine.worker(threads=4):
        wait_for(lambda: engine.instance(parent.id).state == "completed", 120, "the parent to complete")
    assert recorder.calls == ["work"] * 8
    assert engine.jobs() == [] and engine.incidents() == []
    engine.close()
