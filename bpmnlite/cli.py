"""The command line: validate, deploy, run and operate processes from a shell.

Every command opens one :class:`Engine` on ``--db`` (default: ``$BPMNLITE_DB``,
else ``sqlite:///bpmnlite.db`` in the current directory) and prints what it
did: tables for people, ``--json`` for scripts. Errors bpmnlite raises on
purpose print their message and exit 1; usage errors exit 2; anything else is
an internal error, one line unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bpmnlite import cli_format as fmt
from bpmnlite.engine import Engine
from bpmnlite.errors import BpmnliteError, ModelError, NotFound, Problem
from bpmnlite.records import InstanceInfo

DEFAULT_DB = "sqlite:///bpmnlite.db"
#: a safety net for ``run``: a timer cycle due in the past could otherwise keep it busy
MAX_JOBS = 10_000

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """The command line asks for something that cannot work as given (exit 2)."""


# ------------------------------------------------------------------ argument types
def parse_var(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``; the value is JSON when it parses as JSON, else the string itself."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        value = raw
    return name.strip(), value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a storable number")  # NaN/Infinity stay strings


def parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"amount\": 120}'")
    return value


def variables(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = dict(getattr(args, "json_vars", None) or {})
    values.update(args.var or [])
    return values


# ------------------------------------------------------------------ helpers
def open_engine(args: argparse.Namespace) -> Engine:
    return Engine(args.db, trusted_scripts=args.trusted_scripts)


def emit(args: argparse.Namespace, data: Any, text: str | Sequence[str]) -> None:
    """Print ``data`` as JSON under ``--json``, else the human-readable ``text``."""
    if args.json:
        print(fmt.dumps(data))
    else:
        print(text if isinstance(text, str) else "\n".join(text))


def subscriptions(engine: Engine, instance_id: str) -> list[fmt.Subscription]:
    """Messages and signals an instance waits for."""
    # The Engine has no public query for subscriptions yet; read the table, never write it.
    from bpmnlite.store import tables

    sub = tables.subscriptions
    query = (
        sa.select(sub.c.kind, sub.c.name, sub.c.element_id, sub.c.business_key)
        .where(sub.c.instance_id == instance_id)
        .order_by(sub.c.created_at)
    )
    with engine.reader.connect() as conn:
        return [fmt.Subscription(r.kind, r.name, r.element_id, r.business_key) for r in conn.execute(query)]


def gather_waits(engine: Engine, info: InstanceInfo, depth: int = 0) -> fmt.Waits:
    """What an instance waits for: tasks, messages, signals, jobs, incidents and called instances."""
    waits = fmt.Waits()
    if info.ended:
        return waits
    waits.tasks = engine.tasks(instance_id=info.id)
    waits.subscriptions = subscriptions(engine, info.id)
    for job in engine.jobs(instance_id=info.id):
        if job.state == "deadletter":
            waits.incidents.append(job)
        elif job.state != "suspended":
            waits.jobs.append(job)
    if depth < 10:
        for child in engine.instances(parent_instance_id=info.id):
            if not child.ended:
                waits.children.append((child, gather_waits(engine, child, depth + 1)))
    return waits


def show_instance(args: argparse.Namespace, engine: Engine, info: InstanceInfo, **extra: Any) -> int:
    """Print an instance and where it waits; exit 1 when it failed, has an incident or a failing job."""
    waits = gather_waits(engine, info)
    data = {**fmt.to_jsonable(info), **extra, "waits": fmt.waits_json(waits)}
    emit(args, data, fmt.instance_text(info, waits))
    return 1 if info.state == "failed" or waits.has_failures() else 0


def drive(engine: Engine) -> int:
    """Run due jobs until none is due, with a progress line on stderr; returns how many ran."""
    done = 0
    tty = sys.stderr.isatty()
    while done < MAX_JOBS:
        ran = engine.run_jobs(max_jobs=1)  # one batch of due jobs per call
        if not ran:
            break
        done += ran
        if tty:
            print(f"\rrunning jobs... {done} done", end="", file=sys.stderr, flush=True)
    if done >= MAX_JOBS:
        print(f"\nstopped after {done} jobs; more are due (run `bpmnlite run-jobs` to go on)", file=sys.stderr)
    elif done:
        print(("\r" if tty else "") + f"running jobs... {done} done", file=sys.stderr)
    return done


# ------------------------------------------------------------------ commands
def cmd_validate(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    with Engine("sqlite://", trusted_scripts=args.trusted_scripts) as engine:
        for name in args.files:
            problems: list[Problem] = []
            processes: list[str] = []
            try:
                if Path(name).is_dir():
                    raise IsADirectoryError(21, "is a directory")
                defs = engine.validate(Path(name), name=name)
                processes = [p.id for p in defs.processes]
            except ModelError as exc:
                problems = exc.problems or [Problem(exc.summary)]
            except NotFound:
                problems = [Problem("no such file")]
            except OSError as exc:
                problems = [Problem(f"cannot read: {exc.strerror or exc}")]
            results.append({"file": name, "ok": not problems, "processes": processes, "problems": [
                {"line": p.line, "element": p.element_id, "message": p.message} for p in problems]})
            if not args.json:
                if problems:
                    print("\n".join(fmt.problem_line(p, name) for p in problems))
                else:
                    print(f"{name}: ok (processes: {', '.join(processes) or 'none'})")
    if args.json:
        print(fmt.dumps(results))
    return 0 if all(r["ok"] for r in results) else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    with open_engine(args) as engine:
        for name in args.files:
            deployment = engine.deploy(Path(name))
            rows += [{"file": name, "key": d.key, "version": d.version, "changed": deployment.changed,
                      "executable": d.executable, "definition_id": d.id} for d in deployment.definitions]
    emit(args, rows, fmt.table(
        ("file", "key", "version", "status"),
        ((r["file"], r["key"], r["version"], "deployed" if r["changed"] else "unchanged") for r in rows),
    ))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        info = engine.start(args.key, variables(args), business_key=args.business_key)
        return show_instance(args, engine, info)


def cmd_run(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        deployment = engine.deploy(Path(args.file))
        executable = [d for d in deployment.definitions if d.executable]
        if args.process is not None:
            chosen = [d for d in deployment.definitions if d.key == args.process]
            if not chosen:
                known = ", ".join(d.key for d in deployment.definitions)
                raise UsageError(f"{args.file} has no process {args.process!r} (processes: {known})")
        elif len(executable) != 1:
            keys = ", ".join(d.key for d in executable) or "none"
            raise UsageError(f"{args.file} has {len(executable)} executable processes ({keys}); "
                             "choose one with --process KEY")
        else:
            chosen = executable
        definition = chosen[0]
        if not args.json:
            status = "deployed" if deployment.changed else "unchanged"
            print(f"{args.file}: {definition.key} v{definition.version} ({status})")
        started = engine.start(definition.key, variables(args), business_key=args.business_key)
        jobs_run = drive(engine)
        info = engine.instance(started.id)
        history = engine.history(info.id)
        if not args.json:
            print("path:")
            print(fmt.path_table(history, indent="  "))
        return show_instance(args, engine, info, path=fmt.path_json(history), jobs_run=jobs_run)


def cmd_run_jobs(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        done = drive(engine)
    emit(args, {"jobs_run": done}, f"ran {done} job(s)")
    return 0


def cmd_instances(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        if args.summary:
            counts = sorted(engine.count_instances().items())
            data: Any = [{"process_key": k, "state": s, "count": n} for (k, s), n in counts]
            emit(args, data, fmt.table(("process", "state", "count"), ((k, s, n) for (k, s), n in counts)))
            return 0
        found = engine.instances(process_key=args.key, state=args.state, limit=args.limit)
    emit(args, found, fmt.table(
        ("id", "key", "state", "business key", "waiting at", "started"),
        ((i.id, i.process_key, i.state, i.business_key, ", ".join(i.active_elements) if not i.ended else "",
          fmt.when(i.started_at)) for i in found),
    ))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        found = engine.tasks(instance_id=args.instance)
    emit(args, found, fmt.table(
        ("id", "name", "element", "instance", "created"),
        ((t.id, t.name or "", t.element_id, t.instance_id, fmt.when(t.created_at)) for t in found),
    ))
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        return show_instance(args, engine, engine.complete_task(args.task_id, variables(args)))


def cmd_message(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        info = engine.correlate_message(args.name, business_key=args.business_key, variables=variables(args))
        return show_instance(args, engine, info)


def cmd_signal(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        count = engine.broadcast_signal(args.name, variables(args))
    emit(args, {"signal": args.name, "delivered": count},
         f"signal '{args.name}' delivered to {count} waiting element(s)")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        return show_instance(args, engine, engine.cancel(args.instance_id))


def cmd_history(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        info = engine.instance(args.instance_id)
        history = engine.history(info.id)
    emit(args, {"instance": info.id, "state": info.state, "path": fmt.path_json(history)},
         [f"instance {info.id} ({info.process_key}): {info.state}", fmt.path_table(history)])
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        found = engine.incidents(instance_id=args.instance) if args.incidents else engine.jobs(instance_id=args.instance)
    emit(args, found, fmt.table(
        ("id", "kind", "state", "element", "instance", "due", "retries", "error"),
        ((j.id, j.kind, j.state, j.element_id, j.instance_id, fmt.when(j.due_at), j.retries,
          fmt.job_error(j) if j.attempts else "") for j in found),
    ))
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    args.incidents = True
    return cmd_jobs(args)


def cmd_retry(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        job = engine.retry(args.job_id, args.retries)
    emit(args, job, f"job {job.id} at '{job.element_id}' is {job.state} again with {job.retries} attempt(s)")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        return show_instance(args, engine, engine.suspend(args.instance_id))


def cmd_activate(args: argparse.Namespace) -> int:
    with open_engine(args) as engine:
        return show_instance(args, engine, engine.activate(args.instance_id))


def cmd_worker(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bpmnlite.dispatch import redact
    from bpmnlite.worker import serve

    broker = args.broker or os.environ.get("BPMNLITE_BROKER_URL")
    if not broker:
        raise UsageError("a broker is required: --broker redis://127.0.0.1:6379/0 (or BPMNLITE_BROKER_URL)")
    options: dict[str, Any] = {
        "lock_duration": timedelta(seconds=args.lock_seconds),
        "resend_after": timedelta(seconds=args.resend_seconds),
        "trusted_scripts": args.trusted_scripts,
        "queue": args.queue,
        "job_batch": args.job_batch,
    }
    print(f"bpmnlite worker: {args.processes} process(es) x {args.threads} thread(s), queue {args.queue!r}, "
          f"database {redact(args.db)}, broker {redact(broker)}", file=sys.stderr)
    return serve(args.db, broker, processes=args.processes, threads=args.threads, interval=args.interval,
                 plugin_modules=args.plugin or [], options=options)


# ------------------------------------------------------------------ the parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _global_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command; only the top level sets their defaults."""
    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--db", metavar="URL", default=default(None),
                      help=f"database URL (default: $BPMNLITE_DB, else {DEFAULT_DB})")
    opts.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    opts.add_argument("--trusted-scripts", action="store_true", default=default(False),
                      help="run script tasks without the sandbox")
    opts.add_argument("--debug", action="store_true", default=default(False),
                      help="print the traceback of internal errors")
    return opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpmnlite", description="Run and operate BPMN 2.0 processes.",
        parents=[_global_options(with_defaults=True)],
    )
    common = [_global_options(with_defaults=False)]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def with_vars(p: argparse.ArgumentParser) -> None:
        p.add_argument("--var", type=parse_var, action="append", metavar="NAME=VALUE",
                       help="a variable; VALUE is read as JSON when it parses (120, true, [\"a\"]), else as text")

    p = command("validate", cmd_validate, "check BPMN files without deploying them")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = command("deploy", cmd_deploy, "deploy BPMN files (an identical file is not deployed again)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = command("start", cmd_start, "start an instance of a deployed process")
    p.add_argument("key", metavar="KEY")
    with_vars(p)
    p.add_argument("--json-vars", type=parse_json_object, metavar="JSON", help="variables as one JSON object")
    p.add_argument("--business-key", metavar="BK")
    p = command("run", cmd_run, "deploy a file, start its process and run it as far as it goes")
    p.add_argument("file", metavar="FILE")
    with_vars(p)
    p.add_argument("--business-key", metavar="BK")
    p.add_argument("--process", metavar="KEY", help="the process to start when the file has several")
    command("run-jobs", cmd_run_jobs, "run due jobs (async continuations, timers) until none is due")
    p = command("instances", cmd_instances, "list process instances, newest first")
    p.add_argument("--key", metavar="KEY", help="only instances of this process")
    p.add_argument("--state", choices=("running", "waiting", "completed", "cancelled", "failed"))
    p.add_argument("--summary", action="store_true", help="count instances per process and state")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p = command("tasks", cmd_tasks, "list open user tasks")
    p.add_argument("--instance", metavar="ID")
    p = command("complete", cmd_complete, "complete a user task")
    p.add_argument("task_id", metavar="TASK_ID")
    with_vars(p)
    p = command("message", cmd_message, "deliver a message to the instance (or start event) waiting for it")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--business-key", metavar="BK")
    with_vars(p)
    p = command("signal", cmd_signal, "broadcast a signal to everything waiting for it")
    p.add_argument("name", metavar="NAME")
    with_vars(p)
    p = command("cancel", cmd_cancel, "cancel a running instance")
    p.add_argument("instance_id", metavar="ID")
    p = command("history", cmd_history, "the path an instance took")
    p.add_argument("instance_id", metavar="ID")
    p = command("jobs", cmd_jobs, "list jobs (timers, async continuations) and incidents")
    p.add_argument("--instance", metavar="ID")
    p.add_argument("--incidents", action="store_true", help="only jobs that ran out of retries")
    p = command("incidents", cmd_incidents, "list incidents: jobs that ran out of retries, with their errors")
    p.add_argument("--instance", metavar="ID")
    p = command("retry", cmd_retry, "make an incident's job runnable again")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--retries", type=int, metavar="N", help="attempts to give it (default: the engine's)")
    p = command("suspend", cmd_suspend, "suspend an instance: its jobs wait and its commands are refused")
    p.add_argument("instance_id", metavar="ID")
    p = command("activate", cmd_activate, "activate a suspended instance")
    p.add_argument("instance_id", metavar="ID")
    p = command("worker", cmd_worker, "run job worker processes (Dramatiq on Redis) plus the scheduler")
    p.add_argument("--broker", metavar="URL", help="redis://host:port/db (default: $BPMNLITE_BROKER_URL)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=4, help="threads per process (default 4)")
    p.add_argument("--queue", "--queues", default="bpmnlite", help="the Dramatiq queue (default bpmnlite)")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE and register it as a plugin (besides installed entry points)")
    p.add_argument("--lock-seconds", type=float, default=300.0,
                   help="how long a job lock lasts before another worker may take the job over (default 300)")
    p.add_argument("--resend-seconds", type=float, default=30.0,
                   help="re-send a due job's message when none was sent for this long (default 30)")
    p.add_argument("--interval", type=float, default=1.0, help="scheduler tick in seconds (default 1)")
    p.add_argument("--job-batch", type=_positive_int, default=16, metavar="N",
                   help="PostgreSQL: run up to N chained and due jobs in one transaction (default 16; 1: one each)")
    return parser


# ------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors: argparse already printed why
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    args.db = args.db or os.environ.get("BPMNLITE_DB") or DEFAULT_DB
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"bpmnlite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:
        _traceback(args)
        print(f"error: {exc.summary}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {fmt.problem_line(problem)}", file=sys.stderr)
        return 1
    except BpmnliteError as exc:
        _traceback(args)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        _traceback(args)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as exc:
        _traceback(args)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: database {args.db}: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: one line, the traceback only on request
        if args.debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"internal error: {type(exc).__name__}: {first}", file=sys.stderr)
        if not args.debug:
            print("re-run with --debug to see the traceback", file=sys.stderr)
        return 1


def _traceback(args: argparse.Namespace) -> None:
    if args.debug:
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
