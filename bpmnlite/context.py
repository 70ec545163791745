"""The small world a task handler sees.

A handler reads and writes variables, reads its element's configuration, gets
a stable idempotency key for its side effects, and raises ``BpmnError`` for a
business outcome. Writes go through :meth:`TaskContext.set` so the engine can
record them in the variable history and keep scope rules (a name already
defined in an inner scope is written there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from bpmnlite.errors import BpmnError, TaskStopped
from bpmnlite.model import ExtensionElement, FlowNode


class _Variables(MutableMapping[str, Any]):
    """A live view of the variables visible at the task; writes are recorded."""

    def __init__(self, read: MutableMapping[str, Any], write: Callable[[str, Any], None]) -> None:
        self._read = read
        self._write = write

    def __getitem__(self, name: str) -> Any:
        return self._read[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._write(name, value)

    def __delitem__(self, name: str) -> None:
        raise TypeError("variables cannot be deleted by a task handler; set them to None")

    def __iter__(self) -> Iterator[str]:
        return iter(self._read)

    def __len__(self) -> int:
        return len(self._read)


class TaskContext:
    """Passed to every task handler.

    Attributes:
        element: the task's model element (id, name, attributes, extensions).
        instance_id: the process instance.
        business_key: the instance's business key, if any.
        idempotency_key: stable across retries of the same job, so a handler
            can make an at-least-once side effect effectively once. A caller
            repeating a failed synchronous command starts a new activity
            instance and so gets a new key: put side effects that must happen
            once behind an async flag.
        variables: read/write mapping of the variables visible at the task.
    """

    def __init__(
        self,
        *,
        element: FlowNode,
        instance_id: str,
        business_key: str | None,
        idempotency_key: str,
        variables: MutableMapping[str, Any],
        write: Callable[[str, Any], None],
        report: Callable[..., Any] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.element = element
        self.instance_id = instance_id
        self.business_key = business_key
        self.idempotency_key = idempotency_key
        self.variables: MutableMapping[str, Any] = _Variables(variables, write)
        self._report = report
        self._stop_requested = stop_requested

    @property
    def element_id(self) -> str:
        return self.element.id

    @property
    def config(self) -> Mapping[str, str]:
        """The element's extension attributes (``bpmnlite:url``, ``camunda:topic``...)."""
        return self.element.attributes

    @property
    def extensions(self) -> tuple[ExtensionElement, ...]:
        return self.element.extensions

    def get(self, name: str, default: Any = None) -> Any:
        return self.variables.get(name, default)

    def set(self, name: str, value: Any) -> None:
        self.variables[name] = value

    def fields(self) -> dict[str, str]:
        """``bpmnlite:field`` / ``camunda:field`` / ``flowable:field`` values by name."""
        out: dict[str, str] = {}
        for ext in self.element.extensions:
            if ext.tag.endswith(":field") and "name" in ext.attributes:
                value = ext.attributes.get("stringValue") or ext.attributes.get("expression") or ext.text
                if value is None:
                    for child in ext.children:
                        value = child.text
                out[ext.attributes["name"]] = (value or "").strip()
        return out

    def progress(
        self,
        done: int,
        total: int | None = None,
        message: str | None = None,
        *,
        key: str | None = None,
        title: str | None = None,
        status: str | None = None,
    ) -> None:
        """Report progress, visible to other readers while this handler still runs.

        ``key`` names a progress item several steps (or instances) advance
        together, e.g. ``key=f"publish:{project_id}"``; by default each
        activity has its own item.
        """
        self._emit(key, done=done, total=total, message=message, title=title, status=status)

    def feedback(self, text: str, mode: str = "replace", *, key: str | None = None) -> None:
        """Set (``mode="replace"``) or add a line to (``mode="append"``) the feedback text of a progress item."""
        if mode not in ("replace", "append"):
            raise ValueError("feedback mode is 'replace' or 'append'")
        self._emit(key, feedback=text, append=mode == "append")

    def should_stop(self) -> bool:
        """True when someone cancelled this instance while the handler runs: finish up and return."""
        return bool(self._stop_requested and self._stop_requested())

    def check_stop(self) -> None:
        """Raise ``TaskStopped`` if the instance is being cancelled (call it between units of work)."""
        if self.should_stop():
            raise TaskStopped(f"element '{self.element.id}': stopped because instance {self.instance_id} is cancelled")

    def _emit(self, key: str | None, **fields: Any) -> None:
        self.check_stop()
        if self._report is None:
            raise RuntimeError("progress reporting is not available in this context")
        self._report(key or f"{self.instance_id}:{self.element.id}", instance_id=self.instance_id,
                     element_id=self.element.id, **fields)

    def error(self, code: str, message: str | None = None) -> BpmnError:
        """Build a ``BpmnError`` to raise: ``raise ctx.error("NotFound")``."""
        return BpmnError(code, message)
