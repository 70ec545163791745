"""What the worker scenarios share: PostgreSQL and Redis, worker processes, models, polling.

Where the servers are (environment variables, with these defaults):

- ``BPMNLITE_BENCH_PG``: ``postgresql+psycopg://postgres@127.0.0.1:5432/bpmnlite_bench``.
  The bench creates this database (and ``<name>_pgbench`` for pgbench) and drops it
  afterwards; if it exists already it is dropped and made anew, so never point this at
  a database you want to keep.
- ``BPMNLITE_BENCH_REDIS``: ``redis://127.0.0.1:6379/12``. Each run uses a queue of its
  own (``bench-<random>``) and deletes that queue's keys afterwards; nothing else in the
  Redis database is touched.
- ``BPMNLITE_BENCH_PGBENCH``: the ``pgbench`` program (default: found on ``PATH``).

Worker processes are real ``bpmnlite worker`` commands (``python -m bpmnlite.cli``)
started with ``--plugin bench.bench_plugin``; they are stopped by pid with SIGTERM,
as an operator would, and killed by pid only if they do not stop in time.

Feeder processes (``Feeders``) start instances concurrently, as an application's
web processes would: each is ``python -c "from bench.services import feed_main; ..."``
with an ``Engine`` of its own, driven by one-word lines on its stdin and
answering on its stdout; they are stopped the same way.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.registry import BenchError, Unavailable

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BPMNLITE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/bpmnlite_bench")
REDIS_URL = os.environ.get("BPMNLITE_BENCH_REDIS", "redis://127.0.0.1:6379/12")
PLUGIN = "bench.bench_plugin"
TASK_TYPE = "bench-step"

# ---------------------------------------------------------------- models
_NS = (
    'xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmnlite="http://bpmnlite.org/schema/bpmn" '
    'id="{pid}_definitions" targetNamespace="https://bpmnlite.org/bench"'
)


def _process(pid: str, nodes: list[str], ids: list[str]) -> str:
    flows = "".join(
        f'<sequenceFlow id="f{i}" sourceRef="{a}" targetRef="{b}"/>\n' for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False))
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<definitions {_NS.format(pid=pid)}>\n'
        f'<process id="{pid}" isExecutable="true">\n<startEvent id="start"/>\n'
        + "".join(nodes)
        + '<endEvent id="end"/>\n'
        + flows
        + "</process>\n</definitions>\n"
    )


def async_chain_xml(pid: str, steps: int) -> str:
    """start -> ``steps`` async ``bench-step`` service tasks -> end: ``steps`` jobs per instance."""
    ids = [f"s{i}" for i in range(1, steps + 1)]
    nodes = [f'<serviceTask id="{i}" bpmnlite:type="{TASK_TYPE}" bpmnlite:async="true"/>\n' for i in ids]
    return _process(pid, nodes, ["start", *ids, "end"])


def user_chain_xml(pid: str, tasks: int) -> str:
    """start -> ``tasks`` user tasks -> end: every step is one wait state."""
    ids = [f"u{i}" for i in range(1, tasks + 1)]
    return _process(pid, [f'<userTask id="{i}"/>\n' for i in ids], ["start", *ids, "end"])


# ---------------------------------------------------------------- services
def _libpq(url: str) -> tuple[str, str]:
    """(libpq URL of ``url``, its database name) from an SQLAlchemy URL."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise Unavailable(f"BPMNLITE_BENCH_PG must be a PostgreSQL URL, got {url!r}")
    libpq = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return libpq, str(parsed.database)


def _maintenance(url: str) -> str:
    import sqlalchemy as sa

    libpq, _ = _libpq(url)
    return sa.engine.make_url(libpq).set(database="postgres").render_as_string(hide_password=False)


def need_postgres(url: str = PG_URL) -> None:
    try:
        import psycopg
    except ImportError:
        raise Unavailable("psycopg is not installed: pip install 'psycopg[binary]' (bpmnlite's postgres extra)") from None
    try:
        psycopg.connect(_maintenance(url), connect_timeout=3).close()
    except Exception as exc:
        raise Unavailable(
            f"PostgreSQL is unreachable at {_libpq(url)[0]} ({type(exc).__name__}: {str(exc).strip()}); "
            "start it or set BPMNLITE_BENCH_PG"
        ) from None


def need_redis(url: str = REDIS_URL) -> None:
    try:
        import redis
    except ImportError:
        raise Unavailable("the redis package is not installed: pip install redis") from None
    try:
        redis.Redis.from_url(url, socket_timeout=3).ping()
    except Exception as exc:
        raise Unavailable(
            f"Redis is unreachable at {url} ({type(exc).__name__}: {exc}); start it or set BPMNLITE_BENCH_REDIS"
        ) from None


def need_pgbench() -> str:
    found = os.environ.get("BPMNLITE_BENCH_PGBENCH") or shutil.which("pgbench")
    if not found:
        raise Unavailable("pgbench is not on PATH (it comes with PostgreSQL); install it or set BPMNLITE_BENCH_PGBENCH")
    return found


def psql(url: str, *, autocommit: bool = True) -> Any:
    """A plain psycopg connection (the bench's own queries, not the engine's)."""
    import psycopg

    return psycopg.connect(_libpq(url)[0], autocommit=autocommit)


@contextmanager
def pg_database(url: str = PG_URL, suffix: str = "") -> Iterator[str]:
    """A fresh, empty database named after ``url`` (plus ``suffix``); dropped on exit. Yields its URL."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    name = f"{parsed.database}{suffix}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise Unavailable(f"unsupported database name {name!r}: use letters, digits and underscores")
    import psycopg

    def admin(sql: str) -> None:
        with psycopg.connect(_maintenance(url), autocommit=True) as conn:
            conn.execute(sql)

    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def xact_counts(url: str) -> tuple[int, int]:
    """(xact_commit, xact_rollback) of ``url``'s database in ``pg_stat_database``.

    PostgreSQL 15 flushes a backend's counts at most once a second while it
    runs, and always when it exits: read these after the backends of
    interest have disconnected (see ``settled_xacts``).
    """
    _, name = _libpq(url)
    with psql(_maintenance(url)) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def settled_xacts(url: str, timeout: float = 5.0) -> tuple[int, int]:
    """``xact_counts`` once two reads 0.1 s apart agree (exited backends have flushed)."""
    deadline = time.monotonic() + timeout
    last = xact_counts(url)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = xact_counts(url)
        if now == last:
            return now
        last = now
    return last


def queue_name() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def drop_queue(redis_url: str, queue: str) -> None:
    """Delete the Dramatiq keys of ``queue`` (and only those)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [k for k in client.scan_iter(match=f"dramatiq:*{queue}*", count=1000)]
    if keys:
        client.delete(*keys)
    client.close()


def progress(message: str) -> None:
    """A progress line on stderr (stdout holds the JSON)."""
    print(f"bench:   {message}", file=sys.stderr, flush=True)


def poll(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.005) -> float:
    """Poll ``condition`` until it holds; returns ``time.perf_counter()`` when it did.

    Raises BenchError after ``timeout`` seconds: a run that does not finish is broken, not slow.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- worker processes
@dataclass
class Workers:
    """One ``bpmnlite worker`` command (``--processes N``), started and stopped by pid."""

    db_url: str
    broker_url: str
    queue: str
    processes: int = 1
    threads: int = 4
    interval: float = 1.0
    env: dict[str, str] | None = None
    job_batch: int | None = None  # ``--job-batch`` (None: the worker's default)
    proc: subprocess.Popen[bytes] | None = None
    final_log: str = ""
    _log: Any = None

    def start(self, ready_timeout: float = 60.0) -> Workers:
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath, **(self.env or {})}
        cmd = [
            sys.executable, "-m", "bpmnlite.cli", "--db", self.db_url, "worker", "--broker", self.broker_url,
            "--queue", self.queue, "--processes", str(self.processes), "--threads", str(self.threads),
            "--plugin", PLUGIN, "--interval", str(self.interval),
        ]
        if self.job_batch is not None:
            cmd += ["--job-batch", str(self.job_batch)]
        self._log = tempfile.NamedTemporaryFile(prefix="bpmnlite-bench-worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self._log, cwd=str(ROOT))
        try:
            poll(self._ready, ready_timeout, f"{self.processes} worker process(es) to start", every=0.05)
        except BenchError as exc:
            self.stop()
            raise BenchError(f"{exc}; worker log:\n{self.log()[-2000:]}") from None
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"the worker exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
        return self.log().count(" started: ") >= self.processes

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace") if self._log else ""

    def pids(self) -> list[int]:
        """The pids of the processes that run jobs (the command itself with one process)."""
        assert self.proc is not None
        if self.processes == 1:
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()]

    def pause(self) -> None:
        """SIGSTOP the job-running processes (``resume`` continues them): lets a backlog build up."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def backlog(self, feeder: Any, key: str, instances: int) -> None:
        """Start ``instances`` of ``key`` with ``feeder`` while these workers are paused, then resume them."""
        self.pause()
        try:
            for _ in range(instances):
                feeder.start(key)
        finally:
            self.resume()

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM by pid; running jobs finish. Killed by pid only if it does not stop in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self.final_log = self.log()
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def check_log(self, what: str) -> None:
        """A worker that logged an error or a traceback ran wrongly, however fast it was."""
        text = self.final_log if self._log is None else self.log()
        bad = [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]
        if bad:
            raise BenchError(f"{what}: the worker logged errors:\n" + "\n".join(bad[:10]))

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- feeder processes
def _say(word: str) -> None:
    print(word, flush=True)


def _expect(word: str) -> None:
    line = sys.stdin.readline()
    if line.strip() != word:  # '' when the bench went away: start nothing
        raise SystemExit(f"feeder: expected {word!r} on stdin, got {line!r}")


def feed_main(argv: list[str] | None = None) -> None:
    """One feeder process of ``Feeders``: ``DB_URL BROKER_URL QUEUE KEY COUNT WARM``.

    Builds its ``Engine`` (no connection yet) and says ``loaded``; on ``warm``
    starts ``WARM`` instances of ``KEY`` and says ``ready``; on ``go`` starts
    ``COUNT`` instances one at a time and says ``done <seconds>``, then closes
    its engine and exits.
    """
    db_url, broker_url, queue, key, count, warm = sys.argv[1:] if argv is None else argv
    from bench import bench_plugin
    from bpmnlite import Engine

    engine = Engine(
        db_url, broker_url=broker_url, queue=queue, load_entry_points=False, plugins=[bench_plugin],
        create_schema=False,
    )
    try:
        _say("loaded")
        _expect("warm")
        for _ in range(int(warm)):
            engine.start(key)
        _say("ready")
        _expect("go")
        began = time.perf_counter()
        for _ in range(int(count)):
            engine.start(key)
        _say(f"done {time.perf_counter() - began:.6f}")
    finally:
        engine.close()


@dataclass
class Feeders:
    """``clients`` feeder processes that start ``instances`` of ``key`` between them, concurrently.

    Each process has an ``Engine(db_url, broker_url=...)`` of its own and
    starts its share one at a time, like one web process of an application.
    ``start`` spawns them (they import and build their engine, touching
    neither PostgreSQL nor Redis), ``send("warm")`` has each start ``warm``
    instances, ``send("go")`` its share; ``wait_for`` waits, with a deadline,
    until every one has said ``loaded``, ``ready`` or ``done``. They are
    stopped by pid (SIGTERM, then SIGKILL) if they do not exit by themselves.
    """

    db_url: str
    broker_url: str
    queue: str
    key: str
    clients: int
    instances: int  # in all, split between the clients
    warm: int = 1  # warm-up starts per client, before "go"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[Any] = field(default_factory=list)
    _pending: list[bytes] = field(default_factory=list)
    _lines: list[list[str]] = field(default_factory=list)
    _open: list[bool] = field(default_factory=list)

    def shares(self) -> list[int]:
        base, extra = divmod(self.instances, self.clients)
        return [base + (1 if i < extra else 0) for i in range(self.clients)]

    def start(self) -> Feeders:
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath}
        try:
            for share in self.shares():
                log = tempfile.NamedTemporaryFile(prefix="bpmnlite-bench-feeder-", suffix=".log", delete=False)
                self._logs.append(log)
                cmd = [
                    sys.executable, "-c", "from bench.services import feed_main; feed_main()",
                    self.db_url, self.broker_url, self.queue, self.key, str(share), str(self.warm),
                ]
                self.procs.append(subprocess.Popen(
                    cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=str(ROOT)
                ))
                self._pending.append(b"")
                self._lines.append([])
                self._open.append(True)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self, i: int) -> str:
        return Path(self._logs[i].name).read_text(errors="replace")

    def _failed(self, i: int, what: str) -> BenchError:
        proc = self.procs[i]
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return BenchError(f"feeder {i} {what} (exit status {proc.returncode}):\n{self.log(i)[-2000:]}")

    def _pump(self, timeout: float) -> None:
        """Read what the feeders said, waiting at most ``timeout`` seconds for something."""
        fds = {proc.stdout.fileno(): i for i, proc in enumerate(self.procs) if self._open[i] and proc.stdout is not None}
        if not fds:
            return
        readable, _, _ = select.select(list(fds), [], [], max(timeout, 0.0))
        for fd in readable:
            i = fds[fd]
            chunk = os.read(fd, 4096)
            if not chunk:
                self._open[i] = False
                continue
            *lines, self._pending[i] = (self._pending[i] + chunk).split(b"\n")
            self._lines[i] += [line.decode(errors="replace").strip() for line in lines]

    def check(self) -> None:
        """Raise if a feeder has exited with an error (reads what they said, without waiting)."""
        self._pump(0)
        for i, proc in enumerate(self.procs):
            if proc.poll() not in (None, 0):
                raise self._failed(i, "failed")

    def wait_for(self, word: str, timeout: float) -> list[str]:
        """Wait until every feeder has said ``word``; returns what followed it on each one's line."""
        deadline = time.monotonic() + timeout
        while True:
            said = [next((line for line in lines if line.split()[:1] == [word]), None) for lines in self._lines]
            if all(line is not None for line in said):
                return [line.partition(" ")[2] for line in said if line is not None]
            for i, line in enumerate(said):
                if line is None and not self._open[i]:
                    raise self._failed(i, f"exited before saying {word!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {self.clients} feeders to say {word!r}")
            self._pump(min(left, 0.5))

    def send(self, word: str) -> None:
        """One line to every feeder, one after the other (microseconds apart)."""
        data = f"{word}\n".encode()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.flush()

    def stop(self, timeout: float = 30.0) -> None:
        """Wait for the feeders to exit (closing their stdin tells an idle one to); else SIGTERM, SIGKILL by pid."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass  # it has exited already
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self._logs:
            log.close()
            Path(log.name).unlink(missing_ok=True)
        self._logs = []

    def check_exit(self, what: str) -> None:
        """After ``stop``: every feeder exited with status 0."""
        bad = {i: proc.returncode for i, proc in enumerate(self.procs) if proc.returncode != 0}
        if bad:
            raise BenchError(f"{what}: feeders exited with {bad}")


# ---------------------------------------------------------------- polling and checks
class Poller:
    """The bench's own queries: one autocommit connection, every statement counted.

    Each statement is one transaction in ``pg_stat_database``, so the
    transaction counts can leave the bench's polling out.
    """

    def __init__(self, url: str) -> None:
        self.conn = psql(url)
        self.queries = 0

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.queries += 1
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.rows(sql, params)[0][0]

    def completed(self) -> int:
        return int(self.scalar("SELECT count(*) FROM bpm_instances WHERE state = 'completed'"))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


JOB_TABLES = (
    "bpm_instances", "bpm_jobs", "bpm_tasks", "bpm_subscriptions", "bpm_activity_history", "bpm_variable_history",
    "bpm_progress",
)


def truncate_runtime(url: str) -> None:
    """Empty every table but the deployments: the next run starts from no instances."""
    with psql(url) as conn:
        conn.execute(f"TRUNCATE {', '.join(JOB_TABLES)}")


def check_all_completed(poller: Poller, expected: int, what: str) -> None:
    """Every instance completed, no job left, no incident: else the figures are not reported."""
    states = dict(poller.rows("SELECT state, count(*) FROM bpm_instances GROUP BY state"))
    jobs = dict(poller.rows("SELECT state, count(*) FROM bpm_jobs GROUP BY state"))
    if states.get("completed", 0) != expected or sum(states.values()) != expected or jobs:
        raise BenchError(f"{what}: expected {expected} completed instances and no jobs; instances {states}, jobs {jobs}")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise BenchError("no values to take a percentile of")
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
