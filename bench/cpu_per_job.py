"""CPU time per async job, split between PostgreSQL, the worker process and Redis.

On a small machine the job path is CPU-bound: this tells which process pays.
A ``bpmnlite worker`` drains a backlog of instances of 3 async steps (it is
paused with SIGSTOP while they are started, as in ``async-throughput``), and
the user + system CPU time of the worker's processes, of the PostgreSQL
backends of the bench database and of ``redis-server`` is read from
``/proc/<pid>/stat`` before and after. Linux only; uses the bench's database
and Redis settings (``bench/services.py``).

    python bench/cpu_per_job.py --instances 600 --processes 1

With ``--fed-by F``, the workers are not paused: F feeder processes
(``services.Feeders``, as in ``async-throughput``) start the instances
between them while the workers run, and their CPU is counted too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_plugin, services  # noqa: E402

KEY = "bench_cpu3"
STEPS = 3


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes (those that are gone count as 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pids_matching(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in found.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--job-batch", type=int, default=None, help="the workers' --job-batch (default: theirs)")
    parser.add_argument("--fed-by", type=int, default=0, metavar="F",
                        help="F feeder processes start the instances while the workers run (default: a backlog)")
    args = parser.parse_args()

    from bpmnlite import Engine

    services.need_postgres()
    services.need_redis()
    with services.pg_database(suffix="_cpu") as url:
        with Engine(url, load_entry_points=False, plugins=[bench_plugin]) as engine:
            engine.deploy(services.async_chain_xml(KEY, STEPS))
        database = url.rsplit("/", 1)[1]
        queue = services.queue_name()
        feeder = Engine(url, broker_url=services.REDIS_URL, queue=queue, load_entry_points=False,
                        plugins=[bench_plugin], create_schema=False)
        workers = services.Workers(url, services.REDIS_URL, queue, processes=args.processes, threads=args.threads,
                                   job_batch=args.job_batch)
        clients = None
        feed_seconds = 0.0
        if args.fed_by:
            clients = services.Feeders(url, services.REDIS_URL, queue, KEY, clients=args.fed_by,
                                       instances=args.instances, warm=1)
        try:
            if clients is not None:
                clients.start()
            workers.start()
            with services.Poller(url) as poller:
                warm = 10 * args.processes
                for _ in range(warm):
                    feeder.start(KEY)
                services.poll(lambda: poller.completed() == warm, 120, "the warm-up instances")
                if clients is None:
                    workers.backlog(feeder, KEY, args.instances)
                else:
                    clients.wait_for("loaded", 120)
                    clients.send("warm")
                    clients.wait_for("ready", 60)
                    warm += args.fed_by
                    services.poll(lambda: poller.completed() == warm, 120, "the feeders' warm-up instances")
                groups = {"postgres": pids_matching(f"postgres: .* {database} "), "worker": workers.pids(),
                          "redis": pids_matching("redis-server")}
                if clients is not None:
                    groups["feeders"] = [proc.pid for proc in clients.procs]
                before = {name: cpu_seconds(pids) for name, pids in groups.items()}
                began = time.perf_counter()
                if clients is not None:
                    clients.send("go")
                total = warm + args.instances
                services.poll(lambda: poller.completed() == total, 60 + args.instances, "the backlog")
                elapsed = time.perf_counter() - began
                # backends opened during the drain (a thread's first connection) count from zero
                groups["postgres"] = sorted(set(groups["postgres"]) | set(pids_matching(f"postgres: .* {database} ")))
                after = {name: cpu_seconds(pids) for name, pids in groups.items()}
                if clients is not None:
                    feed_seconds = max(float(s) for s in clients.wait_for("done", 60))
        finally:
            if clients is not None:
                clients.stop()
            workers.stop()
            feeder.close()
            services.drop_queue(services.REDIS_URL, queue)
    jobs = STEPS * args.instances
    print(f"{jobs} jobs in {elapsed:.2f} s: {jobs / elapsed:.0f} jobs/s, {args.processes} process(es) x "
          f"{args.threads} threads" + (f", fed by {args.fed_by} (feeding took {feed_seconds:.2f} s)"
                                       if args.fed_by else ", from a backlog"))
    for name in groups:
        print(f"  {(after[name] - before[name]) / jobs * 1000:6.2f} ms CPU per job  {name}")
    spent = sum(after[name] - before[name] for name in groups)
    print(f"  {spent / jobs * 1000:6.2f} ms CPU per job  in all ({spent / elapsed:.2f} cores busy)")
    print("  (the PostgreSQL line includes the bench's own polling backend)")


if __name__ == "__main__":
    main()
