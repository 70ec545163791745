"""Operational failure modes: broker down, stuck jobs, typos, suspension."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bpmnlite import Engine
from bpmnlite.dispatch import make_broker, redact

from ..bpmn import bpmn, chain
from ..conftest import Clock, Recorder, _truncate

ASYNC = bpmn('<startEvent id="s"/><serviceTask id="a" bpmnlite:type="record" bpmnlite:async="true"/>'
             '<endEvent id="e"/>' + chain("s", "a", "e"))


def test_start_succeeds_when_the_broker_is_unreachable(db_url: str, recorder: Recorder) -> None:
    """The command committed; failing to send its message must not raise (a retry would duplicate it)."""
    engine = Engine(db_url, plugins=[recorder], load_entry_points=False, broker_url="redis://127.0.0.1:6399/13",
                    resend_after=timedelta(seconds=0))
    engine.deploy(ASYNC)
    inst = engine.start("p")
    assert inst.state == "waiting"
    assert len(engine.jobs(instance_id=inst.id)) == 1
    assert engine.reconcile() == 0  # still unreachable: nothing sent, nothing raised
    engine.close()


def test_a_typo_in_the_broker_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported broker URL 'redis:/typo:6379/0'"):
        make_broker("redis:/typo:6379/0")
    assert redact("postgresql+psycopg://app:s3cret@db/prod") == "postgresql+psycopg://app:***@db/prod"


def test_retry_keeps_a_suspended_instance_waiting(db_url: str, recorder: Recorder, clock: Clock) -> None:
    engine = Engine(db_url, plugins=[recorder], load_entry_points=False, clock=clock, default_retries=1)
    engine.deploy(ASYNC)
    recorder.fail_times["a"] = 1
    inst = engine.start("p")
    engine.run_jobs()
    (incident,) = engine.incidents()
    engine.suspend(inst.id)
    engine.retry(incident.id)
    assert engine.run_jobs() == 0
    assert engine.instance(inst.id).active_elements == ("a",)
    engine.activate(inst.id)
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"
    engine.close()


def test_reconciler_does_not_wait_for_a_job_running_past_its_lock(pg_url: str, recorder: Recorder) -> None:
    _truncate(pg_url)
    engine = Engine(pg_url, plugins=[recorder], load_entry_points=False, resend_after=timedelta(seconds=0))
    engine.deploy(ASYNC)
    stuck = engine.start("p")
    other = engine.start("p")
    stuck_job = engine.jobs(instance_id=stuck.id)[0].id
    holder = sa.create_engine(pg_url)
    with holder.connect() as conn:
        conn.execute(sa.text("update bpm_jobs set lock_owner='elsewhere', lock_expires_at=now() - interval '1 hour' "
                             "where id = :id"), {"id": stuck_job})
        conn.commit()
        conn.execute(sa.text("select id from bpm_jobs where id = :id for update"), {"id": stuck_job})  # "running"
        done = threading.Event()
        thread = threading.Thread(target=lambda: (engine.reconcile(), done.set()))
        thread.start()
        finished = done.wait(15)
        conn.rollback()
    thread.join(15)
    holder.dispose()
    assert finished, "reconcile waited for the running job's row lock"
    assert engine.jobs(instance_id=other.id)[0].lock_owner is None
    engine.close()


def test_run_jobs_with_a_later_now_fires_the_timer_and_returns(db_url: str, clock: Clock) -> None:
    engine = Engine(db_url, load_entry_points=False, clock=clock)
    engine.deploy(bpmn('<startEvent id="s"/><intermediateCatchEvent id="w"><timerEventDefinition><timeDuration>'
                       'PT1H</timeDuration></timerEventDefinition></intermediateCatchEvent><endEvent id="e"/>'
                       + chain("s", "w", "e")))
    inst = engine.start("p")
    assert engine.fire_due_timers(now=clock.now + timedelta(hours=2)) == 1
    assert engine.instance(inst.id).state == "completed"
    engine.close()


def test_cancelling_an_instance_removes_its_incidents(db_url: str, recorder: Recorder, clock: Clock) -> None:
    engine = Engine(db_url, plugins=[recorder], load_entry_points=False, clock=clock, default_retries=1)
    engine.deploy(ASYNC)
    recorder.fail_times["a"] = 1
    inst = engine.start("p")
    engine.run_jobs()
    assert len(engine.incidents()) == 1
    engine.cancel(inst.id)
    assert engine.incidents() == []
    engine.close()


THREE_ASYNC = bpmn(
    '<startEvent id="s"/><serviceTask id="a" bpmnlite:type="noop" bpmnlite:async="true"/>'
    '<serviceTask id="b" bpmnlite:type="noop" bpmnlite:async="true"/>'
    '<serviceTask id="c" bpmnlite:type="noop" bpmnlite:async="true"/><endEvent id="e"/>' + chain("s", "a", "b", "c", "e")
)


def test_each_job_gets_at_most_one_message(tmp_path: object, recorder: Recorder) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/one.db", plugins=[recorder], load_entry_points=False)
    engine.deploy(THREE_ASYNC)
    sent: list[str] = []
    with engine.worker(threads=1) as worker:
        original = worker.dispatcher.send

        def counting(job_ids: object) -> int:
            ids = list(job_ids)  # type: ignore[call-overload]
            sent.extend(ids)
            return original(ids)

        worker.dispatcher.send = counting  # type: ignore[method-assign]
        ids = [engine.start("p").id for _ in range(10)]
        assert worker.wait_idle(60)
    assert all(engine.instance(i).state == "completed" for i in ids)
    # the starts' jobs got one message each; the worker ran each next step itself (chaining), unsent
    assert len(sent) == 10 and len(set(sent)) == 10
    assert engine.jobs() == []
    engine.close()


def test_embedded_workers_do_not_pile_up_on_the_broker(tmp_path: object, recorder: Recorder) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/pile.db", plugins=[recorder], load_entry_points=False)
    engine.deploy(THREE_ASYNC)
    for _ in range(5):
        engine.start("p")
        engine.run_until_idle(timeout=60)
    assert engine.dispatcher is not None
    stale = [m for m in engine.dispatcher.broker.middleware if hasattr(m, "worker")]
    assert stale == []
    engine.close()
