"""Chained jobs run in batches on PostgreSQL: several instances' jobs in one transaction (jobs.batch).

Each instance still commits at every async step; what a batch shares is one
claim and one commit. A job that fails before writing is its own failure; a
write that fails rolls the batch back and its jobs run again one by one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from bpmnlite import Engine, TaskContext, hookimpl
from bpmnlite.store import writer

from ..bpmn import bpmn, chain, flow
from ..conftest import _truncate

STEPS = ("t0", "t1", "t2")
THREE_STEPS = bpmn(
    '<startEvent id="s"/>'
    + "".join(f'<serviceTask id="{t}" bpmnlite:type="step" bpmnlite:async="true"/>' for t in STEPS)
    + '<endEvent id="e"/>' + chain("s", *STEPS, "e")
)
FORK = bpmn(
    '<startEvent id="s"/><serviceTask id="t0" bpmnlite:type="step" bpmnlite:async="true"/>'
    '<parallelGateway id="fork"/>'
    '<serviceTask id="a" bpmnlite:type="step" bpmnlite:async="true"/>'
    '<serviceTask id="b" bpmnlite:type="step" bpmnlite:async="true"/>'
    '<parallelGateway id="join"/><endEvent id="e"/>'
    + chain("s", "t0", "fork") + flow("fork", "a") + flow("fork", "b") + flow("a", "join") + flow("b", "join")
    + chain("join", "e")
)


class Steps:
    """``step`` records (instance, element); it fails where the instance's ``fail_at`` says."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"step": self.step}

    def step(self, ctx: TaskContext) -> None:
        self.calls[(ctx.instance_id, ctx.element_id)] += 1
        if ctx.get("fail_at") == ctx.element_id:
            raise RuntimeError(f"planned failure at {ctx.element_id}")


@pytest.fixture
def engine(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    _truncate(pg_url)
    steps = Steps()
    eng = Engine(pg_url, plugins=[steps], load_entry_points=False, broker_url="stub://", job_batch=4)
    eng.steps = steps  # type: ignore[attr-defined]
    sent: list[str] = []
    monkeypatch.setattr(eng, "_send", lambda ids: sent.extend(ids) or len(ids))
    eng.sent = sent  # type: ignore[attr-defined]
    yield eng
    eng.close()


def steps_of(engine: Engine) -> Steps:
    steps: Steps = engine.steps  # type: ignore[attr-defined]
    return steps


def first_job(engine: Engine, instance_id: str) -> str:
    (job,) = engine.jobs(instance_id=instance_id)
    return job.id


def commits(engine: Engine) -> list[int]:
    count = [0]
    sa.event.listen(engine.db, "commit", lambda conn: count.__setitem__(0, count[0] + 1))
    return count


def test_chained_jobs_of_several_instances_share_a_transaction(engine: Engine) -> None:
    engine.deploy(THREE_STEPS)
    ids = [engine.start("p").id for _ in range(4)]
    engine.sent.clear()  # type: ignore[attr-defined]  # the starts' own messages
    counted = commits(engine)
    # one message: its job heads a batch that takes the other instances' jobs along, then their next steps
    assert engine.run_job(first_job(engine, ids[0]), owner="w1") == "done"
    assert [engine.instance(i).state for i in ids] == ["completed"] * 4
    assert steps_of(engine).calls == Counter({(i, t): 1 for i in ids for t in STEPS})
    # 12 jobs in 3 commits of 4
    assert counted[0] == 3
    # each instance still committed at every step: its history is whole and no job is left
    for i in ids:
        assert [a.element_id for a in engine.history(i)] == ["s", *STEPS, "e"]
    assert engine.jobs() == []
    assert engine.sent == []  # type: ignore[attr-defined]


def test_a_job_that_fails_in_a_batch_spends_a_retry_and_the_others_commit(engine: Engine) -> None:
    engine.deploy(THREE_STEPS)
    ids = [engine.start("p", {"fail_at": "t1" if n == 2 else None}).id for n in range(4)]
    engine.run_job(first_job(engine, ids[0]), owner="w1")
    failing = ids[2]
    assert [engine.instance(i).state for i in ids if i != failing] == ["completed"] * 3
    (job,) = engine.jobs(instance_id=failing)
    assert (job.element_id, job.retries, job.state) == ("t1", 2, "executable")
    assert "planned failure at t1" in (job.error_detail or "")
    # what t0 did for the failing instance is committed; t1's attempt left nothing behind
    assert engine.instance(failing).active_elements == ("t1",)
    assert [a.element_id for a in engine.history(failing)] == ["s", "t0", "t1"]
    calls = steps_of(engine).calls
    assert all(calls[(i, t)] == 1 for i in ids if i != failing for t in STEPS)


def test_a_write_that_fails_rolls_the_batch_back_and_its_jobs_run_one_by_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(THREE_STEPS)
    ids = [engine.start("p").id for _ in range(4)]
    flush = writer.Batch.flush
    flushes = [0]

    def failing_once(self: writer.Batch, **options: Any) -> int:
        flushes[0] += 1
        if flushes[0] == 2:  # the writes of the first batch: a real error from PostgreSQL
            self.execute("INSERT INTO bpm_jobs (id) VALUES ({mark})", ["no-such-job"])
        return flush(self, **options)

    monkeypatch.setattr(writer.Batch, "flush", failing_once)
    engine.run_job(first_job(engine, ids[0]), owner="w1")
    assert [engine.instance(i).state for i in ids] == ["completed"] * 4
    for i in ids:  # every step's writes exactly once, whatever ran twice
        assert [a.element_id for a in engine.history(i)] == ["s", *STEPS, "e"]
    calls = steps_of(engine).calls
    # the 4 jobs of the first batch ran in it and again on their own; every other step ran once
    twice = {key for key, n in calls.items() if n == 2}
    assert len(twice) == 4 and all(n in (1, 2) for n in calls.values())
    assert sum(calls.values()) == 4 * len(STEPS) + 4
    assert engine.jobs() == []


def test_a_late_message_for_a_job_run_in_a_batch_is_dropped_without_a_claim(engine: Engine) -> None:
    engine.deploy(THREE_STEPS)
    ids = [engine.start("p").id for _ in range(2)]
    other_first = first_job(engine, ids[1])
    engine.run_job(first_job(engine, ids[0]), owner="w1")
    assert engine.instance(ids[1]).state == "completed"  # its first job ran as an extra of a batch
    statements: list[str] = []
    sa.event.listen(engine.db, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert engine.run_job(other_first, owner="w2") == "skipped"
    assert statements == []


def test_a_second_job_of_an_instance_in_a_batch_is_sent_not_run(engine: Engine) -> None:
    engine.deploy(FORK)
    inst = engine.start("p").id
    engine.sent.clear()  # type: ignore[attr-defined]  # the start's own message
    engine.run_job(first_job(engine, inst), owner="w1")
    # t0 created the jobs of a and b; the batch ran one of them, the other got a message
    (left,) = engine.jobs(instance_id=inst)
    assert left.element_id in ("a", "b")
    assert engine.sent == [left.id]  # type: ignore[attr-defined]
    assert engine.run_job(left.id, owner="w2") == "done"
    assert engine.instance(inst).state == "completed"


def test_job_batch_1_runs_each_job_in_its_own_transaction(pg_url: str) -> None:
    _truncate(pg_url)
    with Engine(pg_url, plugins=[Steps()], load_entry_points=False, job_batch=1) as eng:
        eng.deploy(THREE_STEPS)
        ids = [eng.start("p").id for _ in range(2)]
        counted = commits(eng)
        eng.run_job(first_job(eng, ids[0]), owner="w1")
        assert eng.instance(ids[0]).state == "completed"
        assert eng.instance(ids[1]).active_elements == ("t0",)  # nobody took it along
        assert counted[0] == 3
    with pytest.raises(ValueError, match="job_batch"):
        Engine(pg_url, job_batch=0, create_schema=False)


def test_a_job_in_a_batch_that_sends_a_message_writes_first_so_the_receiver_is_found(engine: Engine) -> None:
    engine.deploy(bpmn('<startEvent id="s"/><receiveTask id="wait" messageRef="m"/><endEvent id="e"/>'
                       + chain("s", "wait", "e"), "receiver", extra='<message id="m" name="go"/>'))
    engine.deploy(bpmn(
        '<startEvent id="s"/>'
        + "".join(f'<serviceTask id="{t}" bpmnlite:type="step" bpmnlite:async="true"/>' for t in ("t0", "t1"))
        + '<sendTask id="tell" messageRef="m"/><endEvent id="e"/>' + chain("s", "t0", "t1", "tell", "e"),
        "sender", extra='<message id="m" name="go"/>',
    ))
    receivers = [engine.start("receiver", business_key=key).id for key in ("k1", "k2")]
    senders = [engine.start("sender", business_key=key).id for key in ("k1", "k2")]
    counted = commits(engine)
    # t0 of both senders in a batch, then t1 of both, each writing before its message is delivered
    engine.run_job(first_job(engine, senders[0]), owner="w1")
    assert counted[0] == 2
    assert [engine.instance(i).state for i in senders + receivers] == ["completed"] * 4


def test_when_a_batch_cannot_run_at_all_its_jobs_get_messages(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from bpmnlite.jobs import batch

    engine.deploy(THREE_STEPS)
    inst = engine.start("p").id
    engine.sent.clear()  # type: ignore[attr-defined]  # the start's own message

    real = batch.run_batch
    calls = [0]

    def database_gone_at_the_second(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise sa.exc.OperationalError("claim", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "run_batch", database_gone_at_the_second)
    with pytest.raises(sa.exc.OperationalError):
        engine.run_job(first_job(engine, inst), owner="w1")
    (t1,) = engine.jobs(instance_id=inst)  # t0 committed; t1 is due, and has its message
    assert t1.element_id == "t1"
    assert engine.sent == [t1.id]  # type: ignore[attr-defined]


def test_the_finished_jobs_a_process_remembers_are_bounded() -> None:
    from bpmnlite.engine import RecentIds

    kept = RecentIds(10)
    for n in range(25):
        kept.add(f"job-{n}")
    kept.add("job-24")  # again: nothing changes
    assert len(kept) == 10
    assert "job-14" not in kept and all(f"job-{n}" in kept for n in range(15, 25))


def test_a_message_whose_job_another_worker_ran_still_brings_due_jobs_along(engine: Engine) -> None:
    engine.deploy(THREE_STEPS)
    ids = [engine.start("p").id for _ in range(2)]
    late = first_job(engine, ids[0])
    assert engine.execute_job(late) == "done"  # as another worker would: one job, no batch
    assert engine.run_job(late, owner="w2") == "skipped"  # its message comes late...
    assert [engine.instance(i).state for i in ids] == ["completed"] * 2  # ...and runs what is due


def test_a_database_error_under_a_jobs_failure_breaks_the_batch_and_spends_no_other_jobs_retry(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bpmnlite.errors import ExecutionError
    from bpmnlite.jobs import control

    engine.deploy(THREE_STEPS)
    ids = [engine.start("p").id for _ in range(4)]
    resume = control.resume

    def reading_resume(engine_: Engine, conn: Any, runner: Any, row: Any) -> None:
        # every job's command reads something first, as the runner does for messages or call activities;
        # the first instance's read fails, which aborts the transaction for the reads after it
        sql = "SELECT * FROM no_such_table" if (row.instance_id, row.element_id) == (ids[0], "t0") else "SELECT 1"
        try:
            conn.exec_driver_sql(sql)
        except sa.exc.DBAPIError as exc:
            raise ExecutionError("the read failed", element_id=row.element_id) from exc  # as the runner wraps
        resume(engine_, conn, runner, row)

    monkeypatch.setattr(control, "resume", reading_resume)
    engine.run_job(first_job(engine, ids[0]), owner="w1")
    # the batch rolled back and its jobs ran one by one: only the job whose read fails spent a retry
    assert [engine.instance(i).state for i in ids[1:]] == ["completed"] * 3
    (job,) = engine.jobs(instance_id=ids[0])
    assert (job.element_id, job.retries) == ("t0", 2)


def test_jobs_a_batch_could_not_run_are_sent_before_the_messages_job_runs_alone(engine: Engine) -> None:
    """A bug: the batch claimed three due maxConcurrent jobs, could run none, ran its message's job alone
    and only then sent the other two, so they ran one after another, not side by side."""
    sent_when_run: list[list[str]] = []
    engine.register_plugin(_Seen(lambda: sent_when_run.append(list(engine.sent))))  # type: ignore[attr-defined]
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="t0" bpmnlite:type="seen" bpmnlite:async="true" '
        'bpmnlite:maxConcurrent="3"/><endEvent id="e"/>' + chain("s", "t0", "e"),
        "limited",
    ))
    ids = [engine.start("limited").id for _ in range(3)]
    jobs = [first_job(engine, i) for i in ids]
    engine.sent.clear()  # type: ignore[attr-defined]  # the starts' own messages
    assert engine.run_job(jobs[0], owner="w1") == "done"
    # when its handler ran, the other two were already on their way to other workers
    assert len(sent_when_run) == 1 and sorted(sent_when_run[0]) == sorted(jobs[1:])


class _Seen:
    def __init__(self, call: Any) -> None:
        self.call = call

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"seen": lambda ctx: self.call()}
