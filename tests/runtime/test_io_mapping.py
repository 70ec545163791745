"""Camunda input/output parameters: local inputs at the activity, outputs to the enclosing scope."""

from __future__ import annotations

import pytest

from bpmnlite import Engine, ModelError

from ..bpmn import bpmn, chain

IO = """
<extensionElements><camunda:inputOutput>
  <camunda:inputParameter name="doubled">${amount * 2}</camunda:inputParameter>
  <camunda:inputParameter name="greeting">Hello ${name}!</camunda:inputParameter>
  <camunda:inputParameter name="label">constant text</camunda:inputParameter>
  <camunda:inputParameter name="items"><camunda:list><camunda:value>a</camunda:value><camunda:value>${name}</camunda:value></camunda:list></camunda:inputParameter>
  <camunda:inputParameter name="headers"><camunda:map><camunda:entry key="x-id">${amount}</camunda:entry></camunda:map></camunda:inputParameter>
  <camunda:outputParameter name="total">${doubled + 1}</camunda:outputParameter>
</camunda:inputOutput></extensionElements>
"""


def test_inputs_are_local_and_outputs_reach_the_process(engine: Engine) -> None:
    engine.deploy(bpmn(
        f'<startEvent id="s"/><scriptTask id="calc">{IO}<script>seen = [doubled, greeting, label, items, headers]'
        '</script></scriptTask><endEvent id="e"/>' + chain("s", "calc", "e")
    ))
    inst = engine.start("p", {"amount": 20, "name": "Ann"})
    assert inst.variables == {
        "amount": 20,
        "name": "Ann",
        "seen": [40, "Hello Ann!", "constant text", ["a", "Ann"], {"x-id": 20}],
        "total": 41,
    }  # the inputs themselves stayed local to the task


def test_a_user_task_sees_its_inputs_until_it_completes(engine: Engine) -> None:
    engine.deploy(bpmn(
        '<startEvent id="s"/><userTask id="review"><extensionElements><camunda:inputOutput>'
        '<camunda:inputParameter name="limit">${amount * 10}</camunda:inputParameter>'
        '<camunda:outputParameter name="approved_limit">${limit}</camunda:outputParameter>'
        '</camunda:inputOutput></extensionElements></userTask><endEvent id="e"/>' + chain("s", "review", "e")
    ))
    inst = engine.start("p", {"amount": 3})
    assert "limit" not in inst.variables
    done = engine.complete_task(engine.tasks(instance_id=inst.id)[0].id)
    assert done.variables == {"amount": 3, "approved_limit": 30}


def test_script_parameters_are_refused_at_deploy(engine: Engine) -> None:
    with pytest.raises(ModelError, match="script values of input/output parameters are not supported"):
        engine.deploy(bpmn(
            '<startEvent id="s"/><task id="t"><extensionElements><camunda:inputOutput><camunda:inputParameter name="x">'
            '<camunda:script scriptFormat="groovy">1</camunda:script></camunda:inputParameter>'
            '</camunda:inputOutput></extensionElements></task><endEvent id="e"/>' + chain("s", "t", "e")
        ))


def test_a_bad_parameter_expression_is_refused_at_deploy(engine: Engine) -> None:
    with pytest.raises(ModelError) as err:
        engine.deploy(bpmn(
            '<startEvent id="s"/><task id="t"><extensionElements><camunda:inputOutput>'
            '<camunda:inputParameter name="x">${amount &gt;}</camunda:inputParameter>'
            '</camunda:inputOutput></extensionElements></task><endEvent id="e"/>' + chain("s", "t", "e")
        ))
    assert [p.element_id for p in err.value.problems] == ["t"]
