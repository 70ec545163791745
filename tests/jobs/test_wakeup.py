"""Idle Redis consumers wait for a send's wake-up, not for a poll (``dispatch.WakingRedisBroker``).

The fallback poll is set to a minute here (15 s after the heartbeat cap),
beyond every deadline below: a message handled in time was found through its
wake-up. Each test uses a queue of its own on Redis db 9 and deletes only its keys.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis

from bpmnlite import dispatch
from bpmnlite.dispatch import WAKE_BACKLOG, Dispatcher, WakingConsumer, WakingRedisBroker

from ..conftest import need_redis

REDIS_URL = os.environ.get("BPMNLITE_TEST_REDIS_WAKEUP", "redis://127.0.0.1:6379/9")
# a socket timeout longer than the waits (the fallback poll is capped at half of it)
BROKER_URL = REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "socket_timeout=120"
IDLE_MS = 60_000
DEADLINE = 10.0

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(dispatch._ACKS_ON_CONSUMER_THREAD, reason="this Dramatiq acks on the consumer thread: no wake-ups"),
]


class Jobs:
    """Stands in for the engine: records the job ids its worker threads run."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._changed = threading.Condition()
        self.stopping = threading.Event()  # as Engine.stopping: these workers never stop mid-test

    def run_job(self, job_id: str, owner: str) -> str:
        with self._changed:
            self.ran.append(job_id)
            self._changed.notify_all()
        return "done"

    def job_timed_out(self, job_id: str, owner: str) -> None:
        raise AssertionError(f"job {job_id} timed out")

    def wait_for(self, count: int) -> list[str]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.ran) >= count, timeout=DEADLINE):
                raise AssertionError(f"{len(self.ran)} of {count} jobs ran within {DEADLINE} s")
            return list(self.ran)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    need_redis(REDIS_URL)  # this database is shared: each test cleans only its own queue's keys
    c = redis.Redis.from_url(REDIS_URL)
    yield c
    c.close()


@pytest.fixture
def queue(client: redis.Redis) -> Iterator[str]:
    name = f"wakeup-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(client.scan_iter(match=f"dramatiq:*{name}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def dispatchers(client: redis.Redis, queue: str) -> Iterator[Callable[[], tuple[Dispatcher, Jobs]]]:
    made: list[Dispatcher] = []

    def make() -> tuple[Dispatcher, Jobs]:
        jobs = Jobs()
        dispatcher = Dispatcher(cast(Any, jobs), BROKER_URL, queue=queue)
        made.append(dispatcher)
        return dispatcher, jobs

    yield make
    for dispatcher in made:
        broker = cast(WakingRedisBroker, dispatcher.broker)
        client.zrem("dramatiq:__heartbeats__", broker.broker_id)
        broker.client.close()


def consumer(worker: Any, queue: str) -> WakingConsumer:
    """The worker's consumer of ``queue``, once its thread has made it."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        thread = worker.consumers.get(queue)
        if thread is not None and isinstance(thread.consumer, WakingConsumer):
            return thread.consumer
        time.sleep(0.01)
    raise AssertionError(f"no consumer of {queue} within {DEADLINE} s")


def idle(worker: Any, queue: str) -> WakingConsumer:
    """The consumer of ``queue`` once it found the queue empty and waits for a wake-up."""
    c = consumer(worker, queue)
    assert c.idle.wait(DEADLINE), f"the consumer of {queue} never waited"
    return c


def test_an_idle_consumer_is_woken_by_the_send(dispatchers: Any, queue: str) -> None:
    dispatcher, jobs = dispatchers()
    worker = dispatcher.worker(threads=2, idle_ms=IDLE_MS)
    worker.start()
    try:
        c = idle(worker, queue)
        assert c.idle_s > DEADLINE  # so only the wake-up can be in time
        dispatcher.send(["job-1"])
        assert jobs.wait_for(1) == ["job-1"]
        assert c.wakeups == 1
    finally:
        dispatcher.stop_worker(worker, 30_000)


def test_a_burst_reaches_two_idle_workers_and_the_wake_up_list_stays_short(
        dispatchers: Any, queue: str, client: redis.Redis) -> None:
    first, first_jobs = dispatchers()
    second, second_jobs = dispatchers()
    sender, _ = dispatchers()
    workers = [first.worker(threads=2, idle_ms=IDLE_MS), second.worker(threads=2, idle_ms=IDLE_MS)]
    for worker in workers:
        worker.start()
    try:
        consumers = [idle(worker, queue) for worker in workers]
        ids = [f"job-{i}" for i in range(200)]
        sender.send(ids)
        assert client.llen(cast(WakingRedisBroker, sender.broker).wake_key(queue)) <= WAKE_BACKLOG
        deadline = time.monotonic() + DEADLINE
        while len(first_jobs.ran) + len(second_jobs.ran) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(first_jobs.ran + second_jobs.ran) == sorted(ids)  # each once
        assert sum(c.wakeups for c in consumers) >= 1
    finally:
        for dispatcher, worker in zip((first, second), workers, strict=True):
            dispatcher.stop_worker(worker, 30_000)


def test_a_delayed_message_wakes_the_delay_queue_and_runs_after_its_eta(dispatchers: Any, queue: str) -> None:
    dispatcher, jobs = dispatchers()
    worker = dispatcher.worker(threads=1, idle_ms=IDLE_MS)
    worker.start()
    try:
        delay_consumer = idle(worker, f"{queue}.DQ")
        main_consumer = idle(worker, queue)
        dispatcher.actor.send_with_options(args=("late",), delay=50)
        assert jobs.wait_for(1) == ["late"]
        assert delay_consumer.wakeups == 1  # the delayed message
        assert main_consumer.wakeups == 1  # the same message, moved to the queue at its eta
    finally:
        dispatcher.stop_worker(worker, 30_000)


def test_stopping_an_idle_worker_does_not_wait_for_the_fallback_poll(dispatchers: Any, queue: str) -> None:
    dispatcher, _ = dispatchers()
    worker = dispatcher.worker(threads=1, idle_ms=IDLE_MS)
    worker.start()
    idle(worker, queue)
    idle(worker, f"{queue}.DQ")
    dispatcher.stop_worker(worker, int(DEADLINE * 1000))  # joins each thread for at most the deadline
    assert not [t for t in worker.consumers.values() if t.is_alive()]


def test_messages_sent_without_a_wake_up_are_found_by_the_fallback_poll(
        dispatchers: Any, queue: str) -> None:
    from dramatiq.brokers.redis import RedisBroker

    dispatcher, jobs = dispatchers()
    worker = dispatcher.worker(threads=1, idle_ms=50)
    worker.start()
    plain = RedisBroker(url=REDIS_URL)  # stock Dramatiq: sends no wake-up
    try:
        c = idle(worker, queue)
        plain.declare_queue(queue)
        plain.enqueue(dispatcher.actor.message("plain"))
        assert jobs.wait_for(1) == ["plain"]
        assert c.wakeups == 0
    finally:
        dispatcher.stop_worker(worker, 30_000)
        plain.client.zrem("dramatiq:__heartbeats__", plain.broker_id)
        plain.client.close()


def test_a_sent_message_is_dramatiqs_own(dispatchers: Any, queue: str) -> None:
    """Stock Dramatiq reads and acks what ``send_jobs`` enqueued, as it would ``actor.send``'s message."""
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.message import Message

    dispatcher, _ = dispatchers()
    dispatcher.send(['job-"1"'])  # JSON-escaped on the way
    dispatcher.actor.send_with_options(args=("job-2",))  # Dramatiq's own enqueue, for comparison
    plain = RedisBroker(url=REDIS_URL)
    try:
        fetched = [Message.decode(data) for data in plain.do_fetch(queue, 10)]
        assert [m.args for m in fetched] == [('job-"1"',), ("job-2",)]
        ours, theirs = ({k: v for k, v in m.asdict().items() if k not in {"args", "message_id", "message_timestamp"}}
                        for m in fetched)
        assert set(ours["options"]) == set(theirs["options"]) == {"redis_message_id"}
        assert {**ours, "options": None} == {**theirs, "options": None}  # queue, actor, kwargs
        assert abs(fetched[0].message_timestamp - fetched[1].message_timestamp) < 60_000
        assert fetched[0].message_id != fetched[1].message_id
        for m in fetched:
            plain.do_ack(queue, m.options["redis_message_id"])
        assert plain.client.hlen(f"dramatiq:{queue}.msgs") == 0  # the ack found each message under its id
    finally:
        plain.client.zrem("dramatiq:__heartbeats__", plain.broker_id)
        plain.client.close()


def test_a_large_send_goes_in_chunks_with_a_bounded_wake_up_list(
        dispatchers: Any, queue: str, client: redis.Redis) -> None:
    dispatcher, _ = dispatchers()
    ids = [f"job-{i}" for i in range(2 * dispatch.SEND_CHUNK + 7)]
    assert dispatcher.send(ids) == len(ids)
    redis_ids = [i.decode() for i in client.lrange(f"dramatiq:{queue}", 0, -1)]
    assert len(set(redis_ids)) == len(ids)
    data = client.hmget(f"dramatiq:{queue}.msgs", redis_ids)
    from dramatiq.message import Message

    assert [Message.decode(d).args[0] for d in data] == ids  # in order, each once
    assert client.llen(cast(WakingRedisBroker, dispatcher.broker).wake_key(queue)) == WAKE_BACKLOG


def test_a_send_loads_the_script_into_a_redis_that_lost_it(
        dispatchers: Any, queue: str, client: redis.Redis) -> None:
    """As after a Redis restart: SCRIPT FLUSH empties the script cache (every client reloads what it needs)."""
    dispatcher, jobs = dispatchers()
    client.script_flush()
    assert client.script_exists(dispatch._SEND_SHA) == [False]
    dispatcher.send(["job-1"])
    assert client.script_exists(dispatch._SEND_SHA) == [True]
    worker = dispatcher.worker(threads=1, idle_ms=IDLE_MS)
    worker.start()
    try:
        assert jobs.wait_for(1) == ["job-1"]
    finally:
        dispatcher.stop_worker(worker, 30_000)


def test_the_fallback_poll_stays_within_the_heartbeat_and_the_socket_timeout(queue: str) -> None:
    broker = cast(WakingRedisBroker, Dispatcher(cast(Any, Jobs()), REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "socket_timeout=3").broker)
    broker.idle_ms = IDLE_MS
    assert broker.consume(queue).idle_s == 1.5  # half the socket timeout
    broker = cast(WakingRedisBroker, Dispatcher(cast(Any, Jobs()), BROKER_URL).broker)
    broker.idle_ms = IDLE_MS
    assert broker.consume(queue).idle_s == broker.heartbeat_timeout / 4000
