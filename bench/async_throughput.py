"""Async throughput: instances of three async service tasks, run by worker processes.

PostgreSQL + Redis: a real ``bpmnlite worker --processes P --threads 4`` command
(P = 1, 2, 4) runs the jobs; the bench process starts the instances with
``Engine(pg_url, broker_url=redis_url)``, as an application would. The figure
is jobs/s from the first ``start`` of the timed batch until every instance of
it has completed (polled, with a deadline). Workers are started and warmed up
(``10 x P`` instances run to completion) before the clock starts.

The bench starts instances one at a time from one thread, so that figure can
be bounded by the feeder rather than the workers. Two more batches of the
same size follow, with the same workers:

- "jobs/s from a backlog" measures the workers alone: they are paused
  (SIGSTOP) while the instances are started, then continued (SIGCONT), and the
  clock runs from then until the backlog has completed.
- "jobs/s fed by F clients" (new; ``FEEDERS`` = 2, one per core of the
  machine the figures are taken on) is how an application's many web
  requests start instances concurrently, as pgbench runs several clients:
  F feeder *processes* (the GIL would serialise threads), each a
  ``services.Feeders`` process with an ``Engine`` and connection of its own,
  start the batch between them, one instance at a time each. They are spawned
  before the workers (their imports overlap the workers' start) and touch
  neither server until the backlog has drained; then each starts
  ``FEEDER_WARM`` warm-up instance(s), which run to completion, and says it
  is ready. The clock runs from "go" (sent to all of them once every one is
  ready) until every instance of the batch has completed.

Transactions per job come from ``pg_stat_database`` (``xact_commit +
xact_rollback`` of the bench's database), read before the workers start and
after they (and every other connection of the bench) have disconnected, so
PostgreSQL has flushed every backend's counts. A start is priced on the
warm-up starts, before any worker runs, made by two fresh engines (one start,
then the rest), each closed so that its backends exit: this prices the first
start of a fresh engine, which also pays for its connection and SQLAlchemy's
dialect set-up, apart from the following ones. Every engine that starts
instances afterwards is a fresh one too. "worker transactions/job" leaves out
every start of the warm-ups and the three batches: the bench's feeder (both
its batches) and each feeder process (its warm-up and its share), plus the
bench's polling statements and its polling connection. "transactions/job incl. start"
is everything but the bench's polling. Both are per job of all the instances
(warm-ups and the three batches), and both include the workers' start-up and
their scheduler ticks, which real workers pay too.

``pgbench -N`` runs against the same PostgreSQL in the same run, right after
each worker configuration, with 4 clients per worker process (one per worker
thread) and 2 pgbench threads, in a database of its own (scale 1).

The embedded default runs the same model on a SQLite file with
``engine.worker(threads=2)`` (Dramatiq's stub broker, in-process); its
transactions are counted client-side (SQLAlchemy ``begin`` events in the worker
and scheduler threads).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import bench_plugin, services
from bench.registry import BenchError, Result, Settings, Target, scenario

NAME = "async-throughput"
KEY = "bench_async3"
STEPS = 3
PROCESSES = (1, 2, 4)
THREADS = 4
WARM_PER_PROCESS = {False: 10, True: 3}
INSTANCES = {False: 1000, True: 40}
EMBEDDED_INSTANCES = {False: 1000, True: 40}
EMBEDDED_THREADS = 2
PGBENCH_SECONDS = {False: 10, True: 1}
# feeder processes of the "fed by concurrent clients" figure: one per core of the 2-core machine the
# figures are taken on (processes, not threads: the GIL), as an application's web processes start instances
FEEDERS = 2
FEEDER_WARM = 1  # warm-up starts per feeder process, completed before its clock starts
CLIENTS = f"fed by {FEEDERS} clients"
PG = "postgresql+redis"


def _plan(settings: Settings) -> dict[str, object]:
    return {
        "instances": INSTANCES[settings.quick],
        "async_steps_per_instance": STEPS,
        "worker_processes": list(PROCESSES),
        "threads_per_process": THREADS,
        "warm_up_instances_per_process": WARM_PER_PROCESS[settings.quick],
        "feeder_processes": FEEDERS,
        "warm_up_instances_per_feeder": FEEDER_WARM,
        "pgbench": f"-N, scale 1, {THREADS} clients per worker process, -j 2, -T {PGBENCH_SECONDS[settings.quick]}",
        "embedded": f"{EMBEDDED_INSTANCES[settings.quick]} instances, engine.worker(threads={EMBEDDED_THREADS}), "
        "SQLite file",
    }


def connection_cost(url: str) -> int:
    """Transactions PostgreSQL counts for opening and closing one bench connection (no statements)."""
    before = sum(services.settled_xacts(url))
    services.Poller(url).close()
    return sum(services.settled_xacts(url)) - before


def _feeder(url: str, redis_url: str, queue: str) -> Any:
    """An engine that starts instances, as an application's (the feeder processes build the same)."""
    from bpmnlite import Engine

    return Engine(
        url, broker_url=redis_url, queue=queue, load_entry_points=False, plugins=[bench_plugin], create_schema=False
    )


def pg_run(url: str, redis_url: str, processes: int, instances: int, warm: int, conn_cost: int) -> dict[str, float]:
    """One configuration: jobs/s (fed, fed by ``FEEDERS`` clients, from a backlog) and transactions per job."""
    if warm < 3:
        raise BenchError(f"{NAME}: at least 3 warm-up instances are needed to price a start, not {warm}")
    services.truncate_runtime(url)
    queue = services.queue_name()
    feeder = _feeder(url, redis_url, queue)
    workers = services.Workers(url, redis_url, queue, processes=processes, threads=THREADS)
    # spawned now so that their imports overlap the workers' start; they touch neither server until told to
    clients = services.Feeders(url, redis_url, queue, KEY, clients=FEEDERS, instances=instances, warm=FEEDER_WARM)
    try:
        clients.start()
        # what a start costs, before any worker runs, on the warm-up starts: two fresh engines (like every
        # engine that starts instances below), one start and the rest, each closed so that its backends exit
        # and flush their counts; a fresh engine's first start also pays for its connection and SQLAlchemy's
        # dialect set-up, priced apart
        x0 = sum(services.settled_xacts(url))
        with _feeder(url, redis_url, queue) as first:
            first.start(KEY)
        xa = sum(services.settled_xacts(url))
        with _feeder(url, redis_url, queue) as rest:
            for _ in range(warm - 1):
                rest.start(KEY)
        x1 = sum(services.settled_xacts(url))
        per_start = ((x1 - xa) - (xa - x0)) / (warm - 2)
        engine_cost = (xa - x0) - per_start  # a fresh engine's first connection, beyond its first start
        with services.Poller(url) as poller:
            workers.start()
            services.poll(lambda: poller.completed() == warm, 120, f"{warm} warm-up instances")
            clients.wait_for("loaded", 120)
            began = time.perf_counter()
            for _ in range(instances):
                feeder.start(KEY)
            total = warm + instances
            ended = services.poll(
                lambda: poller.completed() == total, 60 + instances, f"{instances} instances x {STEPS} async steps"
            )
            # the same again from a backlog: the feeder above starts one instance at a time and can be
            # what limits jobs/s; here the workers are paused while it queues them, then drain the queue
            workers.backlog(feeder, KEY, instances)
            drain_began = time.perf_counter()
            total += instances
            drained = services.poll(
                lambda: poller.completed() == total, 60 + instances, f"a backlog of {instances} instances"
            )
            # the same again fed by FEEDERS processes at once, each with its own engine and connection
            # (warmed up by FEEDER_WARM starts each, run to completion before the clock starts)
            clients.send("warm")
            clients.wait_for("ready", 60)
            total += FEEDERS * FEEDER_WARM
            services.poll(lambda: poller.completed() == total, 120, f"{FEEDERS} feeders' warm-up instances")
            total += instances

            def clients_done() -> bool:
                clients.check()
                return poller.completed() == total

            clients_began = time.perf_counter()
            clients.send("go")
            clients_ended = services.poll(clients_done, 60 + instances, f"{instances} instances {CLIENTS}")
            feed_seconds = max(float(s) for s in clients.wait_for("done", 60))
            clients.stop()
            clients.check_exit(f"{NAME} with {processes} process(es)")
            workers.stop()
            feeder.close()
            services.check_all_completed(poller, total, f"{NAME} with {processes} process(es)")
            workers.check_log(f"{NAME} with {processes} process(es)")
        x2 = sum(services.settled_xacts(url))
    finally:
        clients.stop()
        workers.stop()
        feeder.close()
        services.drop_queue(redis_url, queue)
    # the starts after x1, each by a fresh engine: the bench's feeder starts both batches, each feeder process
    # its warm-up and its share; then the bench's polling and its connection
    starts_tx = (
        engine_cost + 2 * instances * per_start
        + FEEDERS * engine_cost + (FEEDERS * FEEDER_WARM + instances) * per_start
    )
    worker_tx = (x2 - x1) - starts_tx - poller.queries - conn_cost
    jobs = STEPS * total
    return {
        "jobs_per_s": STEPS * instances / (ended - began),
        "backlog_jobs_per_s": STEPS * instances / (drained - drain_began),
        "clients_jobs_per_s": STEPS * instances / (clients_ended - clients_began),
        "clients_feed_s": feed_seconds,
        "clients_s": clients_ended - clients_began,
        "worker_tx_per_job": worker_tx / jobs,
        "all_tx_per_job": ((x2 - x0) - poller.queries - conn_cost) / jobs,
    }


def pgbench_tps(pgbench: str, url: str, clients: int, seconds: int) -> float:
    libpq, _ = services._libpq(url)
    out = subprocess.run(
        [pgbench, "-n", "-N", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), libpq],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    found = re.search(r"^tps = ([0-9.]+)", out.stdout, re.MULTILINE)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if out.returncode != 0 or not found or (failed and int(failed.group(1))):
        raise BenchError(f"pgbench failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    return float(found.group(1))


def pgbench_init(pgbench: str, url: str) -> None:
    libpq, _ = services._libpq(url)
    out = subprocess.run([pgbench, "-i", "-q", "-s", "1", libpq], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise BenchError(f"pgbench -i failed: {out.stderr[-500:]}")


def embedded_run(instances: int, warm: int) -> dict[str, float]:
    """The embedded default: a SQLite file, ``engine.worker()`` in this process."""
    import sqlalchemy as sa

    from bpmnlite import Engine

    with tempfile.TemporaryDirectory(prefix="bpmnlite-bench-db-") as tmp:
        engine = Engine(f"sqlite:///{Path(tmp) / 'async.db'}", load_entry_points=False, plugins=[bench_plugin])
        begins: Counter[int] = Counter()
        sa.event.listen(engine.db, "begin", lambda _conn: begins.update((threading.get_ident(),)))
        me = threading.get_ident()

        def others() -> int:
            return sum(n for ident, n in begins.items() if ident != me)

        def completed() -> int:
            return engine.count_instances().get((KEY, "completed"), 0)

        try:
            engine.deploy(services.async_chain_xml(KEY, STEPS))
            with engine.worker(threads=EMBEDDED_THREADS):
                for _ in range(warm):
                    engine.start(KEY)
                services.poll(lambda: completed() == warm, 120, "embedded warm-up")
                base, mine = others(), begins[me]
                began = time.perf_counter()
                for _ in range(instances):
                    engine.start(KEY)
                starts_tx = begins[me] - mine
                ended = services.poll(lambda: completed() == warm + instances, 60 + instances, "embedded instances")
                worker_tx = others() - base
            counts = engine.count_instances()
            left = engine.jobs()
            if counts != {(KEY, "completed"): warm + instances} or left:
                raise BenchError(f"{NAME} embedded: instances {counts}, {len(left)} jobs left")
        finally:
            engine.close()
    jobs = STEPS * instances
    return {
        "jobs_per_s": jobs / (ended - began),
        "worker_tx_per_job": worker_tx / jobs,
        "all_tx_per_job": (worker_tx + starts_tx) / jobs,
    }


def _rows(backend: str, n: int, run: dict[str, float]) -> list[Result]:
    return [
        Result(NAME, "bpmnlite", backend, n, round(run["jobs_per_s"], 1), "jobs/s"),
        Result(NAME, "bpmnlite", backend, n, round(run["worker_tx_per_job"], 2), "worker transactions/job"),
        Result(NAME, "bpmnlite", backend, n, round(run["all_tx_per_job"], 2), "transactions/job incl. start"),
    ]


@scenario(
    NAME,
    f"instances of {STEPS} async service tasks run by `bpmnlite worker` processes (n = processes) on "
    "PostgreSQL + Redis, and by engine.worker() on a SQLite file (n = 1); jobs/s, transactions per job, "
    "and the ratio to pgbench -N TPS on the same PostgreSQL",
    targets=(
        Target("async jobs/s >= 40% of pgbench -N TPS", NAME, None, unit="x pgbench -N TPS", at_least=0.4),
        Target("async jobs/s from a backlog >= 40% of pgbench -N TPS", NAME, None,
               unit="x pgbench -N TPS from a backlog", at_least=0.4),
        Target("async jobs/s fed by concurrent clients >= 40% of pgbench -N TPS", NAME, None,
               unit=f"x pgbench -N TPS {CLIENTS}", at_least=0.4),
    ),
    plan=_plan,
)
def async_throughput(settings: Settings) -> list[Result]:
    from bpmnlite import Engine

    services.need_postgres()
    services.need_redis()
    pgbench = services.need_pgbench()
    results: list[Result] = []
    seconds = PGBENCH_SECONDS[settings.quick]
    with services.pg_database() as url, services.pg_database(suffix="_pgbench") as bench_url:
        with Engine(url, load_entry_points=False, plugins=[bench_plugin]) as engine:
            engine.deploy(services.async_chain_xml(KEY, STEPS))
        pgbench_init(pgbench, bench_url)
        conn_cost = connection_cost(url)
        for processes in PROCESSES:
            warm = WARM_PER_PROCESS[settings.quick] * processes
            run = pg_run(url, services.REDIS_URL, processes, INSTANCES[settings.quick], warm, conn_cost)
            services.progress(
                f"{NAME}: {processes} process(es): {run['jobs_per_s']:.0f} jobs/s fed, "
                f"{run['clients_jobs_per_s']:.0f} {CLIENTS} (feeding took {run['clients_feed_s']:.2f} s "
                f"of {run['clients_s']:.2f} s), {run['backlog_jobs_per_s']:.0f} from a backlog"
            )
            tps = pgbench_tps(pgbench, bench_url, THREADS * processes, seconds)
            results += _rows(PG, processes, run)
            results.append(Result(NAME, "pgbench", "postgresql", processes, round(tps, 1), "pgbench -N TPS"))
            results.append(Result(NAME, "bpmnlite", PG, processes, round(run["jobs_per_s"] / tps, 3), "x pgbench -N TPS"))
            results.append(Result(NAME, "bpmnlite", PG, processes, round(run["backlog_jobs_per_s"], 1),
                                  "jobs/s from a backlog"))
            results.append(Result(NAME, "bpmnlite", PG, processes, round(run["backlog_jobs_per_s"] / tps, 3),
                                  "x pgbench -N TPS from a backlog"))
            results.append(Result(NAME, "bpmnlite", PG, processes, round(run["clients_jobs_per_s"], 1),
                                  f"jobs/s {CLIENTS}"))
            results.append(Result(NAME, "bpmnlite", PG, processes, round(run["clients_jobs_per_s"] / tps, 3),
                                  f"x pgbench -N TPS {CLIENTS}"))
    results += _rows("sqlite-file", 1, embedded_run(EMBEDDED_INSTANCES[settings.quick], WARM_PER_PROCESS[settings.quick]))
    return results
