"""Concurrent commands on one instance: optimistic locking and a join that fires exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bpmnlite import Conflict, Engine

from .bpmn import bpmn, flow

JOIN = bpmn(
    """
    <startEvent id="s"/><parallelGateway id="fork"/>
    <userTask id="a"/><userTask id="b"/>
    <parallelGateway id="join"/>
    <scriptTask id="after_join"><script>fired = fired + 1</script></scriptTask>
    <endEvent id="e"/>
    """
    + flow("s", "fork") + flow("fork", "a") + flow("fork", "b") + flow("a", "join") + flow("b", "join")
    + flow("join", "after_join") + flow("after_join", "e")
)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    from .conftest import _truncate

    _truncate(pg_url)
    eng = Engine(pg_url)
    yield eng
    eng.close()


def _complete_until_done(engine: Engine, task_id: str, barrier: threading.Barrier, conflicts: list[int]) -> None:
    barrier.wait(timeout=30)
    while True:
        try:
            engine.complete_task(task_id, {f"done_{task_id}": True})
            return
        except Conflict:
            conflicts.append(1)  # the other thread won the race: reload and try again, as a caller would


def test_parallel_join_fires_once_under_concurrent_completion(pg_engine: Engine) -> None:
    pg_engine.deploy(JOIN)
    conflicts: list[int] = []
    for _ in range(100):
        inst = pg_engine.start("p", {"fired": 0})
        tasks = pg_engine.tasks(instance_id=inst.id)
        assert len(tasks) == 2
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(task_id: str, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors) -> None:
            try:
                _complete_until_done(pg_engine, task_id, barrier, conflicts)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(t.id,)) for t in tasks]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not errors, errors
        final = pg_engine.instance(inst.id)
        assert final.state == "completed"
        assert final.variables["fired"] == 1
        visited = [a.element_id for a in pg_engine.history(inst.id)]
        assert visited.count("after_join") == 1
        assert visited.count("e") == 1
    # the race really happened: some completions lost the optimistic check
    assert conflicts, "no conflict in 100 races: the test did not exercise concurrency"


def test_completing_a_completed_task_is_refused(db_url: str) -> None:
    """Two engines (two processes, in effect) completing the same task: the second is told it is gone."""
    first = Engine(db_url)
    second = Engine(db_url)
    first.deploy(JOIN)
    inst = first.start("p", {"fired": 0})
    task = first.tasks(instance_id=inst.id)[0]
    first.complete_task(task.id)
    with pytest.raises(Exception) as err:
        second.complete_task(task.id)
    assert "no open user task" in str(err.value)
    first.close()
    second.close()
