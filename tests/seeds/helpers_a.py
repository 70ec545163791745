"""Helpers of the example tests for seeds 000, 001 and 004 (welcome, pizza, contracts).

A real SMTP server (aiosmtpd, in a thread of the test, with the examples'
``DemoMailbox``), real ``bpmnlite worker`` processes on Redis (database 11)
and PostgreSQL, and the command line run in-process through ``bpmnlite.cli.main``.
Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from bpmnlite_seeds.welcome import DemoMailbox

from bpmnlite import Engine, cli
from tests.conftest import _truncate, need_redis
from tests.jobs.test_workers import Workers, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "processes"
REDIS_URL = os.environ.get("BPMNLITE_TEST_REDIS_SEEDS", "redis://127.0.0.1:6379/11")

__all__ = ["PROCESSES", "Cli", "SeedWorkers", "SmtpServer", "model_variant", "pg_db", "redis_db", "smtp",
           "wait_for", "workers"]


class SmtpServer(Controller):
    """aiosmtpd on 127.0.0.1 and a port the OS picks, handing mail to a quiet ``DemoMailbox``."""

    def __init__(self) -> None:
        self.mailbox = DemoMailbox(quiet=True)
        super().__init__(self.mailbox, hostname="127.0.0.1", port=0)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]  # the real port, before the first connection
        super()._trigger_server()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_db() -> str:
    """Redis database 11, checked (each test's workers use a queue of their own: nothing to empty)."""
    need_redis(REDIS_URL)
    return REDIS_URL


@pytest.fixture
def pg_db(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied."""
    _truncate(pg_url)
    return pg_url


class SeedWorkers(Workers):
    """``bpmnlite worker`` processes on a Dramatiq queue of this test's own, logging to a file.

    Nothing else consuming Redis database 11 can take this test's messages,
    and a worker never blocks on a full stderr pipe nobody reads.
    """

    def __init__(self, db_url: str, broker_url: str, log: Path) -> None:
        super().__init__(db_url, broker_url)
        self.queue = f"seeds-a-{uuid.uuid4().hex[:8]}"
        self.log = log

    def start(self, *extra: str, processes: int = 1, threads: int = 4) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "bpmnlite.cli", "--db", self.db_url, "worker", "--broker", self.broker_url,
               "--queue", self.queue, "--processes", str(processes), "--threads", str(threads),
               "--interval", "0.2", *extra]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def engine(self) -> Engine:
        """An engine that sends its jobs to these workers."""
        return Engine(self.db_url, broker_url=self.broker_url, queue=self.queue)


@pytest.fixture
def workers(pg_db: str, redis_db: str, tmp_path: Path) -> Iterator[SeedWorkers]:
    """Starts ``bpmnlite worker`` processes on PostgreSQL and Redis; stops them (by pid) at the end.

    The workers' log is printed when the test fails (pytest shows captured output).
    """
    w = SeedWorkers(pg_db, redis_db, tmp_path / "workers.log")
    try:
        yield w
    finally:
        w.stop_all()
        if w.log.exists():
            print(w.log.read_text(errors="replace")[-20_000:])


def model_variant(name: str, old: str, new: str) -> str:
    """The text of ``processes/<name>`` with one exact change (e.g. the async flag removed)."""
    text = (PROCESSES / name).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} should occur exactly once in {name}"
    return text.replace(old, new)


class Cli:
    """Runs ``bpmnlite --db URL ...`` in this process; returns the exit code and what it printed."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    def __call__(self, *args: Any) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["--db", self.db_url, *[str(a) for a in args]])
        return code, out.getvalue()

    def json(self, *args: Any) -> Any:
        code, text = self("--json", *args)
        assert code == 0, text
        return json.loads(text)
