"""Shared helpers of the seed tests for publish_project (002) and api_result_later (003).

Fixtures defined here are imported into the test modules that use them
(``from .helpers_b import publish_dir_fixture``; pytest knows it as
``publish_dir``); ``tests/conftest.py`` provides
``engine`` (SQLite and PostgreSQL), ``db_url``, ``clock`` and ``pg_url``.
The worker fixtures start real ``bpmnlite worker`` processes on Redis (db 10)
and PostgreSQL, with the installed seeds plugin found through its entry point.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpmnlite import Engine
from bpmnlite.cli import main
from bpmnlite.records import InstanceInfo

from ..conftest import _truncate, need_redis
from ..jobs.test_workers import Workers, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "processes"
REDIS_URL = os.environ.get("BPMNLITE_SEEDS_REDIS", "redis://127.0.0.1:6379/10")

__all__ = ["PROCESSES", "REDIS_URL", "ROOT", "RealWorkers", "Workers", "children", "cli", "only_child",
           "publish_dir_fixture", "real_workers_fixture", "wait_for"]


def children(engine: Engine, parent_id: str, process_key: str | None = None) -> list[InstanceInfo]:
    """Instances started by ``parent_id`` (call activities, background ones too), optionally of one process."""
    found = engine.instances(parent_instance_id=parent_id)
    return [c for c in found if process_key is None or c.process_key == process_key]


def only_child(engine: Engine, parent_id: str, process_key: str) -> InstanceInfo:
    found = children(engine, parent_id, process_key)
    assert len(found) == 1, f"expected one {process_key} child of {parent_id}, found {found}"
    return found[0]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``bpmnlite`` in this process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(name="publish_dir")
def publish_dir_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The publish example's data folder, fresh for each test (``$BPMNLITE_PUBLISH_DIR``)."""
    path = tmp_path / "publish-data"
    monkeypatch.setenv("BPMNLITE_PUBLISH_DIR", str(path))
    return path


class RealWorkers(Workers):
    """``bpmnlite worker`` processes on PostgreSQL and Redis db 10, on a queue of this test's own."""

    def __init__(self, db_url: str, broker_url: str) -> None:
        super().__init__(db_url, broker_url)
        self.queue = f"seeds-b-{uuid.uuid4().hex[:8]}"

    def engine(self) -> Engine:
        """An engine in the test process that sends its jobs to these workers."""
        return Engine(self.db_url, broker_url=self.broker_url, queue=self.queue)

    def start_one(self, threads: int = 4) -> None:
        self.start("--queue", self.queue, threads=threads)


@pytest.fixture(name="real_workers")
def real_workers_fixture(pg_url: str) -> Iterator[RealWorkers]:
    """Workers to start; stopped (SIGTERM, by pid) after the test (on a Dramatiq queue of their own)."""
    need_redis(REDIS_URL)
    _truncate(pg_url)
    workers = RealWorkers(pg_url, REDIS_URL)
    try:
        yield workers
    finally:
        workers.stop_all()
        for proc in workers.procs:
            if proc.returncode not in (0, None) and proc.stderr is not None:
                print(proc.stderr.read().decode(errors="replace")[-3000:])
