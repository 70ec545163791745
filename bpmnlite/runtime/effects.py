"""What a command changed outside the token tree, as plain records.

The runtime appends to an :class:`Effects` while it moves tokens; the engine
turns the records into rows of the same transaction. Keeping this a list of
dataclasses keeps the runtime free of SQL and makes a command's side effects
easy to inspect in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobKind(StrEnum):
    ASYNC_BEFORE = "async-before"
    ASYNC_AFTER = "async-after"
    TIMER = "timer"  # a timer catch event, boundary timer, event gateway timer or event sub-process timer
    START_TIMER = "start-timer"  # a timer start event of a definition (no instance yet)
    CALL_RETURN = "call-return"  # a called instance completed inside a job: its parent goes on in this job


# kinds that are due at once and get a message right after the commit (timers wait for the scheduler)
RUN_NOW = frozenset({JobKind.ASYNC_BEFORE, JobKind.ASYNC_AFTER, JobKind.CALL_RETURN})


class SubscriptionKind(StrEnum):
    MESSAGE = "message"
    SIGNAL = "signal"


@dataclass(slots=True)
class JobRecord:
    """A persisted continuation. ``token_id`` is the token that owns it."""

    id: str
    kind: JobKind
    instance_id: str | None
    token_id: str | None
    element_id: str
    definition_id: str
    due_at: datetime | None
    exclusive: bool = True
    retries: str | None = None
    priority: int = 0
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskRecord:
    """An open user task."""

    id: str
    instance_id: str
    token_id: str
    element_id: str
    name: str | None
    definition_id: str
    created_at: datetime
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SubscriptionRecord:
    """A message or signal an instance (or a definition's start event) waits for.

    ``element_id`` is the catching element (catch event, receive task,
    boundary event or event sub-process start); ``token_id`` the token that
    owns it (the activity for a boundary event, the scope for an event
    sub-process, the gateway for an event-based gateway).
    """

    id: str
    kind: SubscriptionKind
    name: str
    instance_id: str | None
    token_id: str | None
    element_id: str
    definition_id: str
    business_key: str | None = None


@dataclass(slots=True)
class ActivityRecord:
    id: str
    instance_id: str
    token_id: str
    element_id: str
    element_kind: str
    element_name: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None  # completed / cancelled
    seq: int = 0  # orders visits that share a timestamp


@dataclass(slots=True)
class VariableRecord:
    instance_id: str
    name: str
    value: Any
    element_id: str | None
    at: datetime
    seq: int  # orders an instance's changes (the row's id)


@dataclass(slots=True)
class Effects:
    """Everything one command wants written besides the instance rows."""

    jobs: list[JobRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    activities: dict[str, ActivityRecord] = field(default_factory=dict)
    # activity id -> (instance id, end, outcome), for rows written by an earlier command
    ended_activities: dict[str, tuple[str, datetime, str]] = field(default_factory=dict)
    variables: list[VariableRecord] = field(default_factory=list)
    # tokens whose tasks, subscriptions and jobs are gone (the token moved, ended or was cancelled)
    # owner id -> the kinds of rows to drop: t tasks, s subscriptions, j jobs
    cleared_tokens: dict[str, str] = field(default_factory=dict)
    # (token_id, task outcome) of user tasks closed by the command
    closed_tasks: dict[str, str] = field(default_factory=dict)
    # ids of single jobs or subscriptions consumed (e.g. a fired timer of a still-running activity)
    consumed_jobs: set[str] = field(default_factory=set)
    consumed_subscriptions: set[str] = field(default_factory=set)
    # signals thrown (name, business key of the thrower) and messages thrown, delivered after the run settles
    signals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # (name, business key, variables, target instance id or None)
    messages: list[tuple[str, str | None, dict[str, Any], str | None]] = field(default_factory=list)
    # events for plugin listeners: (hook name, kwargs)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
