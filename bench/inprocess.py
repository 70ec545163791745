"""In-process scenarios: bpmnlite against SpiffWorkflow on the same BPMN files.

bpmnlite runs as shipped: ``Engine.start`` is one command in one transaction,
so every instance is committed to SQLite before the next one starts, to a file
in WAL mode (``sqlite-file``) and to an in-memory database (``sqlite-memory``).
Scripts run in the ``bpmnlite-script`` plugin's default sandbox.
SpiffWorkflow runs in memory and persists nothing (``backend: none``); its
scripts run in its default ``PythonScriptEngine`` (plain ``exec``).

Engines take turns inside each repetition (the order rotates), so background
load on the machine hits both alike. Every instance is checked after its
repetition; a wrong result aborts the run with :class:`BenchError`.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models import Model, ModelSet
from bench.registry import BenchError, Result, Settings, Target, Unavailable, scenario, speedup

BPMNLITE = "bpmnlite"
SPIFF = "spiffworkflow"
BACKENDS = ("sqlite-file", "sqlite-memory")
START_VARIABLES = {"x": 0}

# tasks (or branches) -> instances per repetition
STRAIGHT = {False: {10: 1000, 100: 100}, True: {10: 300, 100: 10}}
PARALLEL = {False: {10: 200, 50: 50, 100: 20}, True: {10: 30, 50: 6, 100: 2}}
PARSE_ELEMENTS = 1000
REPETITIONS = {False: 5, True: 3}
PARSE_REPETITIONS = {False: 10, True: 3}


@dataclass(frozen=True)
class Outcome:
    finished: bool
    variables: dict[str, Any]


# ---------------------------------------------------------------- the engines
class SpiffRunner:
    """SpiffWorkflow 3.x: parse once, then a fresh ``BpmnWorkflow`` per instance."""

    engine = SPIFF
    backend = "none"

    def __init__(self, model: Model) -> None:
        self.spec, self.subprocess_specs = parse_spiff(model)  # raises Unavailable without SpiffWorkflow
        from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
        from SpiffWorkflow.util.task import TaskState

        self._workflow = BpmnWorkflow
        self._ready = TaskState.READY

    def run(self, variables: dict[str, Any]) -> Outcome:
        wf = self._workflow(self.spec, self.subprocess_specs)
        # the instance's input is the data of its first READY task (the start task)
        wf.get_next_task(state=self._ready).data.update(variables)
        wf.do_engine_steps()
        return Outcome(wf.is_completed(), wf.data)

    def close(self) -> None:
        pass


class LiteRunner:
    """bpmnlite with a fresh database: deploy once, then ``Engine.start`` per instance."""

    engine = BPMNLITE

    def __init__(self, model: Model, backend: str, workdir: Path) -> None:
        from bpmnlite import Engine

        self.backend = backend
        self.model = model
        url = f"sqlite:///{workdir / (model.process_id + '.db')}" if backend == "sqlite-file" else "sqlite://"
        self.bpmn = Engine(url)
        self.bpmn.deploy(model.path)
        self.started = 0

    def run(self, variables: dict[str, Any]) -> Outcome:
        info = self.bpmn.start(self.model.process_id, variables)
        self.started += 1
        return Outcome(info.state == "completed", info.variables)

    def check_persisted(self) -> None:
        """Every instance started is in the database, completed."""
        counts = self.bpmn.count_instances()
        stored = counts.get((self.model.process_id, "completed"), 0)
        if stored != self.started or sum(counts.values()) != self.started:
            raise BenchError(f"bpmnlite/{self.backend}: started {self.started} instances, the database has {counts}")

    def close(self) -> None:
        self.bpmn.close()


Runner = SpiffRunner | LiteRunner


def spiff_modules() -> Any:
    try:
        from SpiffWorkflow.bpmn.parser.BpmnParser import BpmnParser
    except ImportError as exc:
        raise Unavailable(
            f"SpiffWorkflow is not installed ({exc}); install the bench extra: pip install -e '.[bench]'"
        ) from None
    return BpmnParser


@contextmanager
def _recursion_limit(limit: int) -> Iterator[None]:
    """SpiffWorkflow's parser recurses once per element along a sequence: a 1,000-element
    chain overflows Python's default limit of 1,000 frames."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def parse_spiff(model: Model) -> tuple[Any, dict[str, Any]]:
    """SpiffWorkflow's parse: ``BpmnParser`` (no XSD validator, its default) to an executable spec."""
    parser_class = spiff_modules()
    with _recursion_limit(20 * model.flow_nodes + 1000):
        parser = parser_class()
        parser.add_bpmn_file(str(model.path))
        spec = parser.get_spec(model.process_id)
        subprocess_specs = parser.get_subprocess_specs(model.process_id)
    return spec, subprocess_specs


def _runners(model: Model, workdir: Path) -> list[Runner]:
    runners: list[Runner] = [SpiffRunner(model)]
    runners += [LiteRunner(model, backend, workdir) for backend in BACKENDS]
    return runners


# ---------------------------------------------------------------- measuring
def measure_throughput(
    model: Model, instances: int, repetitions: int, check: Callable[[Outcome], str | None]
) -> dict[tuple[str, str], float]:
    """Median instances/s of each engine and backend over ``repetitions`` runs of ``instances``."""
    with tempfile.TemporaryDirectory(prefix="bpmnlite-bench-db-") as tmp:
        runners = _runners(model, Path(tmp))
        try:
            for runner in runners:  # warm-up: caches, compiled scripts, first-connection costs
                _check(runner, [runner.run(dict(START_VARIABLES))], check)
            rates: dict[tuple[str, str], list[float]] = {(r.engine, r.backend): [] for r in runners}
            for rep in range(repetitions):
                shift = rep % len(runners)
                for runner in runners[shift:] + runners[:shift]:
                    gc.collect()
                    run = runner.run
                    outcomes = []
                    began = time.perf_counter()
                    for _ in range(instances):
                        outcomes.append(run(dict(START_VARIABLES)))
                    elapsed = time.perf_counter() - began
                    _check(runner, outcomes, check)
                    rates[(runner.engine, runner.backend)].append(instances / elapsed)
            for runner in runners:
                if isinstance(runner, LiteRunner):
                    runner.check_persisted()
        finally:
            for runner in runners:
                runner.close()
    return {key: statistics.median(values) for key, values in rates.items()}


def _check(runner: Runner, outcomes: list[Outcome], check: Callable[[Outcome], str | None]) -> None:
    for outcome in outcomes:
        problem = "did not finish" if not outcome.finished else check(outcome)
        if problem:
            raise BenchError(f"{runner.engine}/{runner.backend}: an instance {problem}")


def rows(scenario_name: str, n: int, figures: dict[tuple[str, str], float], unit: str) -> list[Result]:
    """Result rows with each bpmnlite figure's speed-up over SpiffWorkflow's."""
    spiff = figures[(SPIFF, "none")]
    out = [Result(scenario_name, SPIFF, "none", n, round(spiff, 3), unit, None)]
    for (engine, backend), value in figures.items():
        if engine == BPMNLITE:
            ratio = round(speedup(value, spiff, unit), 3)
            out.append(Result(scenario_name, engine, backend, n, round(value, 3), unit, ratio))
    return out


# ---------------------------------------------------------------- scenarios
def _straight_plan(settings: Settings) -> dict[str, object]:
    return {"instances_per_repetition": STRAIGHT[settings.quick], "repetitions": REPETITIONS[settings.quick]}


def _parallel_plan(settings: Settings) -> dict[str, object]:
    return {"instances_per_repetition": PARALLEL[settings.quick], "repetitions": REPETITIONS[settings.quick]}


def _parse_plan(settings: Settings) -> dict[str, object]:
    return {"elements": PARSE_ELEMENTS, "repetitions": PARSE_REPETITIONS[settings.quick]}


@scenario(
    "straight",
    "n script tasks in sequence, each x = x + 1; instances/s, every bpmnlite instance committed",
    targets=(
        Target("straight-through (10 tasks) >= 3x SpiffWorkflow, persisting every instance", "straight", 10, 3.0),
    ),
    plan=_straight_plan,
)
def straight(settings: Settings) -> list[Result]:
    results: list[Result] = []
    with ModelSet() as models:
        for tasks, instances in STRAIGHT[settings.quick].items():
            model = models.straight(tasks)

            def check(outcome: Outcome, tasks: int = tasks) -> str | None:
                x = outcome.variables.get("x")
                return None if x == tasks else f"ended with x={x!r}, expected {tasks}"

            figures = measure_throughput(model, instances, REPETITIONS[settings.quick], check)
            results += rows("straight", tasks, figures, "instances/s")
    return results


@scenario(
    "parallel",
    "fork/join of n branches, one script task each; instances/s, every bpmnlite instance committed",
    targets=(Target("50-branch parallel >= 50x SpiffWorkflow", "parallel", 50, 50.0),),
    plan=_parallel_plan,
)
def parallel(settings: Settings) -> list[Result]:
    results: list[Result] = []
    with ModelSet() as models:
        for branches, instances in PARALLEL[settings.quick].items():
            model = models.parallel(branches)

            def check(outcome: Outcome, branches: int = branches) -> str | None:
                missing = [i for i in range(1, branches + 1) if outcome.variables.get(f"b{i}") != 1]
                return f"missed {len(missing)} of {branches} branches (b{missing[0]})" if missing else None

            figures = measure_throughput(model, instances, REPETITIONS[settings.quick], check)
            results += rows("parallel", branches, figures, "instances/s")
    return results


@scenario(
    "parse",
    "a 1,000-element sequential model: SpiffWorkflow BpmnParser+get_spec; bpmnlite Engine.validate "
    "(backend none) and Engine.deploy into a fresh database; ms per parse",
    plan=_parse_plan,
)
def parse(settings: Settings) -> list[Result]:
    from bpmnlite import Engine

    times: dict[tuple[str, str], list[float]] = {(SPIFF, "none"): [], (BPMNLITE, "none"): []}
    times.update({(BPMNLITE, backend): [] for backend in BACKENDS})
    with ModelSet() as models, tempfile.TemporaryDirectory(prefix="bpmnlite-bench-db-") as tmp:
        model = models.sequential_elements(PARSE_ELEMENTS)
        validator = Engine("sqlite://")
        try:
            parse_spiff(model)  # warm-up, and Unavailable before anything is timed
            validator.validate(model.path)
            for rep in range(PARSE_REPETITIONS[settings.quick]):
                gc.collect()
                began = time.perf_counter()
                spec, _ = parse_spiff(model)
                times[(SPIFF, "none")].append(_ms(began))
                parsed = sum(1 for s in spec.task_specs.values() if getattr(s, "bpmn_id", None))
                _expect(parsed == model.flow_nodes, f"SpiffWorkflow parsed {parsed} BPMN elements")

                gc.collect()
                began = time.perf_counter()
                defs = validator.validate(model.path)
                times[(BPMNLITE, "none")].append(_ms(began))
                nodes = len(defs.process(model.process_id).nodes)
                _expect(nodes == model.flow_nodes, f"bpmnlite parsed {nodes} flow nodes")

                for backend in BACKENDS:
                    url = f"sqlite:///{Path(tmp) / f'parse{rep}.db'}" if backend == "sqlite-file" else "sqlite://"
                    with Engine(url) as engine:
                        gc.collect()
                        began = time.perf_counter()
                        deployment = engine.deploy(model.path)
                        times[(BPMNLITE, backend)].append(_ms(began))
                        _expect(deployment.changed and len(engine.definitions()) == 1, "bpmnlite deployed nothing")
        finally:
            validator.close()
    figures = {key: statistics.median(values) for key, values in times.items()}
    return rows("parse", PARSE_ELEMENTS, figures, "ms/parse")


def _ms(began: float) -> float:
    return (time.perf_counter() - began) * 1000


def _expect(ok: bool, problem: str) -> None:
    if not ok:
        raise BenchError(problem)
