"""Growth: does a command cost more when the database holds more, or the model is longer?

Waiting instances (PostgreSQL): one database per size W, holding W instances
that wait at a user task (W = 0, 10,000, 100,000; quick: 0 and 10,000). Then a
sample of instances of the same model is started in each (``start`` returns
when the instance waits at its first user task: start-to-first-wait) and their
first tasks are completed (``complete_task``, which moves each to its second
user task). The databases take turns, sample by sample, in a rotating
order, so background load on the machine hits every size alike. The figures are the medians, in ms.

Filling: one instance is started through the engine, and its rows (instance,
open task, activity history) are copied W times by SQL, with every id in them
(instance, token, activity, task) replaced by a new one, so each copy is a
distinct waiting instance, exactly as the engine stores one. Then ``ANALYZE``
runs, as autovacuum would on a database that grew over time.

Model length: models of 10, 100 and 1,000 user tasks in sequence, in one
database (the emptied W = 0 one). The models take turns: one ``complete_task``
on an instance of each, then the next; an instance that completes is replaced
by a new one. Each model gets 1,000 steps (quick: 50), so the 1,000-task model
runs one instance from its first task to its end (quick: its first 50 tasks).
The figure is the median ``complete_task`` time per step.

Every sampled instance is checked to be waiting at the expected task, or
completed at the end of a sequence.
"""

from __future__ import annotations

import re
import statistics
import time
from contextlib import ExitStack
from typing import Any

from bench import services
from bench.registry import BenchError, Result, Settings, Target, scenario

NAME = "growth"
PG = "postgresql"
WAIT_KEY = "bench_wait2"
WAITING = {False: (0, 10_000, 100_000), True: (0, 10_000)}
SAMPLE = {False: 100, True: 20}
LENGTHS = (10, 100, 1000)
STEPS_MEASURED = {False: None, True: 50}  # steps of each model; None: 1,000 (every step of the longest)
FLAT = 1.5  # "flat": the largest size costs at most this many times the smallest


def _plan(settings: Settings) -> dict[str, object]:
    steps = STEPS_MEASURED[settings.quick]
    return {
        "fill": "SQL copies of one waiting instance, then ANALYZE",
        "waiting_instances": list(WAITING[settings.quick]),
        "sample_per_size": SAMPLE[settings.quick],
        "model_lengths": list(LENGTHS),
        "steps_per_model": steps or max(LENGTHS),
        "flat_means_at_most": f"{FLAT}x the smallest size",
    }


_HEX_ID = re.compile(r'"([0-9a-f]{32})"')


def _owner(table: str) -> str:
    return "id" if table == "bpm_instances" else "instance_id"


def fill(url: str, template_id: str, copies: int, keep: set[str]) -> None:
    """Copy the rows of instance ``template_id`` ``copies`` times, with fresh ids (``keep``: ids to leave)."""
    if copies <= 0:
        return
    with services.psql(url) as conn:
        texts = []
        for table in services.JOB_TABLES:
            texts += [r[0] for r in conn.execute(
                f"SELECT row_to_json(t)::text FROM {table} t WHERE t.{_owner(table)} = %s", (template_id,)
            ).fetchall()]
        ids = sorted({m for text in texts for m in _HEX_ID.findall(text)} - keep)
        if template_id not in ids:
            raise BenchError(f"{NAME}: could not find the template's ids")
        expr = "src.j"
        params: dict[str, Any] = {"tid": template_id, "n": copies}
        for i, old in enumerate(ids):
            expr = f"replace({expr}, %(o{i})s, md5(%(o{i})s || g))"
            params[f"o{i}"] = old
        with conn.transaction():
            for table in services.JOB_TABLES:
                conn.execute(
                    f"INSERT INTO {table} SELECT r.* "
                    f"FROM (SELECT row_to_json(t)::text AS j FROM {table} t WHERE t.{_owner(table)} = %(tid)s) src, "
                    f"generate_series(1, %(n)s) g, LATERAL json_populate_record(NULL::{table}, ({expr})::json) r",
                    params,
                )
        conn.execute("ANALYZE")


def _open_task(poller: services.Poller, instance_id: str, element: str) -> str:
    rows = poller.rows("SELECT id, element_id FROM bpm_tasks WHERE instance_id = %s AND state = 'open'", (instance_id,))
    if len(rows) != 1 or rows[0][1] != element:
        raise BenchError(f"{NAME}: instance {instance_id} should wait at {element!r} alone, open tasks: {rows}")
    return str(rows[0][0])


def _ms(began: float) -> float:
    return (time.perf_counter() - began) * 1000


class _Database:
    """One PostgreSQL database holding ``waiting`` waiting instances, and an engine on it."""

    def __init__(self, url: str, waiting: int) -> None:
        from bpmnlite import Engine

        self.waiting = waiting
        self.engine = Engine(url, load_entry_points=False)
        self.poller = services.Poller(url)
        definition = self.engine.deploy(services.user_chain_xml(WAIT_KEY, 2)).definition(WAIT_KEY)
        if waiting:
            template = self.engine.start(WAIT_KEY)
            fill(url, template.id, waiting - 1, {definition.id, definition.deployment_id})
        present = self.poller.scalar("SELECT count(*) FROM bpm_instances WHERE state = 'waiting'")
        if present != waiting:
            raise BenchError(f"{NAME}: expected {waiting} waiting instances, found {present}")
        self.starts: list[float] = []
        self.completes: list[float] = []

    def sample(self, record: bool = True) -> None:
        """Start one instance (to its first wait) and complete its first task, timing both."""
        began = time.perf_counter()
        info = self.engine.start(WAIT_KEY)
        start_ms = _ms(began)
        if info.state != "waiting" or list(info.active_elements) != ["u1"]:
            raise BenchError(f"{NAME}: a new instance should wait at u1: {info}")
        task = _open_task(self.poller, info.id, "u1")
        began = time.perf_counter()
        info = self.engine.complete_task(task)
        complete_ms = _ms(began)
        if info.state != "waiting" or list(info.active_elements) != ["u2"]:
            raise BenchError(f"{NAME}: after complete_task the instance should wait at u2: {info}")
        if record:
            self.starts.append(start_ms)
            self.completes.append(complete_ms)

    def close(self) -> None:
        self.poller.close()
        self.engine.close()


def waiting_sizes(urls: dict[int, str], settings: Settings) -> list[Result]:
    """One database per size; the samples take turns across them, so background load hits all alike."""
    results: list[Result] = []
    with ExitStack() as stack:
        dbs = []
        for waiting, url in urls.items():
            db = _Database(url, waiting)
            stack.callback(db.close)
            dbs.append(db)
        for _ in range(5):  # warm-up: compiled and prepared statements, caches
            for db in dbs:
                db.sample(record=False)
        for i in range(SAMPLE[settings.quick]):
            for db in dbs[i % len(dbs):] + dbs[: i % len(dbs)]:  # the order rotates
                db.sample()
        for db in dbs:
            results.append(Result(NAME, "bpmnlite", PG, db.waiting, round(statistics.median(db.starts), 2),
                                  "ms start-to-first-wait (median)"))
            results.append(Result(NAME, "bpmnlite", PG, db.waiting, round(statistics.median(db.completes), 2),
                                  "ms complete_task (median)"))
        small, large = dbs[0], dbs[-1]
        for unit, a, b in (
            ("start-to-first-wait", small.starts, large.starts),
            ("complete_task", small.completes, large.completes),
        ):
            ratio = statistics.median(b) / statistics.median(a)
            results.append(Result(NAME, "bpmnlite", PG, large.waiting, round(ratio, 3), f"x {unit} with {small.waiting} waiting"))
    return results


def model_lengths(url: str, settings: Settings) -> list[Result]:
    """Models of 10, 100, 1,000 user tasks, one step of each in turn; a finished instance is replaced."""
    from bpmnlite import Engine

    steps = STEPS_MEASURED[settings.quick] or max(LENGTHS)
    results: list[Result] = []
    services.truncate_runtime(url)
    with Engine(url, load_entry_points=False) as engine, services.Poller(url) as poller:
        current: dict[int, tuple[str, int]] = {}
        times: dict[int, list[float]] = {tasks: [] for tasks in LENGTHS}
        for tasks in LENGTHS:
            engine.deploy(services.user_chain_xml(f"bench_seq{tasks}", tasks))
            warm = engine.start(f"bench_seq{tasks}")  # warm-up: parse and cache the graph, compile statements
            for i in range(1, min(tasks, 5) + 1):
                engine.complete_task(_open_task(poller, warm.id, f"u{i}"))
        for i in range(steps):
            for tasks in LENGTHS[i % len(LENGTHS):] + LENGTHS[: i % len(LENGTHS)]:  # the order rotates
                if tasks not in current:
                    current[tasks] = (engine.start(f"bench_seq{tasks}").id, 1)
                instance_id, step = current[tasks]
                task = _open_task(poller, instance_id, f"u{step}")
                began = time.perf_counter()
                info = engine.complete_task(task)
                times[tasks].append(_ms(began))
                expected = ["end"] if step == tasks else [f"u{step + 1}"]
                if (info.state == "completed") != (step == tasks) or (step < tasks and list(info.active_elements) != expected):
                    raise BenchError(f"{NAME}: after step {step} of {tasks} the instance is {info}")
                if step == tasks:
                    del current[tasks]
                else:
                    current[tasks] = (instance_id, step + 1)
        for tasks in LENGTHS:
            results.append(Result(NAME, "bpmnlite", PG, tasks, round(statistics.median(times[tasks]), 2), "ms/step (median)"))
        ratio = statistics.median(times[max(LENGTHS)]) / statistics.median(times[min(LENGTHS)])
        results.append(Result(NAME, "bpmnlite", PG, max(LENGTHS), round(ratio, 3), f"x ms/step of {min(LENGTHS)} tasks"))
    return results


@scenario(
    NAME,
    "PostgreSQL: start-to-first-wait and complete_task with n instances already waiting; complete_task per "
    "step in models of n user tasks; medians in ms, and the largest size relative to the smallest",
    targets=(
        Target(f"start-to-first-wait flat (<= {FLAT}x) as waiting instances grow", NAME, None,
               unit="x start-to-first-wait with 0 waiting", at_most=FLAT),
        Target(f"complete_task flat (<= {FLAT}x) as waiting instances grow", NAME, None,
               unit="x complete_task with 0 waiting", at_most=FLAT),
        Target(f"cost per step flat (<= {FLAT}x) from 10 to 1,000 tasks", NAME, None,
               unit="x ms/step of 10 tasks", at_most=FLAT),
    ),
    plan=_plan,
)
def growth(settings: Settings) -> list[Result]:
    services.need_postgres()
    with ExitStack() as stack:
        urls = {w: stack.enter_context(services.pg_database(suffix=f"_w{w}")) for w in WAITING[settings.quick]}
        results = waiting_sizes(urls, settings)
        return results + model_lengths(urls[min(urls)], settings)
