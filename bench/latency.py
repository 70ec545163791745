"""Latency: from the commit that creates a job to the start of its handler, with idle workers.

PostgreSQL + Redis, one ``bpmnlite worker`` process with 4 threads, started
and warmed up first. The bench starts instances of a model whose first
element is an async service task (``bench-step``), one at a time:

- the commit time is taken when ``Engine.start`` hands the job to the
  dispatcher, right after its transaction committed (the bench wraps the
  engine's ``dispatcher.send`` to take ``time.time()`` as it is entered);
- the handler start time is the first thing the ``bench-step`` handler does in
  the worker (``time.time()``, written to a file keyed by its idempotency key,
  ``bench/bench_plugin.py``).

So a figure covers the Redis message (send, and the worker's consumer
fetching it), the job's acquisition transaction and the job command up to
the handler call (loading the instance). Both clocks are the same machine's.
After each job the instance must complete; then the bench pauses a random
300-500 ms (seeded) so that the worker is idle again when the next job comes:
an idle Dramatiq Redis consumer polls Redis with a back-off that grows from
5 ms to the worker timeout (bpmnlite sets 100 ms; with Dramatiq's jitter each
idle pause is 50-100 ms), and after 300 ms of idleness it is at that ceiling.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_plugin, services
from bench.registry import BenchError, Result, Settings, Target, scenario

NAME = "latency"
KEY = "bench_latency"
PG = "postgresql+redis"
JOBS = {False: 200, True: 10}
WARM = 3
PAUSE_S = (0.3, 0.5)


def _plan(settings: Settings) -> dict[str, object]:
    return {
        "jobs": JOBS[settings.quick],
        "warm_up_jobs": WARM,
        "worker": "1 process x 4 threads",
        "pause_between_jobs_s": list(PAUSE_S),
    }


def _pickups(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        key, instance_id, _element, at = line.split("\t")
        out[instance_id] = float(at)
    return out


def measure(url: str, redis_url: str, jobs: int) -> list[float]:
    """Milliseconds from commit to handler start, one per job."""
    from bpmnlite import Engine

    rng = random.Random(6)
    with tempfile.TemporaryDirectory(prefix="bpmnlite-bench-latency-") as tmp:
        pickups = Path(tmp) / "pickups.tsv"
        pickups.touch()
        queue = services.queue_name()
        engine = Engine(url, broker_url=redis_url, queue=queue, load_entry_points=False, plugins=[bench_plugin])
        workers = services.Workers(
            url, redis_url, queue, processes=1, threads=4, env={bench_plugin.PICKUPS_ENV: str(pickups)}
        )
        try:
            engine.deploy(services.async_chain_xml(KEY, 1))
            assert engine.dispatcher is not None
            send = engine.dispatcher.send
            commits: list[float] = []

            def marked_send(job_ids: Any, **options: Any) -> int:
                commits.append(time.time())  # the start command has just committed
                return send(job_ids, **options)

            engine.dispatcher.send = marked_send  # type: ignore[method-assign]
            workers.start()
            latencies: list[float] = []
            with services.Poller(url) as poller:
                for i in range(WARM + jobs):
                    commits.clear()
                    info = engine.start(KEY)
                    if len(commits) != 1 or info.state != "waiting":
                        raise BenchError(f"{NAME}: the start should have created one job: {info}")
                    services.poll(
                        lambda iid=info.id: poller.scalar("SELECT state FROM bpm_instances WHERE id = %s", (iid,))
                        == "completed", 30, f"instance {info.id} to complete", every=0.002,
                    )
                    if i >= WARM:
                        picked = _pickups(pickups).get(info.id)
                        if picked is None:
                            raise BenchError(f"{NAME}: the handler of {info.id} left no start time")
                        latencies.append((picked - commits[0]) * 1000)
                    time.sleep(rng.uniform(*PAUSE_S))  # let the worker go idle
                workers.stop()
                services.check_all_completed(poller, WARM + jobs, NAME)
                workers.check_log(NAME)
        finally:
            workers.stop()
            engine.close()
            services.drop_queue(redis_url, queue)
    if len(latencies) != jobs:
        raise BenchError(f"{NAME}: {len(latencies)} latencies for {jobs} jobs")
    return latencies


@scenario(
    NAME,
    "PostgreSQL + Redis, idle worker (1 process x 4 threads): ms from the commit that creates a job to the "
    "start of its handler; p50, p99 and max over n jobs",
    targets=(Target("p50 pickup < 5 ms", NAME, None, unit="ms pickup p50", at_most=5.0),),
    plan=_plan,
)
def latency(settings: Settings) -> list[Result]:
    services.need_postgres()
    services.need_redis()
    jobs = JOBS[settings.quick]
    with services.pg_database() as url:
        values = measure(url, services.REDIS_URL, jobs)
    return [
        Result(NAME, "bpmnlite", PG, jobs, round(services.percentile(values, 0.5), 2), "ms pickup p50"),
        Result(NAME, "bpmnlite", PG, jobs, round(services.percentile(values, 0.99), 2), "ms pickup p99"),
        Result(NAME, "bpmnlite", PG, jobs, round(max(values), 2), "ms pickup max"),
    ]
