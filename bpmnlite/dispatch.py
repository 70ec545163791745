"""The only module that imports Dramatiq: brokers, the ``execute_job`` actor, workers.

A message carries a job id and nothing else; the database decides whether the
job runs (see ``jobs.executor``). So Dramatiq's own retries are off
(``max_retries=0``), a lost or duplicated message is harmless, and the
reconciler re-sends what a crash lost. Production uses Redis; the embedded
default uses Dramatiq's stub broker with an in-process worker, running the
same actor code.

An idle Redis consumer does not poll: it blocks on a wake-up list that every
send pushes to in the same round trip as the message (see ``WakingRedisBroker``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, Retries, ShutdownNotifications, TimeLimit
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
        if _ACKS_ON_CONSUMER_THREAD:  # poll as Dramatiq does
            return RedisBroker(url=url, middleware=middleware)  # type: ignore[no-untyped-call]
        return WakingRedisBroker(url=url, middleware=[*middleware, _WakeOnShutdown()])
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


_ACKS_ON_CONSUMER_THREAD = not hasattr(dramatiq.worker, "ConsumerThread") or hasattr(
    dramatiq.worker.ConsumerThread, "handle_acks")
"""Older Dramatiq acks from the consumer thread's loop, between two waits: a blocked consumer would hold acks back."""

WAKE_BACKLOG = 16
"""The most wake-ups a queue's list keeps: more would only wake consumers to find it empty."""
ETA_POLL_MS = 10
"""How often a delay-queue consumer that holds delayed messages looks whether one is due."""


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, whose idle consumers wait for a wake-up instead of polling.

    A send pushes a token onto the queue's wake-up list (``<namespace>:__wake__.<queue>``)
    in the same round trip as the message. A consumer that found the queue empty
    blocks on that list (BLPOP) and fetches again when it pops a token, or after
    ``idle_ms`` at the latest. The engine's job messages are stored by a script of
    our own with their wake-ups (``send_jobs``), in Dramatiq's format and keys;
    fetches, acks, requeues, delays and heartbeats are Dramatiq's own, apart from
    the wait between two fetches.

    No wake-up is lost: a consumer blocks only after a fetch found the queue
    empty, every message enqueued after that fetch comes with a token, and a
    token stays in the list until a consumer pops it and fetches (unless the
    connection drops in between: then the fallback poll finds the message). BLPOP
    serves one waiting consumer per token, so one send wakes one idle consumer,
    not all of them. The list is trimmed to ``WAKE_BACKLOG`` tokens, never to none.

    Args:
        idle_ms: the fallback poll of an idle consumer, for messages put back
            without a token (Dramatiq's recovery of a dead worker's messages,
            senders that do not wake) and tokens lost with a connection.
        **options: ``RedisBroker``'s (``url``, ``middleware``, ...).
    """

    def __init__(self, *, idle_ms: int = 1000, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.idle_ms = idle_ms
        # the URL's, or redis-py's default (5 s in redis-py 8, none in older ones);
        # a connection object made only to read it never connects
        pool = self.client.connection_pool
        self.socket_timeout: float | None = pool.connection_class(**pool.connection_kwargs).socket_timeout

    @property
    def consumer_class(self) -> type[WakingConsumer]:
        return WakingConsumer

    def wake_key(self, queue_name: str) -> str:
        """The wake-up list of a queue (the delay queue ``<queue>.DQ`` has its own)."""
        return f"{self.namespace}:__wake__.{queue_name}"

    def wake(self, pipe: Any, queue_name: str) -> None:
        """Add a wake-up for ``queue_name`` to a pipeline."""
        key = self.wake_key(queue_name)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, WAKE_BACKLOG - 1)

    def dispatch_on(self, pipe: Any, command: str, queue_name: str, *args: Any) -> None:
        """Add one of Dramatiq's ``dispatch`` script commands to a pipeline.

        RedisBroker runs every ``do_<command>`` through that script; this passes the
        same arguments (RedisBroker._dispatch) as a raw EVALSHA: redis-py's Script
        object in a pipeline costs a SCRIPT EXISTS round trip every time. A Redis
        without the script answers NoScriptError; ``do_<command>`` loads it.
        """
        unpack = self._max_unpack_size()  # type: ignore[no-untyped-call]
        pipe.evalsha(self.scripts["dispatch"].sha, 1, self.namespace, command, current_millis(), queue_name,
                     self.broker_id, self.heartbeat_timeout, self.dead_message_ttl,
                     self._should_do_maintenance(command), unpack, *args)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        """Enqueue with Dramatiq's own script and wake a consumer, in one round trip.

        Dramatiq's own sends (``actor.send``, delayed messages) come this way;
        the engine's job messages take ``send_jobs``.
        """
        pipe = self.client.pipeline(transaction=False)
        self.dispatch_on(pipe, "enqueue", queue_name, message_id, data)
        self.wake(pipe, queue_name)
        self._execute_loading(pipe.execute, self.scripts["dispatch"].script)

    def send_jobs(self, queue_name: str, actor_name: str, job_ids: list[str]) -> None:
        """Enqueue one message per job id and wake consumers: one EVALSHA per ``SEND_CHUNK`` ids.

        What ``actor.send`` would store, for a fraction of its cost (measured in
        docs/performance.md): the message is Dramatiq's JSON (``Message.decode``
        reads it), put where Dramatiq's enqueue puts it: its data in the hash
        ``<namespace>:<queue>.msgs`` under a fresh ``redis_message_id``, that id
        at the tail of the list ``<namespace>:<queue>``. A script of our own
        (``SEND_SCRIPT``) does that for every id and pushes the wake-ups, atomically.
        Dramatiq's enqueue script would also record the sender in its heartbeat set
        and sometimes run its maintenance; senders need neither (its workers'
        fetches and acks do both).
        """
        prefix = f'{{"queue_name":{json.dumps(queue_name)},"actor_name":{json.dumps(actor_name)},"args":['
        full_name = f"{self.namespace}:{queue_name}"
        keys = (f"{full_name}.msgs", full_name, self.wake_key(queue_name))
        for start in range(0, len(job_ids), SEND_CHUNK):
            chunk = job_ids[start:start + SEND_CHUNK]
            now = current_millis()
            args: list[str] = []
            for job_id in chunk:
                redis_id = str(uuid.uuid4())
                args.append(redis_id)
                args.append(f'{prefix}{json.dumps(job_id)}],"kwargs":{{}},"options":{{"redis_message_id":"{redis_id}"}},'
                            f'"message_id":"{uuid.uuid4()}","message_timestamp":{now}}}')
            wakeups = min(len(chunk), WAKE_BACKLOG)
            send = functools.partial(self.client.evalsha, _SEND_SHA, 3, *keys, wakeups, WAKE_BACKLOG - 1, *args)
            self._execute_loading(send, SEND_SCRIPT)

    def _execute_loading(self, execute: Callable[[], object], script: Any) -> None:
        """Run ``execute``; if Redis lacks ``script`` (a new or restarted Redis), load it and run again."""
        try:
            execute()
        except redis.exceptions.NoScriptError:
            self.client.script_load(script)
            execute()


SEND_CHUNK = 500
"""Job messages per EVALSHA in ``send_jobs``: a reconciler's large re-send must not hold Redis up for long."""
SEND_SCRIPT = """
-- KEYS: the queue's message hash, the queue's list, its wake-up list
-- ARGV: wake-ups to push, the wake-up list's last index to keep, then (redis id, message data) pairs
for i = 3, #ARGV, 2 do
  redis.call("hset", KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call("rpush", KEYS[2], ARGV[i])
end
for i = 1, tonumber(ARGV[1]) do
  redis.call("lpush", KEYS[3], 1)
end
redis.call("ltrim", KEYS[3], 0, ARGV[2])
"""
_SEND_SHA = hashlib.sha1(SEND_SCRIPT.encode()).hexdigest()


class WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that with an empty queue it waits for a wake-up.

    The other waits are Dramatiq's: a consumer whose worker is stopping sleeps
    ``timeout`` (the worker timeout) between fetches, and a delay-queue consumer
    that holds delayed messages looks for due ones every ``ETA_POLL_MS``. With
    ``prefetch`` messages outstanding it waits for a worker thread's ack, not
    for a timer.
    """

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self.wake_key = broker.wake_key(queue_name)
        self.own_key = f"{self.wake_key}.{uuid.uuid4().hex}"  # ``interrupt`` wakes this consumer alone
        # the fallback poll; a blocked consumer sends no heartbeat, and Dramatiq takes a
        # worker silent for heartbeat_timeout for dead and hands its messages to others;
        # and a BLPOP longer than the socket timeout would fail as a lost connection
        self.idle_s = min(broker.idle_ms / 1000, broker.heartbeat_timeout / 4000,
                          broker.socket_timeout / 2 if broker.socket_timeout else float("inf"))
        self.delayed = queue_name.endswith(".DQ")
        self.stopping = False
        self.wakeups = 0  # waits ended by a send's wake-up, not by the fallback poll
        self._drained = False  # the last fetch emptied the queue: wait before the next
        self.idle = threading.Event()  # set while blocked on the wake-up list
        self._room = threading.Event()  # set by every ack and nack

    def __next__(self) -> Any:
        if not self.message_cache:
            try:
                self._room.clear()
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    self._room.wait(self.timeout / 1000)
                    return None
                if self._drained:
                    fetched = self._wait_and_fetch(room)
                else:
                    fetched = self.broker.do_fetch(self.queue_name, room)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]
            # fewer than asked for (and than the script returns at most): the queue was
            # empty then, and every message enqueued since brought a wake-up
            self._drained = len(fetched) < min(room, self.broker._max_unpack_size())
            if not fetched:
                return None
            self.message_cache = fetched
        # Dramatiq's own bookkeeping of a fetched message
        return super().__next__()  # type: ignore[no-untyped-call]

    def _wait_and_fetch(self, room: int) -> list[Any]:
        """Wait for a wake-up (or the fallback poll), then fetch.

        One round trip: the fetch is pipelined behind the BLPOP, and Redis runs it
        as soon as the BLPOP returns. Its timestamp (Dramatiq's heartbeat) is then
        up to ``idle_s`` old, which ``idle_s`` <= heartbeat_timeout / 4 allows for.
        """
        if self.stopping or (self.delayed and self.outstanding_message_count):
            pause = self.timeout if self.stopping else min(self.timeout, ETA_POLL_MS)
            time.sleep(pause / 1000)
            return list(self.broker.do_fetch(self.queue_name, room))
        pipe = self.broker.client.pipeline(transaction=False)
        pipe.blpop([self.wake_key, self.own_key], self.idle_s)
        self.broker.dispatch_on(pipe, "fetch", self.queue_name, room)
        self.idle.set()
        try:
            popped, fetched = pipe.execute(raise_on_error=False)
        finally:
            self.idle.clear()
        if isinstance(popped, Exception):
            raise popped
        if popped is not None and popped[0] in (self.wake_key, self.wake_key.encode()):
            self.wakeups += 1
        if isinstance(fetched, redis.exceptions.NoScriptError):
            return list(self.broker.do_fetch(self.queue_name, room))
        if isinstance(fetched, Exception):
            raise fetched
        return list(fetched)

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self._room.set()

    def requeue(self, messages: Iterable[Any]) -> None:
        """Dramatiq's requeue (a stopping worker's prefetched messages), plus a wake-up for another worker."""
        messages = list(messages)
        super().requeue(messages)  # type: ignore[no-untyped-call]
        if messages:
            pipe = self.broker.client.pipeline(transaction=False)
            self.broker.wake(pipe, self.queue_name)
            pipe.execute()

    def interrupt(self) -> None:
        """End a wait now; from here on wait like Dramatiq does (the worker is stopping)."""
        self.stopping = True
        try:
            pipe = self.broker.client.pipeline(transaction=False)
            pipe.lpush(self.own_key, 1)
            pipe.pexpire(self.own_key, 60_000)  # the consumer may be past its last wait
            pipe.execute()
        except redis.RedisError:
            log.warning("could not wake consumer of %s; it stops after its fallback poll", self.queue_name)

    def close(self) -> None:
        try:
            self.broker.client.delete(self.own_key)
        except redis.RedisError:
            pass  # it expires


class _WakeOnShutdown(Middleware):
    """Wakes the idle consumers of a stopping worker, which would otherwise wait out their fallback poll."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for thread in worker.consumers.values():
            if isinstance(thread.consumer, WakingConsumer):
                thread.consumer.interrupt()


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
        if isinstance(self.broker, WakingRedisBroker):
            ids = list(job_ids)
            self.broker.send_jobs(self.queue, ACTOR, ids)
            return len(ids)
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
            if self.engine.stopping.is_set():
                # a stopping worker starts no new job (Dramatiq may still hand it messages while it
                # shuts down): the job's row stays due, and a reconciler sends it to a worker that runs
                from bpmnlite.jobs.executor import give_back  # it imports this module

                give_back(self.engine, job_id)
                return
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

    def worker(self, threads: int = 4, prefetch: int | None = None, poll_ms: int | None = None,
               idle_ms: int = 1000) -> dramatiq.Worker:
        """A Dramatiq worker for this broker (not started).

        Args:
            threads: worker threads.
            prefetch: messages a consumer holds at most (default 16 per thread, at least 64).
            poll_ms: Dramatiq's worker timeout: how soon its idle threads see
                that they must stop (each wakes this often), and how often a
                stub-broker consumer looks for due delayed messages. Default 10 ms
                on the stub broker; 100 ms on Redis, whose consumers wait for
                wake-ups instead and check delayed messages every ``ETA_POLL_MS``.
            idle_ms: Redis only: the fallback poll of an idle consumer, which
                otherwise waits for a send's wake-up (see ``WakingRedisBroker``).
        """
        if not self._booted:
            # Dramatiq's own CLI emits process_boot; without it the TimeLimit monitor never starts
            self.broker.emit_after("process_boot")
            self._booted = True
        if isinstance(self.broker, WakingRedisBroker):
            self.broker.idle_ms = idle_ms
        if poll_ms is None:
            poll_ms = 10 if self.is_stub else 100
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
