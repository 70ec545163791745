"""The only module that imports Dramatiq: brokers, the ``execute_job`` actor, workers.

A message carries a job id and nothing else; the database decides whether the
job runs (see ``jobs.acquire``). So Dramatiq's own retries are off
(``max_retries=0``), a lost or duplicated message is harmless, and the
reconciler re-sends what a crash lost. Production uses Redis; the embedded
default uses Dramatiq's stub broker with an in-process worker, running the
same actor code.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.time_limit import TimeLimitExceeded

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

log = logging.getLogger("bpmnlite.dispatch")

QUEUE = "bpmnlite"
ACTOR = "bpmnlite_execute_job"


def worker_id() -> str:
    """A name unique to this thread's worker process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def make_broker(url: str | None) -> dramatiq.Broker:
    """A Redis broker for ``redis://``, ``rediss://`` and ``unix://`` URLs; the in-process stub broker for
    None or ``stub://``.

    Raises:
        ValueError: any other URL (a typo must not silently send messages nowhere).
    """
    middleware = [TimeLimit(), ShutdownNotifications(), Retries(max_retries=0)]
    if url is None or url == "stub://":
        return StubBroker(middleware=middleware)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, middleware=middleware)  # type: ignore[no-untyped-call]
    raise ValueError(f"unsupported broker URL {redact(url)!r}: use redis://host:port/db (or stub:// in-process)")


def is_time_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, Dramatiq's time-limit interrupt."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, TimeLimitExceeded):
            return True
        seen = seen.__context__
    return False


def redact(url: str) -> str:
    """A URL with its password replaced, fit for logs."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


class Dispatcher:
    """Sends "job X may be due" messages and runs them in workers.

    Args:
        engine: the engine whose jobs run.
        broker_url: ``redis://host:port/db`` or None for the stub broker.
        queue: the Dramatiq queue name.
        time_limit: the longest a job may run before Dramatiq interrupts it
            (milliseconds); for an element with ``bpmnlite:timeout`` the worker
            sets that limit itself when it starts the job (``limit_current_job``).
    """

    def __init__(self, engine: Engine, broker_url: str | None = None, *, queue: str = QUEUE,
                 time_limit: int = 600_000) -> None:
        self.engine = engine
        self.broker_url = broker_url
        self.queue = queue
        self.broker = make_broker(broker_url)
        self.owner = worker_id()
        self.actor: Any = dramatiq.actor(
            broker=self.broker, actor_name=ACTOR, queue_name=queue, max_retries=0, time_limit=time_limit
        )(self._execute)
        self.running = 0
        self._running_lock = threading.Lock()
        self._booted = False
        self._local = threading.local()

    @property
    def is_stub(self) -> bool:
        return isinstance(self.broker, StubBroker)

    # ------------------------------------------------------------------ sending
    def send(self, job_ids: Iterable[str]) -> int:
        """Send one message per job id; returns how many were sent."""
        sent = 0
        for job_id in job_ids:
            self.actor.send_with_options(args=(job_id,))
            sent += 1
        return sent

    # ------------------------------------------------------------------ running
    def _execute(self, job_id: str) -> None:
        """The actor: run the job if this worker wins it; never raise into Dramatiq."""
        with self._running_lock:
            self.running += 1
        self._local.in_actor = True
        try:
            self.engine.run_job(job_id, owner=self.owner)
        except TimeLimitExceeded:
            self.engine.job_timed_out(job_id, owner=self.owner)
        except Exception:  # run_job records failures itself; this is a last resort for the log
            log.exception("job %s: unexpected error outside the job's command", job_id)
        finally:
            self._local.in_actor = False
            with self._running_lock:
                self.running -= 1

    def limit_current_job(self, milliseconds: int) -> None:
        """Set the time limit of the job this worker thread runs now (an element's ``bpmnlite:timeout``).

        The worker reads the limit from the model itself, so it holds whoever
        sent the message. Outside an actor (``run_jobs`` in the caller's
        thread) there is no limit to set.
        """
        if not getattr(self._local, "in_actor", False):
            return
        for middleware in self.broker.middleware:
            if isinstance(middleware, TimeLimit):
                middleware.manager.add_timeout(threading.get_ident(), milliseconds)  # type: ignore[no-untyped-call]

    def worker(self, threads: int = 4, prefetch: int | None = None, poll_ms: int = 10) -> dramatiq.Worker:
        """A Dramatiq worker for this broker (not started).

        ``poll_ms`` is how long an idle consumer waits before it asks the
        broker again: Dramatiq's default (1 s, 100 ms here before) dominated
        the time from commit to pickup.
        """
        if not self._booted:
            # Dramatiq's own CLI emits process_boot; without it the TimeLimit monitor never starts
            self.broker.emit_after("process_boot")
            self._booted = True
        w = dramatiq.Worker(self.broker, queues={self.queue}, worker_threads=threads, worker_timeout=poll_ms)
        # Dramatiq's default prefetch (2 per thread) starves an idle-then-busy worker; measured in DESIGN §3
        w.queue_prefetch = prefetch or max(threads * 16, 64)
        return w

    def stop_worker(self, worker: dramatiq.Worker, timeout_ms: int) -> None:
        """Stop a worker and detach it from the broker (a stopped Dramatiq worker stays registered otherwise)."""
        worker.stop(timeout=timeout_ms)
        self.broker.middleware[:] = [m for m in self.broker.middleware if getattr(m, "worker", None) is not worker]

    def queued(self) -> int:
        """Messages waiting in the queue (stub broker only; -1 when unknown)."""
        if isinstance(self.broker, StubBroker):
            q = self.broker.queues.get(self.queue)
            return q.qsize() if q is not None else 0
        return -1

    def purge(self) -> None:
        """Drop every queued message (operators, and tests of lost messages)."""
        self.broker.flush_all()
