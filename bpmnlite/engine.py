"""The Engine facade: every public operation is one command in one transaction.

A command loads the instance rows it needs, lets a :class:`Runner` move
tokens until each one waits or has ended, then writes the instances (with an
optimistic version check) and every side effect (tasks, subscriptions, jobs,
history) in the same transaction. If anything raises, the transaction rolls
back and the instances are exactly as they were at their last wait state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bpmnlite.command_env import CommandEnvironment
from bpmnlite.deployer import Deployer, Source
from bpmnlite.dispatch import Dispatcher

if TYPE_CHECKING:
    from bpmnlite.handle import InstanceHandle
    from bpmnlite.worker import EmbeddedWorker
from bpmnlite import messaging, queries
from bpmnlite.errors import BpmnliteError, Conflict, ExecutionError, ModelError, NotFound, Problem
from bpmnlite.jobs import control, executor, failures
from bpmnlite.jobs.acquire import Claim, release
from bpmnlite.model import Definitions, FlowNode
from bpmnlite.plugins import PluginRegistry
from bpmnlite.progress import ProgressBoard
from bpmnlite.records import (
    ActivityInfo,
    DefinitionInfo,
    Deployment,
    InstanceInfo,
    JobInfo,
    ProgressInfo,
    TaskInfo,
    VariableChange,
)
from bpmnlite.runtime import events
from bpmnlite.runtime.effects import RUN_NOW, Effects
from bpmnlite.runtime.runner import Runner
from bpmnlite.runtime.state import FINAL_STATES, Instance, InstanceState, Wait
from bpmnlite.store import database, repository
from bpmnlite.store import tables as t
from bpmnlite.store.connections import CommandConnections
from bpmnlite.store.writer import Batch

Clock = Callable[[], datetime]
log = logging.getLogger("bpmnlite.engine")


def system_clock() -> datetime:
    return datetime.now(UTC)


class RecentIds:
    """The last ``size`` ids added, for membership tests (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._order: deque[str] = deque()
        self._ids: set[str] = set()
        self._size = size
        self._lock = threading.Lock()

    def add(self, item: str) -> None:
        with self._lock:
            if item in self._ids:
                return
            self._ids.add(item)
            self._order.append(item)
            if len(self._order) > self._size:
                self._ids.discard(self._order.popleft())

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class Engine:
    """A BPMN engine bound to one database.

    Args:
        url: SQLAlchemy URL: ``sqlite:///file.db`` (embedded default) or
            ``postgresql+psycopg://user@host/db``.
        plugins: plugin objects to register in addition to the ``bpmnlite``
            entry points.
        load_entry_points: discover installed plugins (default True).
        trusted_scripts: run scripts without the sandbox.
        class_map: maps Java class names / delegate expressions / topics found
            in Camunda or Flowable models to registered task type names.
        clock: a callable returning the current aware datetime (tests pass a
            controllable clock).
        max_steps: steps one command may take before a loop without a wait
            state is reported.
        default_retries: attempts in all for a failing job (Flowable's 3).
        job_batch: on PostgreSQL, the most jobs a worker thread runs in one
            transaction when it chains (see ``jobs.batch``); 1 runs every
            job in a transaction of its own.
    """

    def __init__(
        self,
        url: str = "sqlite:///bpmnlite.db",
        *,
        plugins: tuple[object, ...] | list[object] = (),
        load_entry_points: bool = True,
        trusted_scripts: bool = False,
        class_map: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_steps: int = 100_000,
        default_retries: int = 3,
        create_schema: bool = True,
        broker_url: str | None = None,
        lock_duration: timedelta = timedelta(minutes=5),
        resend_after: timedelta = timedelta(seconds=30),
        queue: str = "bpmnlite",
        job_batch: int = 16,
    ) -> None:
        if job_batch < 1:
            raise ValueError(f"job_batch must be at least 1, not {job_batch}")
        self.url = url
        self.db = database.connect(url)
        self.reader = database.reader(self.db)
        # commands take a connection kept from the last one (store.connections)
        self.connections = CommandConnections(self.db)
        if create_schema:
            database.upgrade(self.db)
        self.plugins = PluginRegistry(load_entry_points=load_entry_points, plugins=plugins)
        self.trusted_scripts = trusted_scripts
        self.class_map = dict(class_map or {})
        self.clock: Clock = clock or system_clock
        self.max_steps = max_steps
        self.default_retries = default_retries
        self.lock_duration = lock_duration
        self.resend_after = resend_after
        self._inline_owner = f"inline:{os.urandom(4).hex()}"
        self.dispatcher: Dispatcher | None = None
        if broker_url is not None:
            self.dispatcher = Dispatcher(
                self, broker_url, queue=queue, time_limit=int(lock_duration.total_seconds() * 1000)
            )
        self.deployer = Deployer(self.plugins, self.resolve_name, dict(self.plugins.expression_functions))
        self._listeners_lock = threading.Lock()
        self.progress_board = ProgressBoard(self)
        # notified after every command of this engine commits (InstanceHandle.wait listens)
        self.changed = threading.Condition()
        self._stop_requests: set[str] = set()
        # set when this process's worker is stopping: jobs then stop chaining into the next one
        self.stopping = threading.Event()
        self.job_batch = job_batch
        # jobs this process ran to completion in a batch: their messages, when they come, need no claim
        # (about 130 bytes each; a message that comes later than this many jobs costs one claim)
        self.finished_jobs = RecentIds(10_000)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self.connections.close()
        self.db.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (task types, script languages, listeners)."""
        self.plugins.register(plugin, name)
        self.deployer.functions = dict(self.plugins.expression_functions)

    def resolve_task_type(self, node: FlowNode) -> str | None:
        """The task type name for a service task, after the class map."""
        return None if node.task_type is None else self.resolve_name(node.task_type)

    def resolve_name(self, raw: str) -> str:
        """A Java class, delegate expression (``${bean}``) or type, mapped through ``class_map``."""
        if raw in self.class_map:
            return self.class_map[raw]
        stripped = raw.strip()
        if stripped.startswith(("${", "#{")) and stripped.endswith("}"):
            inner = stripped[2:-1].strip()
            return self.class_map.get(inner, inner)
        return raw

    @contextmanager
    def _command(self, claim: Claim | None = None, *, send: bool = True) -> Iterator[tuple[Connection, Runner]]:
        """One transaction and one runner; writes everything the runner did at the end.

        With ``claim`` (a job's command on the two-step path), the job lock must
        still be ours at commit time, and the instance lease is released in the
        same transaction. Messages for the jobs the command created are sent
        after the commit, unless ``send`` is false: then the caller sends
        ``runner.created_jobs`` (or runs them).
        """
        try:
            with self.connections.begin() as conn:
                env = CommandEnvironment(self, conn, self.trusted_scripts, self.max_steps, self.plugins.expression_functions, self.clock)
                runner = Runner(env)
                yield conn, runner
                self._settle(conn, runner, last=claim is None)
                if claim is not None:
                    release(conn, claim)
        except sa.exc.DBAPIError as exc:
            if _is_contention(exc):
                raise Conflict(f"another command changed the same rows at the same time; try again ({exc.orig})") from exc
            raise
        finally:
            if self.progress_board.deferred:
                self.progress_board.flush()  # progress is kept whatever the command's outcome
        with self.changed:
            self.changed.notify_all()
        if send:
            self._send(runner.created_jobs)
        self._notify(runner.effects)

    def _settle(self, conn: Connection, runner: Runner, *, last: bool = False) -> None:
        """Run until quiet, deliver thrown signals/messages, and write everything.

        ``last``: nothing follows in the transaction, so on PostgreSQL the final
        writes may carry the commit (see ``_flush``).
        """
        events_seen: list[tuple[str, dict[str, Any]]] = []
        runner.run()
        while True:
            final = last and not runner.effects.signals and not runner.effects.messages
            self._flush(conn, runner, events_seen, commit=final)
            thrown_signals = runner.effects.signals
            thrown_messages = runner.effects.messages
            runner.effects = Effects()
            if not thrown_signals and not thrown_messages:
                break
            for name, variables in thrown_signals:
                messaging.deliver_signal(self, conn, runner, name, variables)
            for name, business_key, variables, target in thrown_messages:
                found = messaging.correlate(self, conn, runner, name, business_key, {}, variables, instance_id=target)
                if found is None and target is not None:
                    # never drop it silently: the command fails (a job retries, then becomes an incident)
                    raise ExecutionError(
                        f"instance {target} does not wait for message {name!r}; catch it with a "
                        "non-interrupting message event sub-process so it can arrive at any time",
                        instance_id=target,
                    )
            runner.run()
        runner.effects.events = events_seen

    def _flush(self, conn: Connection, runner: Runner, events_seen: list[tuple[str, dict[str, Any]]], *,
               commit: bool = False) -> None:
        # one batch: on PostgreSQL all of it is one round trip (store.writer)
        batch = Batch(conn)
        updated = self._write_rows(runner, batch)
        # the command's last writes, checking no instance's version (a start): on PostgreSQL they carry
        # the COMMIT, one round trip less; a failing statement skips it, and the transaction rolls back
        repository.check_saved(batch.flush(commit=commit and not updated), updated)
        # rows written by this flush are stored now: a later clear in the same command must delete them
        effects = runner.effects
        runner.stored_owners.update(inst_id for inst_id in runner.instances)
        runner.stored_owners.update(j.token_id for j in effects.jobs if j.token_id)
        runner.stored_owners.update(t.token_id for t in effects.tasks)
        runner.stored_owners.update(s.token_id for s in effects.subscriptions if s.token_id)
        events_seen.extend(runner.effects.events)

    def _write_rows(self, runner: Runner, batch: Batch) -> list[str]:
        """Put what the runner did into ``batch``; returns the ids of the instances whose UPDATE it checks."""
        now = runner.now
        for job in runner.effects.jobs:
            if job.kind in RUN_NOW:
                runner.created_jobs.append(job.id)
        # side rows first, the instance rows last: a command never holds an instance row while it
        # waits for the row lock of a running job, so two commands cannot wait on each other
        repository.write_effects(
            batch.conn, runner.effects, now, self.default_retries, dispatching=self.dispatcher is not None, batch=batch
        )
        updated = [inst.id for inst in runner.instances.values() if not inst.is_new]
        for inst in runner.instances.values():
            repository.save_instance(batch.conn, inst, now, batch)
        return updated

    def _notify(self, effects: Effects) -> None:
        """Tell listener plugins what happened, after the commit (so it really happened)."""
        for hook, kwargs in effects.events:
            if self.plugins.has_listeners(hook):
                try:
                    getattr(self.plugins.hook, hook)(**kwargs)
                except Exception:  # the command committed: a failing listener must not make it look failed
                    log.exception("listener %s failed", hook)

    # ------------------------------------------------------------------ deploying
    def validate(self, source: Source, *, name: str | None = None) -> Definitions:
        """Parse and check a model as ``deploy`` would, without deploying it.

        Raises:
            ModelError: every problem, each naming element and line.
        """
        defs, _data, _name = self.deployer.check(source, name)
        return defs

    def deploy(self, source: Source, *, name: str | None = None) -> Deployment:
        """Deploy a BPMN file (path, XML text or bytes).

        Returns the definitions; an identical redeploy returns the existing ones
        with ``changed=False``.

        Raises:
            ModelError: the model is invalid; nothing was deployed.
        """
        with self.db.begin() as conn:
            return self.deployer.deploy(conn, source, name, self.clock())

    def definitions(self, key: str | None = None) -> list[DefinitionInfo]:
        return queries.definitions(self, key)

    def definition(self, key: str, version: int | None = None) -> DefinitionInfo:
        with self.reader.connect() as conn:
            return self.deployer.latest(conn, key, version)


    # ------------------------------------------------------------------ instances
    def start(
        self,
        process_key: str,
        variables: Mapping[str, Any] | None = None,
        *,
        business_key: str | None = None,
        version: int | None = None,
    ) -> InstanceInfo:
        """Start an instance of the latest (or given) version and run it to its first wait states.

        Raises:
            NotFound: no such process is deployed.
            ModelError: the process is not executable.
            ExecutionError: an element failed; nothing was saved.
        """
        with self._command() as (conn, runner):
            info = self.deployer.latest(conn, process_key, version)
            if not info.executable:
                raise ModelError(
                    [Problem(f'process {process_key!r} is not executable (isExecutable="false")', process_key)],
                    f"process {process_key!r} cannot be started",
                )
            graph = self.deployer.graph(conn, info.id)
            inst = events.start_instance(runner, info.id, graph, _json_vars(variables), business_key)
        return self._snapshot(inst)

    def handle(self, instance_id: str) -> InstanceHandle:
        """A handle to poll an instance or wait for its result (``.poll()``, ``.result(timeout=...)``)."""
        from bpmnlite.handle import InstanceHandle

        return InstanceHandle(self, instance_id)

    def instance(self, instance_id: str) -> InstanceInfo:
        """The instance as stored now. Raises NotFound."""
        return queries.instance(self, instance_id)

    def instances(
        self,
        *,
        process_key: str | None = None,
        state: str | None = None,
        business_key: str | None = None,
        parent_instance_id: str | None = None,
        limit: int = 1000,
    ) -> list[InstanceInfo]:
        """Instances, newest first, filtered by key, state, business key or parent."""
        return queries.instances(self, process_key=process_key, state=state, business_key=business_key, parent_instance_id=parent_instance_id, limit=limit)

    def count_instances(self) -> dict[tuple[str, str], int]:
        """Instances per (process key, state): what the dashboard and CLI show."""
        return queries.count_instances(self)

    def cancel(self, instance_id: str, *, timeout: float = 30.0) -> InstanceInfo:
        """Cancel an instance and the instances it called.

        If one of its jobs is running, the handler is asked to stop
        (``ctx.should_stop()`` turns true and ``ctx.progress`` raises
        ``TaskStopped``) and this waits up to ``timeout`` seconds for it.

        Raises:
            Conflict: it has already ended, or a running job did not stop in time.
        """
        self._stop_requests.add(instance_id)
        try:
            if self.db.dialect.name != "sqlite":  # other processes' handlers read the flag
                with self.db.begin() as conn:
                    conn.execute(t.instances.update().where(t.instances.c.id == instance_id).values(stop_requested=True))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with self._command() as (_conn, runner):
                        inst = runner.instance(instance_id)
                        if inst.state in FINAL_STATES:
                            raise Conflict(f"process instance {instance_id} has already ended ({inst.state.value})")
                        runner.cancel_instance(inst)
                    return self._snapshot(inst)
                except Conflict:
                    if time.monotonic() >= deadline or self.instance(instance_id).ended:
                        raise
                    with self.changed:  # a running job is finishing: go again when it committed
                        self.changed.wait(0.2)
        finally:
            self._stop_requests.discard(instance_id)

    def stop_requested(self, instance_id: str) -> bool:
        """Whether ``cancel`` is waiting for this instance's running handler."""
        if instance_id in self._stop_requests:
            return True
        if self.db.dialect.name == "sqlite":
            return False
        with self.reader.connect() as conn:
            flag = conn.execute(sa.select(t.instances.c.stop_requested).where(t.instances.c.id == instance_id)).scalar()
        return bool(flag)

    def set_variables(self, instance_id: str, variables: Mapping[str, Any]) -> InstanceInfo:
        """Set process variables of a waiting instance (one command)."""
        with self._command() as (_conn, runner):
            inst = runner.instance(instance_id)
            if inst.state in FINAL_STATES:
                raise Conflict(f"process instance {instance_id} has already ended ({inst.state.value})")
            runner.set_variables(inst, None, _json_vars(variables))
        return self._snapshot(inst)

    # ------------------------------------------------------------------ user tasks
    def tasks(
        self, *, instance_id: str | None = None, element_id: str | None = None, state: str = "open", limit: int = 1000
    ) -> list[TaskInfo]:
        return queries.tasks(self, instance_id=instance_id, element_id=element_id, state=state, limit=limit)

    def complete_task(self, task_id: str, variables: Mapping[str, Any] | None = None) -> InstanceInfo:
        """Complete an open user task and run the instance to its next wait states.

        Raises:
            NotFound: no open task with this id.
            Conflict: another command changed the instance at the same time.
            ExecutionError: an element after the task failed; nothing was saved
                and the task is still open.
        """
        with self._command() as (conn, runner):
            row = conn.execute(sa.select(t.tasks).where(t.tasks.c.id == task_id)).first()
            if row is None or row.state != "open":
                raise NotFound(f"no open user task {task_id!r}")
            inst = runner.instance(row.instance_id)
            token = inst.tokens.get(row.token_id)
            if inst.suspended:
                raise Conflict(f"process instance {inst.id} is suspended; activate it first")
            if token is None or token.wait is not Wait.USER_TASK or token.data.get("task") != task_id:
                raise Conflict(f"user task {task_id} is no longer waiting")
            values = _json_vars(variables)

            runner.set_variables(inst, token, values, row.element_id)
            runner.complete(inst, token)
        return self._snapshot(inst)

    # ------------------------------------------------------------------ messages and signals
    def correlate_message(
        self,
        name: str,
        *,
        business_key: str | None = None,
        correlation: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> InstanceInfo:
        """Deliver a message to the one instance waiting for it, or start one by a message start event.

        Matches the message name plus the business key, the correlation
        variables and/or the instance id given. Raises NotFound when nothing
        waits for it.
        """
        with self._command() as (conn, runner):
            inst = messaging.correlate(self, conn, runner, name, business_key, dict(correlation or {}), _json_vars(variables),
                                   instance_id=instance_id)
            if inst is None:
                detail = f" with business key {business_key!r}" if business_key else ""
                raise NotFound(f"no instance or start event waits for message {name!r}{detail}")
        return self._snapshot(inst)

    def broadcast_signal(self, name: str, variables: Mapping[str, Any] | None = None) -> int:
        """Deliver a signal to every instance and start event waiting for it; returns how many."""
        with self._command() as (conn, runner):
            count = messaging.deliver_signal(self, conn, runner, name, _json_vars(variables))
        return count

    # ------------------------------------------------------------------ jobs and timers
    def jobs(
        self, *, instance_id: str | None = None, state: str | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[JobInfo]:
        """Jobs (async continuations and timers); ``state="deadletter"`` are incidents."""
        return queries.jobs(self, instance_id=instance_id, state=state, kind=kind, limit=limit)

    def incidents(self, *, instance_id: str | None = None) -> list[JobInfo]:
        """Jobs that ran out of retries (dead-letter jobs), with their errors."""
        return self.jobs(instance_id=instance_id, state="deadletter")

    def retry(self, job_id: str, retries: int | None = None) -> JobInfo:
        """Make an incident (or a failing job) runnable again with ``retries`` attempts."""
        return control.retry(self, job_id, retries)

    def due_jobs(self, now: datetime | None = None, limit: int = 100, *, timers_only: bool = False) -> list[str]:
        """Ids of jobs due at ``now`` (executable and timers), oldest first."""
        return queries.due_jobs(self, now, limit, timers_only=timers_only)

    def execute_job(self, job_id: str) -> str:
        """Run one job now, in this thread, as a worker would (see ``run_job``), and only that job."""
        return self.run_job(job_id, owner=self._inline_owner, chain=False)

    def run_job(self, job_id: str, *, owner: str, now: datetime | None = None, chain: bool = True) -> str:
        """Claim and run one job. Returns done, failed, incident, conflict, stopped, skipped or gone.

        A failure rolls the job's command back; then, in a new transaction,
        the job loses one retry and is due again after its back-off, or
        becomes an incident when none are left. A conflict with another
        command makes it run again without spending a retry.

        With ``chain``, a job the command created that is due at once runs
        next in this thread, in a transaction of its own, without a message
        (up to ``executor.CHAIN_LIMIT`` in a row; see ``jobs.executor``).
        """
        return executor.run_job(self, job_id, owner, now, chain=chain)

    def _run_job_command(self, job_id: str, claim: Claim) -> list[str]:
        """Run a claimed job's command; returns the ids of the jobs it created (already sent)."""
        with self._command(claim) as (conn, runner):
            row = executor.hold_claim(conn, claim)
            if row is None:
                return []  # gone, or taken over by another worker after our lock expired
            runner.effects.consumed_jobs.add(job_id)
            runner.in_job = True
            control.resume(self, conn, runner, row)
        return runner.created_jobs

    def job_timed_out(self, job_id: str, *, owner: str) -> str:
        """Record that a job ran past its time limit: handled like a failure (retry or incident)."""
        claim = Claim(job_id, None, owner, False, self.clock())
        with self.db.begin() as conn:
            row = conn.execute(
                sa.select(t.jobs.c.instance_id, t.jobs.c.exclusive, t.jobs.c.element_id).where(t.jobs.c.id == job_id)
            ).first()
        exc = ExecutionError(f"job {job_id} ran longer than its time limit")
        if row is not None:
            claim = Claim(job_id, row.instance_id, owner, bool(row.exclusive), self.clock())
            exc = ExecutionError(f"ran longer than its time limit (job {job_id})", element_id=row.element_id)
        return failures.record_failure(self, job_id, exc, incident=False, claim=claim, timed_out=True)

    def worker(self, threads: int = 2, interval: float = 0.2) -> EmbeddedWorker:
        """An in-process worker (stub broker) to use as a context manager::

            with engine.worker(threads=4):
                engine.start("order")   # async jobs run in the background
        """
        from bpmnlite.worker import EmbeddedWorker

        return EmbeddedWorker(self, threads, interval)

    def run_until_idle(self, timeout: float = 30.0, threads: int = 2) -> None:
        """Run due jobs with an in-process worker until none is due, queued or running.

        Raises:
            TimeoutError: jobs were still running or due after ``timeout`` seconds.
        """
        with self.worker(threads) as w:
            if not w.wait_idle(timeout):
                raise TimeoutError(f"jobs still due or running after {timeout} s")

    def release_locks(self, owner: str) -> None:
        """Give back every job lock and instance lease held by ``owner`` (a stopping worker)."""
        control.release_locks(self, owner)

    def suspend(self, instance_id: str) -> InstanceInfo:
        """Suspend an instance: its jobs do not run and its commands are refused until ``activate``."""
        return control.set_suspended(self, instance_id, True)

    def activate(self, instance_id: str) -> InstanceInfo:
        """Resume a suspended instance; its jobs become runnable again."""
        return control.set_suspended(self, instance_id, False)

    def reconcile(self, now: datetime | None = None) -> int:
        """Re-send due jobs whose message may be lost, and free expired locks; returns how many were sent."""
        claimed = executor.reconcile(self, now)
        return self._send(claimed)

    def _send(self, job_ids: list[str]) -> int:
        """Send messages for committed jobs; a broker failure is logged, never raised.

        The command has committed already: raising would make a caller retry a
        command that succeeded. A job whose message was not sent is found by the
        reconciler after ``resend_after``.
        """
        if not job_ids or self.dispatcher is None:
            return 0
        try:
            return self.dispatcher.send(job_ids)
        except Exception:  # broker down: the rows are the truth, the reconciler re-sends
            log.warning("could not send %d job message(s); the reconciler will re-send them", len(job_ids),
                        exc_info=True)
            return 0

    def _job_failed(self, job_id: str, element_id: str, error: str, retries_left: int) -> None:
        if self.plugins.has_listeners("bpmnlite_job_failed"):
            self.plugins.hook.bpmnlite_job_failed(
                job_id=job_id, element_id=element_id, error=error, retries_left=retries_left
            )

    def _incident_raised(self, job_id: str, error: str) -> None:
        if self.plugins.has_listeners("bpmnlite_incident_raised"):
            self.plugins.hook.bpmnlite_incident_raised(job_id=job_id, error=error)

    def run_jobs(self, *, now: datetime | None = None, max_jobs: int = 10_000, timers_only: bool = False) -> int:
        """Run due jobs in this thread until none is due (the embedded executor); returns how many ran."""
        ran = 0
        while ran < max_jobs:
            due = self.due_jobs(now, limit=100, timers_only=timers_only)
            progressed = False
            for job_id in due:
                outcome = self.run_job(job_id, owner=self._inline_owner, now=now, chain=False)
                if outcome in ("skipped", "gone"):
                    continue  # another worker has it, or it is not due for this clock
                ran += 1
                progressed = progressed or outcome != "conflict"
            if not progressed:
                break
        return ran

    def fire_due_timers(self, now: datetime | None = None) -> int:
        """Fire every timer due at ``now`` (default: the engine clock); returns how many fired."""
        return self.run_jobs(now=now, timers_only=True)

    # ------------------------------------------------------------------ progress
    def progress(self, key: str) -> ProgressInfo | None:
        """A progress item by key (see ``TaskContext.progress``), or None."""
        return self.progress_board.get(key)

    def progress_of(self, instance_id: str) -> list[ProgressInfo]:
        """Every progress item an instance's handlers reported."""
        return self.progress_board.of_instance(instance_id)

    # ------------------------------------------------------------------ history
    def history(self, instance_id: str) -> list[ActivityInfo]:
        """Activity instances of an instance in start order (element, start, end, outcome)."""
        return queries.history(self, instance_id)

    def variable_history(self, instance_id: str) -> list[VariableChange]:
        return queries.variable_history(self, instance_id)

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self, inst: Instance) -> InstanceInfo:
        return queries.snapshot(inst)


def _is_contention(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock, serialization failure or busy database: the command lost a race, nothing is wrong."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in ("40P01", "40001", "55P03"):
        return True
    return "database is locked" in str(exc.orig)


def _json_vars(variables: Mapping[str, Any] | None) -> dict[str, Any]:
    """Variables must survive a JSON round trip; say which one does not."""
    import json

    out = dict(variables or {})
    for name, value in out.items():
        if not isinstance(name, str):
            raise BpmnliteError(f"variable names must be strings, got {name!r}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise BpmnliteError(f"variable {name!r} cannot be stored: {exc}") from None
    return out


__all__ = ["Engine", "InstanceState"]
