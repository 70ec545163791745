"""What the engine returns: plain, immutable snapshots of rows.

A snapshot is taken when a command commits; it never changes afterwards, so
``engine.start()`` returns the instance as it was at its first wait state,
not what async jobs did to it later (seed 000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class DefinitionInfo:
    id: str
    key: str
    version: int
    name: str | None
    executable: bool
    deployment_id: str
    deployed_at: datetime


@dataclass(frozen=True, slots=True)
class Deployment:
    """The result of ``engine.deploy``: one definition per process in the file.

    ``changed`` is False when the file was identical to the latest deployed
    version, in which case the existing definitions are returned.
    """

    id: str
    definitions: tuple[DefinitionInfo, ...]
    changed: bool

    def definition(self, key: str) -> DefinitionInfo:
        for d in self.definitions:
            if d.key == key:
                return d
        raise KeyError(key)


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A process instance. ``state`` is running, waiting, completed, cancelled or failed."""

    id: str
    process_key: str
    definition_id: str
    business_key: str | None
    state: str
    variables: dict[str, Any]
    active_elements: tuple[str, ...]
    started_at: datetime | None = None
    ended_at: datetime | None = None
    parent_instance_id: str | None = None
    suspended: bool = False
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.state in ("completed", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A user task."""

    id: str
    instance_id: str
    element_id: str
    name: str | None
    state: str
    created_at: datetime | None
    attributes: dict[str, str] = field(default_factory=dict)
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job row: an async continuation or a timer; ``state`` deadletter means an incident."""

    id: str
    kind: str
    state: str
    instance_id: str | None
    element_id: str
    due_at: datetime | None
    retries: int
    attempts: int
    error_message: str | None = None
    error_detail: str | None = None
    lock_owner: str | None = None
    lock_expires_at: datetime | None = None
    exclusive: bool = True
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ActivityInfo:
    """One visit of a token to an element (activity instance history); a join has one per activation."""

    id: str
    instance_id: str
    element_id: str
    element_kind: str
    element_name: str | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True, slots=True)
class ProgressInfo:
    """A progress item written by running handlers: ``done`` of ``total``, status, feedback text."""

    key: str
    instance_id: str | None
    element_id: str | None
    title: str | None
    done: int
    total: int | None
    status: str
    message: str | None
    feedback: str | None
    updated_at: datetime | None

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(self.done / self.total, 1.0)


@dataclass(frozen=True, slots=True)
class VariableChange:
    instance_id: str
    name: str
    value: Any
    element_id: str | None
    at: datetime | None
