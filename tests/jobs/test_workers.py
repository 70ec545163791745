"""Real worker processes on Redis and PostgreSQL: throughput, crashes, lost messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bpmnlite import Engine

from ..bpmn import bpmn, chain
from ..conftest import _truncate, fresh_redis, session_queue
from . import worker_plugin

REDIS_URL = os.environ.get("BPMNLITE_TEST_REDIS", "redis://127.0.0.1:6379/14")
QUEUE = session_queue("test-workers")
ROOT = Path(__file__).resolve().parents[2]

THREE_STEPS = bpmn(
    '<startEvent id="s"/>'
    '<serviceTask id="one" bpmnlite:type="count" bpmnlite:async="true"/>'
    '<serviceTask id="two" bpmnlite:type="count" bpmnlite:async="true"/>'
    '<serviceTask id="three" bpmnlite:type="count" bpmnlite:async="true"/>'
    '<endEvent id="e"/>' + chain("s", "one", "two", "three", "e"),
    "three_steps",
)
SLOW = bpmn(
    '<startEvent id="s"/><serviceTask id="slow" bpmnlite:type="count" bpmnlite:slow="true" bpmnlite:async="true"/>'
    '<endEvent id="e"/>' + chain("s", "slow", "e"),
    "slow_process",
)


@pytest.fixture
def redis_url() -> str:
    return fresh_redis(REDIS_URL, QUEUE)


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    _truncate(pg_url)
    eng = sa.create_engine(pg_url)
    worker_plugin.metadata.drop_all(eng)
    worker_plugin.metadata.create_all(eng)
    eng.dispose()
    yield pg_url


class Workers:
    """Starts ``bpmnlite worker`` subprocesses and stops them by pid."""

    def __init__(self, db_url: str, broker_url: str) -> None:
        self.db_url = db_url
        self.broker_url = broker_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, processes: int = 1, threads: int = 4) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BPMNLITE_TEST_EFFECTS_DB": self.db_url}
        cmd = [sys.executable, "-m", "bpmnlite.cli", "--db", self.db_url, "worker", "--broker", self.broker_url,
               "--queue", QUEUE, "--processes", str(processes), "--threads", str(threads),
               "--plugin", "tests.jobs.worker_plugin",
               "--interval", "0.2", *extra]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(db: str, redis_url: str) -> Iterator[Workers]:
    w = Workers(db, redis_url)
    yield w
    w.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def count(engine: Engine, sql: str) -> int:
    with engine.db.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar() or 0)


def test_thousand_instances_three_async_steps_two_processes(workers: Workers, db: str, redis_url: str) -> None:
    engine = Engine(db, broker_url=redis_url, queue=QUEUE, load_entry_points=False, plugins=[worker_plugin])
    engine.deploy(THREE_STEPS)
    workers.start(processes=2, threads=4)
    ids = [engine.start("three_steps").id for _ in range(1000)]
    wait_for(lambda: count(engine, "select count(*) from bpm_instances where state = 'completed'") == 1000,
             600, "1,000 instances to complete")
    assert count(engine, "select count(*) from bpm_jobs") == 0
    assert count(engine, "select count(*) from test_effects") == 3000
    per_step = count(engine, "select count(*) from (select instance_id, element_id from test_effects "
                             "group by instance_id, element_id having count(*) = 1) x")
    assert per_step == 3000
    assert len(set(ids)) == 1000
    engine.close()


def test_sigkill_mid_job_runs_it_again(workers: Workers, db: str, redis_url: str) -> None:
    engine = Engine(db, broker_url=redis_url, queue=QUEUE, load_entry_points=False, plugins=[worker_plugin])
    engine.deploy(SLOW)
    victim = workers.start("--lock-seconds", "4", "--resend-seconds", "1", threads=1)
    inst = engine.start("slow_process", {"sleep": 2.5})
    wait_for(lambda: count(engine, "select count(*) from test_attempts") == 1, 60, "the slow job to start")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert engine.instance(inst.id).state == "waiting"
    job_id = engine.jobs(instance_id=inst.id)[0].id
    # the claim was the dead worker's open transaction: the server drops it with the connection
    wait_for(lambda: count(engine, f"select count(*) from (select id from bpm_jobs where id = '{job_id}' "
                                   "for update skip locked) x") == 1, 60, "the dead worker's claim to go")
    workers.start("--lock-seconds", "4", "--resend-seconds", "1", threads=1)
    wait_for(lambda: engine.instance(inst.id).state == "completed", 120, "the instance to complete after the crash")
    assert count(engine, "select count(*) from test_attempts") == 2
    assert count(engine, "select count(*) from test_effects") == 1
    assert engine.incidents() == []
    engine.close()


def test_lost_messages_are_recovered_by_the_reconciler(workers: Workers, db: str, redis_url: str) -> None:
    import redis

    engine = Engine(db, broker_url=redis_url, queue=QUEUE, load_entry_points=False, plugins=[worker_plugin],
                    resend_after=timedelta(seconds=1))
    engine.deploy(THREE_STEPS)
    ids = [engine.start("three_steps").id for _ in range(50)]
    client = redis.Redis.from_url(redis_url)
    queues = list(client.scan_iter(match=f"dramatiq:*{QUEUE}*"))
    assert queues, "the start commands should have sent messages to Redis"
    client.delete(*queues)  # every pending message is lost
    assert list(client.scan_iter(match=f"dramatiq:*{QUEUE}*")) == []
    workers.start("--resend-seconds", "1", threads=4)
    wait_for(lambda: all(engine.instance(i).state == "completed" for i in ids), 180, "all 50 instances to complete")
    assert count(engine, "select count(*) from test_effects") == 150
    assert count(engine, "select count(*) from bpm_jobs") == 0
    engine.close()


def test_sigterm_lets_a_worker_finish(workers: Workers, db: str, redis_url: str) -> None:
    engine = Engine(db, broker_url=redis_url, queue=QUEUE, load_entry_points=False, plugins=[worker_plugin])
    engine.deploy(SLOW)
    proc = workers.start(threads=1)
    inst = engine.start("slow_process", {"sleep": 1.0})
    wait_for(lambda: count(engine, "select count(*) from test_attempts") == 1, 60, "the slow job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert engine.instance(inst.id).state == "completed"
    assert count(engine, "select count(*) from test_attempts") == 1
    engine.close()
