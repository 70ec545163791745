"""Where one async job's time goes, on PostgreSQL.

``python bench/profile_async.py --jobs 600`` starts instances of three async
``bench-step`` service tasks (no broker: the jobs wait in the database), then
runs every job in this thread with ``Engine.run_job``, as one worker thread
does with a message, and prints per job:

- the round trips: statements by kind, pool pre-pings, commits and rollbacks;
- the wall time by phase (acquire transaction, job command, the look-up of
  the instance's other due jobs afterwards) and, across phases, how much is
  spent waiting for PostgreSQL (statements, pings, commits) against Python.

With ``--cprofile FILE`` the job loop also runs under cProfile (slower; the
printed times then include its overhead) and the top functions are printed.
``--redis`` also runs the same number of jobs through Redis with an
in-process Dramatiq worker of one thread, and prints the share of each job
spent outside ``run_job`` (broker, message handling, idle polling).

Nothing here changes the engine: the timers are SQLAlchemy events and
wrappers set on this process's objects.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package, not its files as modules
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import bench_plugin, services  # noqa: E402

KEY = "bench_profile3"


class Meter:
    """Counts and times statements, pings, commits and phases."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.times: defaultdict[str, float] = defaultdict(float)
        self._began: dict[int, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"phase {name}"] += time.perf_counter() - began
            self.counts[f"phase {name}"] += 1

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.times[name] += time.perf_counter() - began
                self.counts[name] += 1

        return wrapper

    def attach(self, db: Any) -> None:
        import sqlalchemy as sa

        def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            self._began[id(cursor)] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            words = statement.split()
            verb = words[0].upper()
            table = next((w for w in words if w.startswith("bpm_")), "?").rstrip(",(")
            self.counts[f"sql {verb} {table}"] += 1
            self.times["db statements"] += time.perf_counter() - self._began.pop(id(cursor), time.perf_counter())

        sa.event.listen(db, "before_cursor_execute", before)
        sa.event.listen(db, "after_cursor_execute", after)
        dialect = db.dialect
        dialect.do_ping = self.timed("db ping (pool_pre_ping)", dialect.do_ping)
        dialect.do_commit = self.timed("db commit", dialect.do_commit)
        dialect.do_rollback = self.timed("db rollback", dialect.do_rollback)


def instrument(engine: Any, meter: Meter) -> None:
    from bpmnlite.jobs import executor

    meter.attach(engine.db)
    # the batched writes go straight to the driver (store.writer), outside SQLAlchemy's events
    from bpmnlite.store import writer

    writer.Batch.flush = meter.timed("db batched writes (one pipelined round trip on PostgreSQL)",  # type: ignore[method-assign]
                                     writer.Batch.flush)
    executor.due_jobs_of_instance = meter.timed("phase other due jobs of the instance", executor.due_jobs_of_instance)


def run_inline(url: str, jobs: int, profile_to: Path | None, top: int) -> None:
    from bpmnlite import Engine

    instances = max(jobs // 3, 1)
    engine = Engine(url, load_entry_points=False, plugins=[bench_plugin])
    engine.deploy(services.async_chain_xml(KEY, 3))
    for _ in range(5):
        engine.start(KEY)
    engine.run_jobs()  # warm-up: parse, compile, prepare
    for _ in range(instances):
        engine.start(KEY)
    meter = Meter()
    instrument(engine, meter)
    run_job = meter.timed("run_job", engine.run_job)
    profiler = cProfile.Profile(time.process_time) if profile_to else None  # CPU time: waits do not count
    ran = 0
    from bench.cpu_per_job import cpu_seconds, pids_matching

    backends = pids_matching(f"postgres: .* {url.rsplit('/', 1)[1]} ")
    cpu_began = time.process_time(), cpu_seconds(backends)
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    while True:
        due = engine.due_jobs(limit=500)
        if not due:
            break
        for job_id in due:
            if run_job(job_id, owner="profile", chain=False) != "done":  # one job per call, to count per job
                raise SystemExit(f"job {job_id} did not run")
            ran += 1
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began[0], cpu_seconds(backends) - cpu_began[1]
    counts = engine.count_instances()
    engine.close()
    if counts.get((KEY, "completed")) != instances + 5:
        raise SystemExit(f"not every instance completed: {counts}")
    _report(meter, ran, elapsed)
    print(f"\nCPU per job (with the meter's own overhead): {cpu[0] / ran * 1000:.3f} ms this process, "
          f"{cpu[1] / ran * 1000:.3f} ms PostgreSQL")
    if profiler and profile_to:
        profiler.dump_stats(str(profile_to))
        stats = pstats.Stats(profiler)
        for order in ("cumulative", "tottime"):
            print(f"\n=== run_job under cProfile, by {order} ===")
            stats.sort_stats(order).print_stats(top)


def _report(meter: Meter, ran: int, elapsed: float) -> None:
    print(f"\n{ran} jobs in {elapsed:.2f} s: {elapsed / ran * 1000:.2f} ms per job, {ran / elapsed:.0f} jobs/s "
          "(one thread, no broker)\n")
    print("round trips per job:")
    trips = 0.0
    for name, n in sorted(meter.counts.items()):
        if name.startswith(("sql ", "db ")):
            print(f"  {n / ran:6.2f}  {name}")
            trips += n / ran
    print(f"  {trips:6.2f}  in all\n")
    print("ms per job:")
    total = meter.times["run_job"]
    for name in sorted(meter.times, key=lambda k: -meter.times[k]):
        if name == "run_job":
            continue
        share = meter.times[name] / total * 100
        print(f"  {meter.times[name] / ran * 1000:7.3f}  {share:5.1f}%  {name}")
    waiting = sum(v for k, v in meter.times.items() if k.startswith("db "))
    print(f"  {total / ran * 1000:7.3f}  100.0%  run_job in all")
    print(f"  {waiting / ran * 1000:7.3f}  {waiting / total * 100:5.1f}%  waiting for PostgreSQL (statements, pings, "
          "commits, rollbacks)")
    print(f"  {(total - waiting) / ran * 1000:7.3f}  {(total - waiting) / total * 100:5.1f}%  Python "
          "(engine, SQLAlchemy, psycopg)")


def run_redis(url: str, redis_url: str, jobs: int) -> None:
    """The same jobs through Redis and an in-process Dramatiq worker with one thread.

    Every instance is started before the worker starts, so the worker never
    waits for work; the time not spent in ``run_job`` is the broker's.
    """
    from bpmnlite import Engine

    instances = max(jobs // 3, 1)
    queue = services.queue_name()
    engine = Engine(url, broker_url=redis_url, queue=queue, load_entry_points=False, plugins=[bench_plugin])
    try:
        engine.deploy(services.async_chain_xml(KEY, 3))
        services.truncate_runtime(url)
        assert engine.dispatcher is not None
        with services.Poller(url) as poller:
            worker = engine.dispatcher.worker(1)
            worker.start()
            for _ in range(5):  # warm-up
                engine.start(KEY)
            services.poll(lambda: poller.completed() == 5, 60, "warm-up")
            worker.stop(timeout=30_000)
            for _ in range(instances):
                engine.start(KEY)
            inside = Meter()
            timed_run_job = inside.timed("run_job", engine.run_job)

            def counting_run_job(job_id: str, **options: Any) -> str:
                outcome: str = timed_run_job(job_id, **options)
                inside.counts[f"outcome {outcome}"] += 1
                return outcome

            engine.run_job = counting_run_job  # type: ignore[method-assign]
            worker = engine.dispatcher.worker(1)
            began = time.perf_counter()
            worker.start()
            try:
                ended = services.poll(lambda: poller.completed() == instances + 5, 60 + jobs, "the jobs")
            finally:
                worker.stop(timeout=30_000)
        ran = 3 * instances
        wall = (ended - began) / ran * 1000
        own = inside.times["run_job"] / ran * 1000
        outcomes = {k.removeprefix("outcome "): v for k, v in inside.counts.items() if k.startswith("outcome ")}
        print(f"\nRedis + in-process Dramatiq worker, 1 thread, {ran} jobs queued before it started: "
              f"{wall:.2f} ms per job, {ran / (ended - began):.0f} jobs/s")
        print(f"  run_job calls: {inside.counts['run_job']} for {ran} jobs, outcomes {outcomes}")
        print(f"  {own:7.3f} ms  in run_job, per job (all calls)")
        print(f"  {wall - own:7.3f} ms  outside run_job: Dramatiq, Redis fetch and ack, sending the next job")
    finally:
        engine.close()
        services.drop_queue(redis_url, queue)


def run_latency(url: str, redis_url: str, jobs: int) -> None:
    """Split the pickup latency of idle workers: the broker's part and the engine's part.

    An in-process Dramatiq worker (4 threads) on Redis; each instance has one
    async step and starts after a pause of 300-500 ms (the worker is idle).
    Times: the start's commit (``dispatcher.send`` entered), ``run_job``
    entered (the message reached a worker thread) and the handler called.
    """
    import os
    import random
    import tempfile

    from bpmnlite import Engine

    rng = random.Random(6)
    queue = services.queue_name()
    with tempfile.TemporaryDirectory(prefix="bpmnlite-bench-profile-") as tmp:
        pickups = Path(tmp) / "pickups.tsv"
        os.environ[bench_plugin.PICKUPS_ENV] = str(pickups)
        bench_plugin._pickups_path = str(pickups)
        engine = Engine(url, broker_url=redis_url, queue=queue, load_entry_points=False, plugins=[bench_plugin])
        try:
            engine.deploy(services.async_chain_xml("bench_latency1", 1))
            services.truncate_runtime(url)
            assert engine.dispatcher is not None
            marks: dict[str, float] = {}
            send = engine.dispatcher.send
            run_job = engine.run_job

            def marked_send(job_ids: Any, **options: Any) -> int:
                marks["commit"] = time.time()
                return send(job_ids, **options)

            def marked_run_job(job_id: str, **options: Any) -> str:
                marks.setdefault("run_job", time.time())
                return run_job(job_id, **options)

            engine.dispatcher.send = marked_send  # type: ignore[method-assign]
            engine.run_job = marked_run_job  # type: ignore[method-assign]
            worker = engine.dispatcher.worker(4)
            worker.start()
            broker_ms, engine_ms = [], []
            try:
                with services.Poller(url) as poller:
                    for i in range(jobs + 5):
                        time.sleep(rng.uniform(0.3, 0.5))
                        marks.clear()
                        info = engine.start("bench_latency1")
                        services.poll(
                            lambda iid=info.id: poller.scalar("SELECT state FROM bpm_instances WHERE id = %s", (iid,))
                            == "completed", 30, "the instance", every=0.002,
                        )
                        handler = next(float(line.split("\t")[3]) for line in pickups.read_text().splitlines()
                                       if line.split("\t")[1] == info.id)
                        if i >= 5:
                            broker_ms.append((marks["run_job"] - marks["commit"]) * 1000)
                            engine_ms.append((handler - marks["run_job"]) * 1000)
            finally:
                worker.stop(timeout=30_000)
        finally:
            engine.close()
            services.drop_queue(redis_url, queue)
            bench_plugin._pickups_path = None
    print(f"\npickup latency, idle in-process worker (4 threads), {jobs} jobs, ms:")
    print("                                            p50      p90      p99")
    for name, values in (("commit -> run_job (Redis, Dramatiq)", broker_ms),
                         ("run_job -> handler (acquire, load)", engine_ms),
                         ("commit -> handler", [a + b for a, b in zip(broker_ms, engine_ms, strict=True)])):
        qs = [services.percentile(values, q) for q in (0.5, 0.9, 0.99)]
        print(f"  {name:40s} {qs[0]:7.2f}  {qs[1]:7.2f}  {qs[2]:7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profile_async.py", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--cprofile", type=Path, metavar="FILE", help="also run under cProfile; write the stats here")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--redis", action="store_true", help="also run the jobs through Redis (see above)")
    parser.add_argument("--latency", type=int, metavar="N", help="also split the pickup latency of N jobs")
    args = parser.parse_args(argv)
    services.need_postgres()
    with services.pg_database(suffix="_profile") as url:
        run_inline(url, args.jobs, None, args.top)
        if args.cprofile:
            services.truncate_runtime(url)
            run_inline(url, args.jobs, args.cprofile, args.top)
        if args.redis:
            services.need_redis()
            run_redis(url, services.REDIS_URL, args.jobs)
        if args.latency:
            services.need_redis()
            run_latency(url, services.REDIS_URL, args.latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
