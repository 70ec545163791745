"""Every error bpmnlite raises on purpose.

Each carries enough to act on it: the element id, the line in the model when
known, and a message a user can read. A CLI prints ``str(error)``; it never
needs a traceback to explain what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class BpmnliteError(Exception):
    """Base class of every error raised by bpmnlite."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a model: where (element id, line) and what."""

    message: str
    element_id: str | None = None
    line: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.line:
            where.append(f"line {self.line}")
        if self.element_id:
            where.append(f"element '{self.element_id}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class ModelError(BpmnliteError):
    """A model cannot be parsed, validated or executed.

    ``problems`` lists every problem found, not only the first one.
    """

    def __init__(self, problems: Iterable[Problem], summary: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        self.summary = summary or f"invalid model: {len(self.problems)} problem(s)"
        lines = [self.summary] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ExpressionError(BpmnliteError):
    """An expression or condition is invalid or failed to evaluate."""

    def __init__(
        self, message: str, *, expression: str | None = None, element_id: str | None = None, line: int | None = None
    ) -> None:
        self.expression = expression
        self.element_id = element_id
        self.line = line
        where = f"element '{element_id}'" if element_id else None
        if where and line:
            where += f" (line {line})"
        text = message if not where else f"{where}: {message}"
        if expression is not None:
            text += f" [expression: {expression}]"
        super().__init__(text)

    def at(self, element_id: str, line: int | None = None) -> ExpressionError:
        """Return a copy of this error that names the element it happened in."""
        raw = self.args[0]
        return ExpressionError(
            _strip_where(raw, self.expression), expression=self.expression, element_id=element_id, line=line
        )


def _strip_where(text: str, expression: str | None) -> str:
    if expression is not None and text.endswith(f" [expression: {expression}]"):
        text = text[: -len(f" [expression: {expression}]")]
    if text.startswith("element '") and "': " in text:
        text = text.split("': ", 1)[1]
    return text


class ScriptError(BpmnliteError):
    """A script was refused by the sandbox or raised while running."""

    def __init__(self, message: str, *, element_id: str | None = None, line: int | None = None) -> None:
        self.element_id = element_id
        self.line = line
        prefix = f"element '{element_id}': " if element_id else ""
        super().__init__(prefix + message)


class TaskStopped(BpmnliteError):
    """Raised inside a handler (by ``ctx.progress`` or ``ctx.check_stop``) when its instance is being cancelled."""


class NotFound(BpmnliteError):
    """A definition, instance, task, job or subscription does not exist."""


class Conflict(BpmnliteError):
    """Another command changed the same instance first (optimistic locking)."""


class ExecutionError(BpmnliteError):
    """Running an instance failed at an element; the command was rolled back.

    ``element_id`` names the element, ``cause`` keeps the original exception
    for operators (its text may not be fit for end users).
    """

    def __init__(self, message: str, *, element_id: str | None = None, instance_id: str | None = None) -> None:
        self.element_id = element_id
        self.instance_id = instance_id
        prefix = f"element '{element_id}': " if element_id else ""
        super().__init__(prefix + message)


class UncaughtBpmnError(ExecutionError):
    """A BPMN error that no boundary event or event sub-process caught."""

    def __init__(self, code: str, message: str, *, element_id: str | None, instance_id: str | None = None) -> None:
        self.code = code
        super().__init__(f"uncaught BPMN error {code!r}: {message}", element_id=element_id, instance_id=instance_id)


class BpmnError(BpmnliteError):
    """A business error thrown by a handler or an error end event.

    Not a technical failure: it is routed to the matching error boundary
    event or error event sub-process, and becomes an incident only if nothing
    catches it.
    """

    def __init__(self, code: str, message: str | None = None, variables: dict[str, object] | None = None) -> None:
        self.code = code
        self.message = message or code
        self.variables = dict(variables or {})
        super().__init__(f"BPMN error {code!r}: {self.message}")
