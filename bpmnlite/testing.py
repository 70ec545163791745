"""Helpers for testing your own processes (in the spirit of camunda-bpm-assert).

Use it from pytest::

    pytest_plugins = ["bpmnlite.testing"]

    def test_order(bpmn_engine, bpmn_clock):
        bpmn_engine.deploy("processes/order.bpmn")
        inst = bpmn_engine.start("order", {"amount": 120})
        assert_that(bpmn_engine, inst).is_ended().has_passed("price", "review").has_variables(approved=True)

``bpmn_engine`` is an engine on a temporary SQLite file with a controllable
clock (``bpmn_clock``); ``run_jobs`` runs due jobs (async continuations,
timers) until none is due, in the test's own thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bpmnlite.engine import Engine
from bpmnlite.records import InstanceInfo


class Clock:
    """A clock that moves only when told to. Pass it as ``Engine(clock=...)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` or by keyword parts (``minutes=5``); returns the new time."""
        self.now = self.now + (delta or timedelta(**parts))
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when if when.tzinfo else when.replace(tzinfo=UTC)


def run_jobs(engine: Engine, *, rounds: int = 1000) -> int:
    """Run due jobs until none is due; returns how many ran."""
    total = 0
    for _ in range(rounds):
        ran = engine.run_jobs()
        if not ran:
            break
        total += ran
    return total


class InstanceAssert:
    """Fluent assertions about one instance; each re-reads the instance from the database."""

    def __init__(self, engine: Engine, instance: InstanceInfo | str) -> None:
        self.engine = engine
        self.id = instance if isinstance(instance, str) else instance.id

    @property
    def info(self) -> InstanceInfo:
        return self.engine.instance(self.id)

    def is_waiting_at(self, *element_ids: str) -> InstanceAssert:
        active = set(self.info.active_elements)
        missing = [e for e in element_ids if e not in active]
        assert not missing, f"instance {self.id} is not waiting at {missing}; it waits at {sorted(active)}"
        return self

    def is_not_waiting_at(self, *element_ids: str) -> InstanceAssert:
        active = set(self.info.active_elements)
        present = [e for e in element_ids if e in active]
        assert not present, f"instance {self.id} still waits at {present}"
        return self

    def has_passed(self, *element_ids: str) -> InstanceAssert:
        done = {a.element_id for a in self.engine.history(self.id) if a.ended_at is not None}
        missing = [e for e in element_ids if e not in done]
        assert not missing, f"instance {self.id} has not passed {missing}; it passed {sorted(done)}"
        return self

    def has_not_passed(self, *element_ids: str) -> InstanceAssert:
        done = {a.element_id for a in self.engine.history(self.id) if a.ended_at is not None}
        present = [e for e in element_ids if e in done]
        assert not present, f"instance {self.id} passed {present}"
        return self

    def is_ended(self) -> InstanceAssert:
        info = self.info
        assert info.state == "completed", f"instance {self.id} is {info.state}, waiting at {list(info.active_elements)}"
        return self

    def is_state(self, state: str) -> InstanceAssert:
        assert self.info.state == state, f"instance {self.id} is {self.info.state}, not {state}"
        return self

    def has_variables(self, **expected: Any) -> InstanceAssert:
        actual = self.info.variables
        wrong = {k: actual.get(k, "<unset>") for k, v in expected.items() if actual.get(k, object()) != v}
        assert not wrong, f"instance {self.id}: variables differ: {wrong} (expected {expected})"
        return self

    def has_no_incident(self) -> InstanceAssert:
        incidents = self.engine.incidents(instance_id=self.id)
        assert not incidents, f"instance {self.id} has incidents: {[i.error_detail for i in incidents]}"
        return self


def assert_that(engine: Engine, instance: InstanceInfo | str) -> InstanceAssert:
    return InstanceAssert(engine, instance)


@pytest.fixture
def bpmn_clock() -> Clock:
    """A controllable clock for ``bpmn_engine``."""
    return Clock()


@pytest.fixture
def bpmn_engine(tmp_path: Path, bpmn_clock: Clock) -> Iterator[Engine]:
    """An engine on a temporary SQLite file using ``bpmn_clock``; installed plugins are loaded."""
    engine = Engine(f"sqlite:///{tmp_path / 'bpmnlite-test.db'}", clock=bpmn_clock)
    try:
        yield engine
    finally:
        engine.close()


__all__ = ["Clock", "InstanceAssert", "assert_that", "bpmn_clock", "bpmn_engine", "run_jobs"]
