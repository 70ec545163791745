"""The helpers users test their own processes with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpmnlite import Engine
from bpmnlite.testing import Clock, assert_that, run_jobs

from .bpmn import bpmn, chain

ORDER = Path(__file__).resolve().parents[1] / "processes" / "order.bpmn"
TIMED = bpmn(
    '<startEvent id="s"/><scriptTask id="a" bpmnlite:async="true"><script>x = 1</script></scriptTask>'
    '<intermediateCatchEvent id="wait"><timerEventDefinition><timeDuration>PT1H</timeDuration>'
    '</timerEventDefinition></intermediateCatchEvent><endEvent id="e"/>' + chain("s", "a", "wait", "e")
)


def test_fixture_clock_and_assertions(bpmn_engine: Engine, bpmn_clock: Clock) -> None:
    bpmn_engine.deploy(TIMED)
    inst = bpmn_engine.start("p")
    assert_that(bpmn_engine, inst).is_waiting_at("a").has_not_passed("a")
    assert run_jobs(bpmn_engine) == 1
    assert_that(bpmn_engine, inst).is_waiting_at("wait").has_passed("s", "a").has_variables(x=1)
    bpmn_clock.advance(minutes=59)
    assert run_jobs(bpmn_engine) == 0
    bpmn_clock.advance(minutes=1)
    assert run_jobs(bpmn_engine) == 1
    assert_that(bpmn_engine, inst).is_ended().has_no_incident()


def test_assertions_fail_with_a_useful_message(bpmn_engine: Engine) -> None:
    bpmn_engine.deploy(ORDER)
    inst = bpmn_engine.start("order", {"amount": 120})
    assert_that(bpmn_engine, inst).is_ended().has_passed("review", "pack").has_not_passed("auto_approve")
    with pytest.raises(AssertionError, match="variables differ"):
        assert_that(bpmn_engine, inst).has_variables(approved=False)
    with pytest.raises(AssertionError, match="has not passed"):
        assert_that(bpmn_engine, inst).has_passed("auto_approve")
    with pytest.raises(AssertionError, match="is not waiting at"):
        assert_that(bpmn_engine, inst).is_waiting_at("review")
