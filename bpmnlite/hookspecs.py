"""Every plugin hook of bpmnlite; each docstring is the contract.

A plugin is any object (module or instance) with functions marked
``@bpmnlite.hookimpl`` whose names match the specs below. Implementations may
accept a subset of a hook's arguments, so hooks can grow new arguments without
breaking existing plugins.

Registration hooks (``bpmnlite_task_types``, ``bpmnlite_script_languages``,
``bpmnlite_expression_functions``) are called once, when the engine starts;
the engine builds plain lookup tables from them, so the hot path never walks
a hook chain. A name registered twice fails at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from bpmnlite.context import TaskContext
    from bpmnlite.model import FlowNode

PROJECT = "bpmnlite"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ScriptLanguage(Protocol):
    """Runs the script of a script task."""

    def run(
        self, script: str, variables: MutableMapping[str, Any], *, trusted: bool, element_id: str
    ) -> Mapping[str, Any]:
        """Run ``script`` with the instance variables visible as local names.

        Args:
            script: the script text from the model.
            variables: a copy of the variables visible at the element.
            trusted: True when the engine was configured with
                ``trusted_scripts=True``; otherwise the script must run
                sandboxed (no imports outside an allow-list, no file, network
                or process access, no dunder access, bounded time and memory).
            element_id: the script task's id, for error messages.

        Returns:
            The names the script assigned (new or changed), with their values;
            the engine writes them back as variables.

        Raises:
            bpmnlite.errors.ScriptError: the sandbox refused the script or it
                raised; the message names the element.
            bpmnlite.errors.BpmnError: a business error to route to a catcher.
        """
        ...


class TaskHandler(Protocol):
    """Executes a service task (or send / business rule task) of one type."""

    def __call__(self, ctx: TaskContext) -> Any:
        """Do the task's work through ``ctx``; raise ``BpmnError`` for a business error.

        Any other exception is a technical failure: the command rolls back, and
        an asynchronous job is retried.
        """
        ...


@hookspec
def bpmnlite_task_types() -> Mapping[str, TaskHandler]:  # type: ignore[empty-body]
    """Return task type names and their handlers.

    A service task selects its handler by ``bpmnlite:type``, by
    ``implementation``, by ``camunda:topic`` (with ``camunda:type="external"``),
    or by a Java class / delegate expression name mapped in the engine's
    ``class_map``. Names must be unique across all plugins.
    """


@hookspec
def bpmnlite_script_languages() -> Mapping[str, ScriptLanguage]:  # type: ignore[empty-body]
    """Return script formats (lower-case, e.g. ``"python"``) and their runners.

    A script task without ``scriptFormat`` uses ``"python"``.
    """


@hookspec
def bpmnlite_expression_functions() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Return extra functions callable from expressions and conditions.

    They run with the expression's caller's privileges, so expose only pure,
    safe functions.
    """


@hookspec
def bpmnlite_check_element(element: FlowNode, task_type: str | None) -> Iterable[str] | None:
    """Check an element's configuration when a model is deployed (or validated).

    Called for every flow node of an executable process; ``task_type`` is the
    resolved task type name (after ``class_map``) or None. Return problem
    messages for elements this plugin handles (an empty list or None when
    fine); they are reported with the element id and line, and the model is
    not deployed. Must not import user code or touch the network.
    """


@hookspec
def bpmnlite_job_failed(job_id: str, element_id: str, error: str, retries_left: int) -> None:
    """A job failed and will be retried (``retries_left`` > 0) or became an incident."""


@hookspec
def bpmnlite_incident_raised(job_id: str, error: str) -> None:
    """A job ran out of retries (or hit an uncaught BPMN error): it is now an incident."""


@hookspec
def bpmnlite_instance_started(instance_id: str, process_key: str, variables: Mapping[str, Any]) -> None:
    """An instance was started (called after the starting command committed)."""


@hookspec
def bpmnlite_instance_ended(instance_id: str, process_key: str, state: str) -> None:
    """An instance reached a final state, ``completed`` or ``cancelled`` (called after the commit).

    An instance whose job became an incident is not ended: it waits for an
    operator (see ``bpmnlite_incident_raised``).
    """


@hookspec
def bpmnlite_activity_started(instance_id: str, element_id: str, element_kind: str) -> None:
    """A token entered an element (a parallel or inclusive join: once per activation)."""


@hookspec
def bpmnlite_activity_ended(instance_id: str, element_id: str, element_kind: str) -> None:
    """A token left an element (a parallel or inclusive join: once per activation)."""
