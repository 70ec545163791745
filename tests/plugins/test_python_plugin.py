"""The ``python`` task type: application functions, limited to allowed modules."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator

import bpmnlite_python
import pytest
from bpmnlite_python import PythonTaskPlugin, PythonTaskRefused

from bpmnlite import Engine, ExecutionError, ModelError

from ..bpmn import bpmn, chain, flow
from ..conftest import Clock
from . import sample_tasks

MODULE = "tests.plugins.sample_tasks"


@pytest.fixture
def plugin() -> PythonTaskPlugin:
    return PythonTaskPlugin(allowed_modules=("tests.plugins.",))


@pytest.fixture
def engine(db_url: str, clock: Clock, plugin: PythonTaskPlugin) -> Iterator[Engine]:
    eng = Engine(db_url, plugins=[plugin], load_entry_points=False, clock=clock)
    try:
        yield eng
    finally:
        eng.close()


def one_task(task: str, *, boundary: str = "", extra: str = "") -> str:
    return bpmn('<startEvent id="s"/>' + task + '<endEvent id="e"/>' + boundary + chain("s", "call", "e"), extra=extra)


def python_task(function: str, more: str = "") -> str:
    return one_task(f'<serviceTask id="call" bpmnlite:type="python" bpmnlite:function="{function}" {more}/>')


def test_the_entry_point_instance_allows_nothing_and_says_how_to_allow() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bpmnlite")}
    assert names.get("python-task") == "bpmnlite_python:plugin"
    assert bpmnlite_python.plugin.allowed_modules == ()

    with pytest.raises(PythonTaskRefused) as caught:
        bpmnlite_python.plugin.resolve(f"{MODULE}:charge")

    message = str(caught.value)
    assert f"module '{MODULE}' is not allowed for python tasks (allowed: none)" in message
    assert f"bpmnlite_python.plugin.allowed_modules = ('{MODULE}',)" in message


def test_a_returned_dict_becomes_variables(engine: Engine) -> None:
    engine.deploy(python_task(f"{MODULE}:charge"))

    inst = engine.start("p", {"amount": 50})

    assert inst.state == "completed"
    assert (inst.variables["charged"], inst.variables["fee"]) == (50, 10.0)
    assert sample_tasks.calls[-1].startswith(inst.id)


def test_another_result_goes_to_the_result_variable(engine: Engine) -> None:
    engine.deploy(python_task(f"{MODULE}:answer", 'camunda:resultVariable="answer"'))

    assert engine.start("p").variables["answer"] == 42


def test_a_function_field_a_static_method_and_the_element_config(engine: Engine) -> None:
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="python" bpmnlite:template="reminder"><extensionElements>'
        f'<camunda:field name="function" stringValue="{MODULE}:Invoices.send"/>'
        "</extensionElements></serviceTask>"
    ))

    assert engine.start("p").variables["invoiced"] == "reminder"


def test_a_bpmn_error_raised_by_the_function_reaches_a_boundary_event(engine: Engine) -> None:
    engine.deploy(one_task(
        f'<serviceTask id="call" bpmnlite:type="python" bpmnlite:function="{MODULE}:charge"/>',
        boundary='<boundaryEvent id="over" attachedToRef="call"><errorEventDefinition errorRef="limit"/>'
        '</boundaryEvent><endEvent id="refused"/>' + flow("over", "refused"),
        extra='<error id="limit" errorCode="LIMIT"/>',
    ))

    inst = engine.start("p", {"amount": 5000})

    assert "refused" in [a.element_id for a in engine.history(inst.id)]
    assert inst.variables["limit"] == 1000


def test_an_exception_of_the_function_is_a_technical_failure(engine: Engine) -> None:
    engine.deploy(python_task(f"{MODULE}:explode"))

    with pytest.raises(ExecutionError, match="card reader on fire") as caught:
        engine.start("p")

    assert caught.value.element_id == "call"
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("os:system", "module 'os' is not allowed for python tasks (allowed: 'tests.plugins.')"),
        ("tests.pluginsevil:run", "module 'tests.pluginsevil' is not allowed"),
        (f"{MODULE}:os.system", "no 'os'"),  # sample_tasks does not import os itself
        (f"{MODULE}:getcwd", "is defined in module 'posix', which is not allowed"),
        (f"{MODULE}:_helper", "no names starting with '_'"),
        (f"{MODULE}:RATE", "is a float, not a callable"),
        (f"{MODULE}:missing", f"module '{MODULE}' has no 'missing'"),
        ("tests.plugins.nothing_here:run", "cannot import module 'tests.plugins.nothing_here'"),
        (f"{MODULE}.charge", "write 'package.module:function'"),
        ("", "needs bpmnlite:function"),
    ],
)
def test_a_refused_function_fails_naming_the_element_and_the_module(
    engine: Engine, function: str, message: str
) -> None:
    # what can be known without importing (module allow-list, the target's form) is refused at deploy
    # time by the plugin's bpmnlite_check_element; the rest when the task runs
    try:
        engine.deploy(python_task(function))
    except ModelError as refused:
        (problem,) = refused.problems
        assert problem.element_id == "call"
        assert message in problem.message
        return

    with pytest.raises(ExecutionError, match="element 'call': ") as caught:
        engine.start("p", {"amount": 1})

    assert message in str(caught.value)
    assert caught.value.element_id == "call"
    assert isinstance(caught.value.__cause__, PythonTaskRefused)


def test_a_module_outside_the_allow_list_is_refused_at_deploy(engine: Engine) -> None:
    with pytest.raises(ModelError) as refused:
        engine.deploy(python_task("os:system"))
    assert [p.element_id for p in refused.value.problems] == ["call"]
    assert engine.definitions() == []


def test_a_module_reached_through_an_attribute_is_refused(plugin: PythonTaskPlugin) -> None:
    with pytest.raises(PythonTaskRefused, match="reaches module 'tests.plugins.sample_tasks' through an attribute"):
        plugin.resolve("tests.plugins:sample_tasks.charge")


def test_a_refused_module_is_never_imported() -> None:
    assert "this" not in sys.modules  # importing it prints the Zen of Python
    with pytest.raises(PythonTaskRefused):
        PythonTaskPlugin(allowed_modules=("myapp.",)).resolve("this:s")
    assert "this" not in sys.modules


def test_the_allow_list_can_be_changed_on_the_shared_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpmnlite_python.plugin, "allowed_modules", (MODULE,))

    assert bpmnlite_python.plugin.resolve(f"{MODULE}:answer") is sample_tasks.answer


def test_check_finds_refused_functions_before_deploying(engine: Engine, plugin: PythonTaskPlugin) -> None:
    model = bpmn(
        '<startEvent id="s"/>'
        f'<serviceTask id="ok" bpmnlite:type="python" bpmnlite:function="{MODULE}:answer"/>'
        '<serviceTask id="bad" bpmnlite:type="python" bpmnlite:function="subprocess:run"/>'
        '<endEvent id="e"/>' + chain("s", "ok", "bad", "e")
    )

    with pytest.raises(ModelError):  # the engine refuses it at deploy time too
        engine.validate(model)
    from bpmnlite.parser import parse

    problems = plugin.check(parse(model))

    assert [(p.element_id, p.line) for p in problems] == [("bad", 5)]  # the body is on line 5
    assert "module 'subprocess' is not allowed" in problems[0].message
