"""Running workers: in-process (embedded default) and as worker processes (production).

Every worker runs Dramatiq consumer threads executing ``execute_job``
messages, plus a scheduler thread that calls the reconciler: it sends timers
and retry back-offs when they fall due, re-sends due jobs whose message was
lost, and frees locks of dead workers. Many workers may run at once; the
database decides who does what.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bpmnlite.dispatch import Dispatcher
from bpmnlite.store import repository
from bpmnlite.store import tables as t

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

log = logging.getLogger("bpmnlite.worker")


class Scheduler(threading.Thread):
    """Calls ``engine.reconcile()`` every ``interval`` seconds until stopped."""

    def __init__(self, engine: Engine, interval: float = 1.0) -> None:
        super().__init__(name="bpmnlite-scheduler", daemon=True)
        self.engine = engine
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.engine.reconcile()
            except Exception:  # the database may be briefly unreachable; try again next tick
                log.exception("reconcile failed")
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=10)


class EmbeddedWorker:
    """Dramatiq's stub broker and an in-process worker, plus the scheduler: the embedded default."""

    def __init__(self, engine: Engine, threads: int = 2, interval: float = 0.2) -> None:
        if engine.dispatcher is None:
            engine.dispatcher = Dispatcher(engine, None, time_limit=int(engine.lock_duration.total_seconds() * 1000))
        self.engine = engine
        self.dispatcher = engine.dispatcher
        self.worker = self.dispatcher.worker(threads)
        self.scheduler = Scheduler(engine, interval)

    def start(self) -> EmbeddedWorker:
        self.engine.stopping.clear()
        self.worker.start()
        self.scheduler.start()
        return self

    def stop(self) -> None:
        """Stop the scheduler and the worker; running jobs finish, and do not chain into the next ones."""
        self.engine.stopping.set()
        self.scheduler.stop()
        self.dispatcher.stop_worker(self.worker, 30_000)

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is due, queued or running; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        quiet_rounds = 0
        while time.monotonic() < deadline:
            self.engine.reconcile()
            if self.dispatcher.queued() == 0 and self.dispatcher.running == 0 and not _due_or_locked(self.engine):
                quiet_rounds += 1
                if quiet_rounds >= 2:
                    return True
            else:
                quiet_rounds = 0
            with self.engine.changed:  # woken by the next commit, else look again shortly
                self.engine.changed.wait(0.02)
        return False


def _due_or_locked(engine: Engine) -> bool:
    stamp = repository.db_time(engine.clock())
    with engine.reader.connect() as conn:
        row = conn.execute(
            sa.select(t.jobs.c.id).where(
                t.jobs.c.state.in_(("executable", "timer")),
                sa.or_(t.jobs.c.due_at <= stamp, t.jobs.c.lock_owner.is_not(None)),
            ).limit(1)
        ).first()
    return row is not None


# ---------------------------------------------------------------------- worker processes
def _child(db_url: str, broker_url: str, threads: int, interval: float, plugin_modules: list[str],
           options: dict[str, Any]) -> None:
    """One worker process: an engine, a Dramatiq worker and a scheduler, until SIGTERM."""
    import importlib

    from bpmnlite.engine import Engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
    plugins: list[object] = [importlib.import_module(name) for name in plugin_modules]
    engine = Engine(db_url, broker_url=broker_url, create_schema=False, plugins=plugins, **options)
    assert engine.dispatcher is not None
    worker = engine.dispatcher.worker(threads)
    scheduler = Scheduler(engine, interval)
    stop = threading.Event()

    def on_term(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    worker.start()
    scheduler.start()
    log.info("worker %s started: %d threads", engine.dispatcher.owner, threads)
    stop.wait()
    engine.stopping.set()
    scheduler.stop()
    # running jobs finish; prefetched messages are released back to the broker
    worker.stop(timeout=int(engine.lock_duration.total_seconds() * 1000))
    engine.release_locks(engine.dispatcher.owner)
    engine.close()


def serve(
    db_url: str,
    broker_url: str,
    *,
    processes: int = 1,
    threads: int = 4,
    interval: float = 1.0,
    plugin_modules: list[str] | None = None,
    options: dict[str, Any] | None = None,
    on_started: Callable[[list[int]], None] | None = None,
) -> int:
    """Run worker processes until SIGTERM/SIGINT; returns an exit code.

    The schema is brought up to date once, before the processes start.
    """
    from bpmnlite.engine import Engine

    Engine(db_url, create_schema=True, load_entry_points=False).close()
    modules = list(plugin_modules or [])
    if processes == 1:
        _child(db_url, broker_url, threads, interval, modules, dict(options or {}))  # no extra process
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_child, args=(db_url, broker_url, threads, interval, modules, dict(options or {})), name=f"bpmnlite-worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()
    if on_started:
        on_started([c.pid or 0 for c in children])
    stop = threading.Event()

    def forward(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stop.is_set() and any(c.is_alive() for c in children):
        stop.wait(0.5)
    for child in children:
        if child.is_alive() and child.pid:
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join()
    return 0 if all(c.exitcode == 0 for c in children) else 1
