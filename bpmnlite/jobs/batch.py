"""Running several jobs of different instances in one transaction (PostgreSQL workers).

A job's own work is small: a few rows written and one instance row updated.
What it costs on a small machine is mostly per transaction: ``BEGIN``, the
claim, the commit and its WAL flush, the connection checkout, and the
Python around each of them. So a worker thread runs the job a message
names, and then the jobs its commands created (``executor.run_job``), as
**batches**:

* one statement claims them, plus up to ``Engine.job_batch`` other due jobs
  of other instances that nobody runs, each with its instance row
  (``FOR UPDATE SKIP LOCKED``, as a single claim does), so it never waits
  for another worker; a message whose job is gone still brings those along;
* each job then runs its command in that transaction, on its own runner;
* the writes of all of them go out in one round trip, and one commit ends
  them all.

Every job of a batch is of a different instance, so each instance still
commits at each of its async steps. What a batch shares is the outcome of
the database: if any write of the batch fails (a conflict, a lost
connection), the whole batch is rolled back and each job runs again on its
own (a handler may then run twice, which at-least-once delivery allows
anyway). A job that fails before writing anything (its handler raised, a
script failed) leaves nothing to roll back: its row stays, and once the
batch has committed its failure is recorded as usual (a retry or an
incident). A job claimed here whose message is still in the broker is run
once: the message later finds the row gone and is dropped, without a
database round trip when this process ran it (``Engine.finished_jobs``).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bpmnlite.command_env import CommandEnvironment
from bpmnlite.dispatch import is_time_limit
from bpmnlite.jobs import control
from bpmnlite.jobs.acquire import RUNNABLE
from bpmnlite.runtime.runner import Runner
from bpmnlite.store import repository
from bpmnlite.store.writer import Batch, driver_query_all

if TYPE_CHECKING:
    from bpmnlite.engine import Engine

JOB_COLUMNS = ["id", "kind", "state", "instance_id", "token_id", "element_id", "definition_id", "due_at",
               "exclusive", "payload"]
INSTANCE_COLUMNS = ["id", "definition_id", "process_key", "business_key", "state", "version", "variables",
                    "tokens", "parent_instance_id", "parent_token_id", "root_instance_id", "callback_message",
                    "suspended", "error"]
_RUNNABLE = ", ".join(f"'{state}'" for state in RUNNABLE)
# The listed jobs, then up to %(extra)s other due exclusive jobs whose instance row is free too (both
# locked with SKIP LOCKED: a busy instance's jobs are not even looked at), of other instances. No ORDER BY: any due job
# will do, and ordering would sort every due row. Each job comes with its instance row, when free.
_CLAIM_BATCH = f"""
WITH listed AS (
    SELECT * FROM bpm_jobs
     WHERE id = ANY(%(ids)s) AND state IN ({_RUNNABLE})
       AND due_at <= %(now)s AND (lock_owner IS NULL OR lock_expires_at < %(now)s)
       FOR UPDATE SKIP LOCKED
), extra AS (
    SELECT j.* FROM bpm_jobs j JOIN bpm_instances i ON i.id = j.instance_id
     WHERE j.state IN ({_RUNNABLE}) AND j.due_at <= %(now)s AND j.lock_owner IS NULL AND j.exclusive
       AND NOT (j.id = ANY(%(ids)s)) AND (i.lease_owner IS NULL OR i.lease_expires_at < %(now)s)
       AND NOT EXISTS (SELECT 1 FROM listed WHERE listed.instance_id = j.instance_id)
     LIMIT %(extra)s
       FOR UPDATE OF j, i SKIP LOCKED
), claimed_job AS (
    SELECT * FROM listed UNION ALL SELECT * FROM extra
), locked_instance AS (
    SELECT bpm_instances.* FROM bpm_instances
     WHERE bpm_instances.id IN (SELECT instance_id FROM claimed_job WHERE exclusive)
       AND (bpm_instances.lease_owner IS NULL OR bpm_instances.lease_expires_at < %(now)s)
       FOR UPDATE OF bpm_instances SKIP LOCKED
)
SELECT {", ".join(f"j.{name}" for name in JOB_COLUMNS)},
       {", ".join(f"i.{name}" for name in INSTANCE_COLUMNS)}
  FROM claimed_job j LEFT JOIN locked_instance i ON i.id = j.instance_id
"""


class JobRow(dict[str, Any]):
    """A claimed job row: columns as attributes, like SQLAlchemy's rows."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class _Member:
    row: JobRow
    instance_row: dict[str, Any]
    timeout: int | None
    runner: Runner | None = None
    error: BaseException | None = None
    detail: str | None = None


@dataclass
class BatchResult:
    """What a batch did: outcome per job id, the jobs its commands created (not sent yet), and
    the jobs claimed but not run here (to run on their own)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)


class _Broken(Exception):
    """A write of the batch failed: roll all of it back and run its jobs one by one."""


def run_batch(engine: Engine, job_ids: list[str], owner: str, extra: int) -> BatchResult:
    """Claim ``job_ids`` and up to ``extra`` other due jobs, and run them in one transaction.

    Jobs that cannot run in a batch (an element with ``maxConcurrent``, a
    non-exclusive job, a second job of an instance already in the batch, a
    busy instance) are returned in ``not_run``; the caller runs or sends them.
    """
    from bpmnlite.jobs import executor

    stamp = repository.db_time(engine.clock())
    result = BatchResult()
    members: list[_Member] = []
    try:
        with engine.connections.begin() as conn:
            found = driver_query_all(conn, _CLAIM_BATCH, {"ids": job_ids, "now": stamp, "extra": extra})
            split = len(JOB_COLUMNS)
            seen: set[str] = set()
            for values in found:
                row = JobRow(zip(JOB_COLUMNS, values[:split], strict=True))
                instance = values[split:]
                max_concurrent, timeout = executor.element_limits(engine, conn, row)
                runnable = (row.exclusive and instance[0] is not None and max_concurrent is None
                            and row.instance_id not in seen)
                if not runnable:
                    # a listed job was created by the last command and never sent; an extra one
                    # (a second job of an instance in the batch) may be a job another thread
                    # was about to chain: each gets a message rather than wait for the reconciler
                    result.not_run.append(row.id)
                    continue
                seen.add(row.instance_id)
                members.append(_Member(row, dict(zip(INSTANCE_COLUMNS, instance, strict=True)), timeout))
            # the writes of every job that threw no signal or message go out together at the end
            shared = Batch(conn)
            updated: list[str] = []
            for member in members:
                _run_member(engine, conn, member, shared, updated)
            try:
                repository.check_saved(shared.flush(), updated)
            except BaseException as exc:
                raise _Broken() from exc
    except _Broken:
        # rolled back: each job again on its own, in its own transaction
        for member in members:
            outcome, created = executor.run_alone(engine, member.row.id, owner)
            result.outcomes[member.row.id] = outcome
            result.created.extend(created)
        return result
    _after_commit(engine, members, result, owner)
    return result


def _run_member(engine: Engine, conn: Any, member: _Member, shared: Batch, updated: list[str]) -> None:
    """Run one job's command in the batch's transaction; a failure before any write is the job's own.

    Its rows go into ``shared``, sent once for the whole batch; a job that
    threw a signal or a message writes at once instead, as any command does,
    so that delivering them sees its rows.
    """
    env = CommandEnvironment(engine, conn, engine.trusted_scripts, engine.max_steps,
                             engine.plugins.expression_functions, engine.clock)
    runner = Runner(env)
    if engine.dispatcher is not None:
        engine.dispatcher.limit_current_job(member.timeout or int(engine.lock_duration.total_seconds() * 1000))
    try:
        runner.adopt(repository.instance_from_row(member.instance_row))
        runner.effects.consumed_jobs.add(member.row.id)
        runner.in_job = True
        control.resume(engine, conn, runner, member.row)
        runner.run()  # the handlers and scripts: a failure here has written nothing
    except BaseException as exc:
        if _from_database(exc):
            raise _Broken() from exc  # the transaction may be aborted: it serves no other job now
        if not isinstance(exc, Exception) and not is_time_limit(exc):
            raise
        member.error, member.detail = exc, traceback.format_exc()
        return
    try:
        if runner.effects.signals or runner.effects.messages:
            engine._settle(conn, runner)  # writes now, then delivers them
        else:
            updated.extend(engine._write_rows(runner, shared))
    except BaseException as exc:
        raise _Broken() from exc
    member.runner = runner


def _from_database(exc: BaseException) -> bool:
    """Whether a database error raised ``exc`` or lies under it (the runner wraps what it does not know)."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if isinstance(seen, sa.exc.DBAPIError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _after_commit(engine: Engine, members: list[_Member], result: BatchResult, owner: str) -> None:
    """What each job's command does after its commit, and the failures recorded in their own transactions."""
    from bpmnlite.jobs import executor

    with engine.changed:
        engine.changed.notify_all()
    for member in members:
        job_id = member.row.id
        runner = member.runner
        if runner is not None:
            engine.finished_jobs.add(job_id)
            engine._notify(runner.effects)
            result.outcomes[job_id] = "done"
            result.created.extend(runner.created_jobs)
            instance_id = member.row.instance_id
            if executor.may_wait(runner, instance_id):
                waiting = executor.due_jobs_of_instance(engine, instance_id, exclude=job_id)
                engine._send([j for j in waiting if j not in runner.created_jobs and j not in result.not_run])
            continue
        assert member.error is not None
        result.outcomes[job_id] = executor.job_failed(engine, job_id, member.error, member.detail or "", owner)
    if engine.progress_board.deferred:
        engine.progress_board.flush()
