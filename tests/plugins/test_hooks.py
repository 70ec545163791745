"""The engine's hooks as a plugin author sees them: listeners, deploy checks, replacing a plugin."""

from __future__ import annotations

from typing import Any

import pytest

from bpmnlite import Engine, ModelError, TaskContext, hookimpl
from bpmnlite.model import FlowNode

from ..bpmn import bpmn, chain

MODEL = bpmn(
    '<startEvent id="s"/><serviceTask id="work" bpmnlite:type="flaky" bpmnlite:async="true" bpmnlite:retries="2"/>'
    '<endEvent id="e"/>' + chain("s", "work", "e")
)


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"flaky": self.flaky}

    def flaky(self, ctx: TaskContext) -> None:
        raise RuntimeError("remote system down")

    @hookimpl
    def bpmnlite_instance_started(self, process_key: str) -> None:
        self.events.append(("started", process_key))

    @hookimpl
    def bpmnlite_activity_started(self, element_id: str) -> None:
        self.events.append(("activity", element_id))

    @hookimpl
    def bpmnlite_job_failed(self, element_id: str, retries_left: int, error: str) -> None:
        self.events.append(("failed", (element_id, retries_left, error)))

    @hookimpl
    def bpmnlite_incident_raised(self, error: str) -> None:
        self.events.append(("incident", error))

    @hookimpl
    def bpmnlite_instance_ended(self, state: str) -> None:
        self.events.append(("ended", state))


def test_listeners_see_the_life_of_an_instance(db_url: str) -> None:
    from ..conftest import Clock

    clock = Clock()
    listener = Listener()
    engine = Engine(db_url, plugins=[listener], load_entry_points=False, clock=clock)
    engine.deploy(MODEL)
    inst = engine.start("p")
    engine.run_jobs()
    clock.advance(seconds=11)
    engine.run_jobs()
    assert listener.events[:3] == [("started", "p"), ("activity", "s"), ("activity", "work")]
    failures = [e for kind, e in listener.events if kind == "failed"]
    error = "ExecutionError: element 'work': RuntimeError: remote system down"
    assert failures == [("work", 1, error), ("work", 0, error)]
    assert ("incident", error) in listener.events
    engine.cancel(inst.id)
    assert listener.events[-1] == ("ended", "cancelled")
    engine.close()


class Checker:
    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"needs-url": lambda ctx: None}

    @hookimpl
    def bpmnlite_check_element(self, element: FlowNode, task_type: str | None) -> list[str]:
        if task_type == "needs-url" and "bpmnlite:url" not in element.attributes:
            return ["task type 'needs-url' needs bpmnlite:url"]
        return []


def test_plugins_check_elements_at_deploy_time(tmp_path: Any) -> None:
    engine = Engine(f"sqlite:///{tmp_path / 'x.db'}", plugins=[Checker()], load_entry_points=False)
    with pytest.raises(ModelError) as err:
        engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="call" bpmnlite:type="needs-url"/><endEvent id="e"/>'
                           + chain("s", "call", "e")))
    assert [(p.element_id, p.message) for p in err.value.problems] == [
        ("call", "task type 'needs-url' needs bpmnlite:url")
    ]
    engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="call" bpmnlite:type="needs-url" bpmnlite:url="x"/>'
                       '<endEvent id="e"/>' + chain("s", "call", "e")))


def test_bad_timeout_is_refused_at_deploy(tmp_path: Any) -> None:
    engine = Engine(f"sqlite:///{tmp_path / 'x.db'}", plugins=[Checker()], load_entry_points=False)
    with pytest.raises(ModelError, match="not an ISO 8601 duration"):
        engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="t" bpmnlite:type="needs-url" bpmnlite:url="u" '
                           'bpmnlite:timeout="5" bpmnlite:async="true"/><endEvent id="e"/>' + chain("s", "t", "e")))


def test_an_explicit_plugin_replaces_the_installed_one(tmp_path: Any) -> None:
    class MyMail:
        @hookimpl
        def bpmnlite_task_types(self) -> dict[str, Any]:
            return {"mail": self.send}

        def send(self, ctx: TaskContext) -> None:
            ctx.set("sent_by", "mine")

    engine = Engine(f"sqlite:///{tmp_path / 'x.db'}", plugins=[MyMail()])
    assert "http" in engine.plugins.known_task_types()  # the other installed plugins are still there
    engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="m" bpmnlite:type="mail"/><endEvent id="e"/>'
                       + chain("s", "m", "e")))
    assert engine.start("p").variables == {"sent_by": "mine"}


def test_bpmnlite_result_variable(tmp_path: Any) -> None:
    class Answer:
        @hookimpl
        def bpmnlite_task_types(self) -> dict[str, Any]:
            return {"answer": lambda ctx: 42}

    engine = Engine(f"sqlite:///{tmp_path / 'x.db'}", plugins=[Answer()], load_entry_points=False)
    engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="a" bpmnlite:type="answer" '
                       'bpmnlite:resultVariable="out"/><endEvent id="e"/>' + chain("s", "a", "e")))
    assert engine.start("p").variables == {"out": 42}


def test_check_element_may_return_one_string(tmp_path: Any) -> None:
    class One:
        @hookimpl
        def bpmnlite_task_types(self) -> dict[str, Any]:
            return {"one": lambda ctx: None}

        @hookimpl
        def bpmnlite_check_element(self, task_type: str | None) -> str | None:
            return "needs url" if task_type == "one" else None

    engine = Engine(f"sqlite:///{tmp_path / 'x.db'}", plugins=[One()], load_entry_points=False)
    with pytest.raises(ModelError) as err:
        engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="a" bpmnlite:type="one"/><endEvent id="e"/>'
                           + chain("s", "a", "e")))
    assert [p.message for p in err.value.problems] == ["needs url"]
