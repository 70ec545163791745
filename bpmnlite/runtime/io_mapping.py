"""Camunda's input/output parameters (``camunda:inputOutput``) on activities.

Input parameters become variables local to the activity when it starts, so
its handler, script or user task sees them, and they vanish when it ends.
Output parameters are evaluated when it ends (locals still visible) and
written to the enclosing scope with Camunda's rule. A parameter's value is an
expression when it contains ``${`` or ``#{``, a constant string otherwise, or
a ``camunda:list`` / ``camunda:map`` of such values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bpmnlite.errors import ExecutionError
from bpmnlite.model import ExtensionElement, FlowNode
from bpmnlite.runtime.state import Instance, Token

if TYPE_CHECKING:
    from bpmnlite.runtime.runner import Runner

IO_TAGS = frozenset({"camunda:inputOutput"})


def parameters(node: FlowNode, kind: str) -> list[ExtensionElement]:
    """``inputParameter`` or ``outputParameter`` elements of a node, in document order."""
    out: list[ExtensionElement] = []
    for ext in node.extensions:
        if ext.tag in IO_TAGS:
            out.extend(c for c in ext.children if c.tag.endswith(f":{kind}"))
    return out


def has_mapping(node: FlowNode) -> bool:
    return any(ext.tag in IO_TAGS for ext in node.extensions)


def expressions_in(param: ExtensionElement) -> list[str]:
    """Every expression a parameter holds (checked at deploy time)."""
    found: list[str] = []
    text = (param.text or "").strip()
    if "${" in text or "#{" in text:
        found.append(text)
    for child in param.children:
        found.extend(expressions_in(child))
    return found


def unsupported(param: ExtensionElement) -> str | None:
    """Why a parameter cannot run, or None."""
    for child in param.children:
        if child.tag.endswith(":script"):
            return "script values of input/output parameters are not supported; use an expression"
        reason = unsupported(child)
        if reason:
            return reason
    return None


def _value(runner: Runner, inst: Instance, token: Token, node: FlowNode, param: ExtensionElement) -> Any:
    if param.children:
        container = param.children[0]
        if container.tag.endswith(":list"):
            return [_value(runner, inst, token, node, item) for item in container.children]
        if container.tag.endswith(":map"):
            return {
                entry.attributes.get("key", ""): _value(runner, inst, token, node, entry)
                for entry in container.children
            }
        raise ExecutionError(f"unsupported parameter value <{container.tag}>", element_id=node.id)
    text = (param.text or "").strip()
    if "${" in text or "#{" in text:
        return runner.evaluate(inst, token, text, node)
    return text if param.text is not None else None


def apply_inputs(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    """Give the activity's token its local input variables."""
    values = {p.attributes.get("name", ""): _value(runner, inst, token, node, p) for p in parameters(node, "inputParameter")}
    if values:
        token.local = {**(token.local or {}), **values}


def apply_outputs(runner: Runner, inst: Instance, token: Token, node: FlowNode) -> None:
    """Write the activity's output parameters to its enclosing scope."""
    scope = inst.tokens.get(token.parent_id) if token.parent_id else None
    for param in parameters(node, "outputParameter"):
        value = _value(runner, inst, token, node, param)
        runner.set_variable(inst, scope, param.attributes.get("name", ""), value, node.id)
