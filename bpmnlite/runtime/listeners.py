"""Execution listeners from Camunda/Flowable models (``executionListener`` extensions).

A listener runs when a token starts (``start``) or leaves (``end``) an
element. It is an expression (``${execution.setVariable('x', true)}``) or a
Java class / delegate expression mapped through the engine's ``class_map`` to a
registered task handler, which gets the same context as a service task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bpmnlite.context import TaskContext
from bpmnlite.errors import ExecutionError
from bpmnlite.model import ExtensionElement, FlowNode
from bpmnlite.runtime.state import Instance, Token

if TYPE_CHECKING:
    from bpmnlite.runtime.runner import Runner

LISTENER_TAGS = ("camunda:executionListener", "flowable:executionListener", "activiti:executionListener",
                 "bpmnlite:executionListener")


def execution_listeners(node: FlowNode, event: str) -> list[ExtensionElement]:
    return [
        ext for ext in node.extensions
        if ext.tag in LISTENER_TAGS and (ext.attributes.get("event") or "start") == event
    ]


def listener_target(ext: ExtensionElement) -> tuple[str, str] | None:
    """(kind, text): ``expression``, ``class`` or ``delegateExpression``; None for unsupported forms."""
    for kind in ("expression", "class", "delegateExpression"):
        value = ext.attributes.get(kind)
        if value:
            return kind, value.strip()
    return None


def fire(runner: Runner, inst: Instance, token: Token, node: FlowNode, event: str) -> None:
    for ext in execution_listeners(node, event):
        target = listener_target(ext)
        if target is None:
            raise ExecutionError("execution listener without expression, class or delegateExpression",
                                 element_id=node.id, instance_id=inst.id)
        kind, text = target
        if kind == "expression":
            runner.evaluate(inst, token, text, node)
            continue
        handler = runner.env.listener_handler(text, node)

        def write(name: str, value: Any) -> None:
            runner.set_variable(inst, token, name, value, node.id)

        handler(TaskContext(
            element=node, instance_id=inst.id, business_key=inst.business_key,
            idempotency_key=f"{inst.id}:{token.activity_id or token.id}:{event}",
            variables=inst.view(token), write=write,
        ))
