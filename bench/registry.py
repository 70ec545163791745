"""The scenario registry: what ``bench/run.py`` can run, and the records it prints.

A scenario is a function taking :class:`Settings` and returning
:class:`Result` rows; ``@scenario(...)`` registers it under a name that
``--only`` selects. Modules holding scenarios are listed in
``run.SCENARIO_MODULES``; adding a family of scenarios (async throughput
through Redis/PostgreSQL workers, latency, growth, memory) means writing its
module and adding it there. A scenario that cannot run here (a missing
server or package) raises :class:`Unavailable` and is reported as skipped
with the reason, never with made-up numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# units whose larger value is better; every other unit is a time (smaller is better)
RATE_UNITS = frozenset({"instances/s", "jobs/s"})


class Unavailable(Exception):
    """The scenario cannot run on this machine (say why, and how to fix it)."""


class BenchError(Exception):
    """A run produced a wrong result: an engine that is broken must not look fast."""


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    quick: bool = False


@dataclass(frozen=True)
class Result:
    """One measured figure; the JSON ``results`` rows have exactly these keys."""

    scenario: str
    engine: str
    backend: str
    n: int
    value: float
    unit: str
    ratio_vs_spiff: float | None = None


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against every row it applies to.

    Either bpmnlite at least ``min_ratio`` times as fast as SpiffWorkflow
    (``ratio_vs_spiff``), or, with ``unit``, a bound on the value of the rows
    of that unit: ``at_least`` or ``at_most`` (``backend`` narrows the rows).
    """

    name: str
    scenario: str
    n: int | None
    min_ratio: float | None = None
    unit: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    backend: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[Settings], list[Result]]
    targets: tuple[Target, ...] = ()
    # sizes and counts per mode, printed so a reader knows what a figure is the median of
    plan: Callable[[Settings], dict[str, object]] = field(default=lambda settings: {})


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    summary: str,
    *,
    targets: tuple[Target, ...] = (),
    plan: Callable[[Settings], dict[str, object]] | None = None,
) -> Callable[[Callable[[Settings], list[Result]]], Callable[[Settings], list[Result]]]:
    """Register the decorated function as scenario ``name``."""

    def register(run: Callable[[Settings], list[Result]]) -> Callable[[Settings], list[Result]]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(name, summary, run, targets, plan or (lambda settings: {}))
        return run

    return register


def speedup(bpmnlite: float, spiff: float, unit: str) -> float:
    """How many times faster bpmnlite is (above 1: faster, below 1: slower), whatever the unit."""
    if unit in RATE_UNITS:
        return bpmnlite / spiff
    return spiff / bpmnlite
