"""Memory: the resident set of one worker process while it runs many jobs.

PostgreSQL + Redis, one ``bpmnlite worker`` process (``--processes 1``: the
command's own process runs the jobs) with 4 threads. The bench starts
instances of a model of 10 async ``bench-step`` service tasks until the
job count is reached (100,000 jobs; quick: 1,000), while the worker runs them.
A sampler thread reads the worker's ``VmRSS`` and ``VmHWM`` (peak) from
``/proc/<pid>/status`` and the number of jobs done so far (ended service task
activities) every ``interval`` seconds.

The first 10% of the jobs are the warm-up (pools, caches, the parsed model).
After that, "RSS growth" is the largest RSS in the last quarter of the jobs
divided by the largest RSS in the first quarter after the warm-up, and the
slope is a least-squares fit of RSS against jobs done, in MiB per 10,000
jobs. ``BPMNLITE_BENCH_MEMORY_JOBS`` overrides the job count (for a shorter
full run).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bench import bench_plugin, services
from bench.registry import BenchError, Result, Settings, Target, Unavailable, scenario

NAME = "memory"
KEY = "bench_async10"
STEPS = 10
PG = "postgresql+redis"
JOBS = {False: 100_000, True: 1_000}
INTERVAL_S = {False: 1.0, True: 0.02}
WARM_SHARE = 0.10
GROWTH_LIMIT = 1.05


def _jobs(settings: Settings) -> int:
    override = os.environ.get("BPMNLITE_BENCH_MEMORY_JOBS")
    return int(override) if override else JOBS[settings.quick]


def _plan(settings: Settings) -> dict[str, object]:
    return {
        "jobs": _jobs(settings),
        "async_steps_per_instance": STEPS,
        "worker": "1 process x 4 threads",
        "sample_interval_s": INTERVAL_S[settings.quick],
        "warm_up_share": WARM_SHARE,
    }


def _status_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


class Sampler(threading.Thread):
    def __init__(self, pid: int, url: str, interval: float) -> None:
        super().__init__(name="bench-memory-sampler", daemon=True)
        self.pid = pid
        self.url = url
        self.interval = interval
        self.samples: list[tuple[int, float, float]] = []  # (jobs done, rss MiB, hwm MiB)
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with services.Poller(self.url) as poller:
                while not self._stop_event.is_set():
                    rss, hwm = _status_mib(self.pid)
                    done = poller.scalar(
                        "SELECT count(*) FROM bpm_activity_history WHERE element_kind = 'serviceTask' "
                        "AND ended_at IS NOT NULL"
                    )
                    self.samples.append((int(done), rss, hwm))
                    self._stop_event.wait(self.interval)
        except BaseException as exc:  # reported by the scenario
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def slope_per_10k(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of MiB against jobs, per 10,000 jobs."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var * 10_000


def measure(url: str, redis_url: str, jobs: int, interval: float) -> dict[str, float]:
    from bpmnlite import Engine

    if not Path("/proc/self/status").exists():
        raise Unavailable("the memory scenario reads /proc/<pid>/status (Linux)")
    instances = -(-jobs // STEPS)
    queue = services.queue_name()
    engine = Engine(url, broker_url=redis_url, queue=queue, load_entry_points=False, plugins=[bench_plugin])
    workers = services.Workers(url, redis_url, queue, processes=1, threads=4)
    sampler: Sampler | None = None
    try:
        engine.deploy(services.async_chain_xml(KEY, STEPS))
        workers.start()
        sampler = Sampler(workers.pids()[0], url, interval)
        sampler.start()
        for _ in range(instances):
            engine.start(KEY)
        with services.Poller(url) as poller:
            services.poll(lambda: poller.completed() == instances, 60 + jobs / 2, f"{jobs} jobs", every=0.05)
            final = _status_mib(workers.pids()[0])
            sampler.stop()
            workers.stop()
            services.check_all_completed(poller, instances, NAME)
            workers.check_log(NAME)
    finally:
        if sampler is not None:
            sampler.stop()
        workers.stop()
        engine.close()
        services.drop_queue(redis_url, queue)
    if sampler.error is not None:
        raise BenchError(f"{NAME}: the sampler failed: {sampler.error!r}")
    total = instances * STEPS
    after = [(done, rss) for done, rss, _ in sampler.samples if done >= WARM_SHARE * total]
    if len(after) < 4:
        raise BenchError(f"{NAME}: only {len(after)} samples after the warm-up; lower the interval")
    span = total * (1 - WARM_SHARE)
    first = [rss for done, rss in after if done <= WARM_SHARE * total + span / 4] or [after[0][1]]
    last = [rss for done, rss in after if done >= total - span / 4] or [after[-1][1]]
    return {
        "jobs": total,
        "rss_after_warm_up": after[0][1],
        "rss_end": final[0],
        "peak": final[1],
        "slope": slope_per_10k(after),
        "growth": max(last) / max(first),
    }


@scenario(
    NAME,
    "PostgreSQL + Redis, one worker process (4 threads) running n jobs: its RSS after the warm-up, at the end "
    "and at its peak (MiB), the slope (MiB per 10k jobs) and the growth from the first to the last quarter",
    targets=(
        Target(f"worker RSS does not grow (last quarter <= {GROWTH_LIMIT}x first quarter)", NAME, None,
               unit="x RSS growth (last vs first quarter)", at_most=GROWTH_LIMIT),
    ),
    plan=_plan,
)
def memory(settings: Settings) -> list[Result]:
    services.need_postgres()
    services.need_redis()
    with services.pg_database() as url:
        m = measure(url, services.REDIS_URL, _jobs(settings), INTERVAL_S[settings.quick])
    n = int(m["jobs"])
    return [
        Result(NAME, "bpmnlite", PG, n, round(m["rss_after_warm_up"], 1), "MiB RSS after warm-up"),
        Result(NAME, "bpmnlite", PG, n, round(m["rss_end"], 1), "MiB RSS at end"),
        Result(NAME, "bpmnlite", PG, n, round(m["peak"], 1), "MiB peak RSS (VmHWM)"),
        Result(NAME, "bpmnlite", PG, n, round(m["slope"], 3), "MiB RSS per 10k jobs (slope)"),
        Result(NAME, "bpmnlite", PG, n, round(m["growth"], 3), "x RSS growth (last vs first quarter)"),
    ]
