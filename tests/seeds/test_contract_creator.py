"""processes/contract_creator.bpmn (seed 004, async tasks): start, limits, snapshot, feedback, status, stop.

``contract_manager`` (the application's screen) starts ``contract_creator``
tasks in the background and comes back at once. A task works through the
clients of one group with a copy of the group's template taken at start, and
appends a feedback line per contract that others read while it runs. At most
3 tasks run at once, at most 5 are unfinished (one more takes the queue-full
end), a task that runs too long is stopped and shows as timed out, and a
running task can be stopped.
"""

# ruff: noqa: F811 - the fixtures are imported from helpers_a, and tests name them as arguments
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from bpmnlite_seeds.contracts import progress_key, task_status

from bpmnlite import Engine
from tests.seeds.helpers_a import (  # noqa: F401 - fixtures are used by name
    PROCESSES,
    Cli,
    SeedWorkers,
    model_variant,
    pg_db,
    redis_db,
    wait_for,
    workers,
)

MODEL = PROCESSES / "contract_creator.bpmn"
# the same model with a one-second time limit, so a test can run into it quickly
SHORT_TIMEOUT = model_variant("contract_creator.bpmn", 'bpmnlite:timeout="PT30S"', 'bpmnlite:timeout="PT1S"')
GROUPS = {"gold": ["Ann", "Bob", "Cy"], "big": [f"client {n}" for n in range(100)]}
TEMPLATES = {"gold": "Gold contract ${number} for ${client} (v1)", "big": "Contract for ${client}"}


class Manager:
    """The application's contract manager screen: a ``contract_manager`` instance and its open task."""

    def __init__(self, engine: Engine, **variables: Any) -> None:
        self.engine = engine
        variables = {"groups": GROUPS, "templates": TEMPLATES, "contract_seconds": 0, **variables}
        self.id = engine.start("contract_manager", variables).id

    def act(self, action: str, **variables: Any) -> None:
        (screen,) = self.engine.tasks(instance_id=self.id)
        back = self.engine.complete_task(screen.id, {"action": action, **variables})
        assert back.active_elements == ("manage",)  # the screen is back at once

    def start_task(self, group: str, **variables: Any) -> str:
        """Press "start" for a group; returns the id of the new task."""
        before = {i.id for i in self.engine.instances(parent_instance_id=self.id)}
        self.act("start", group=group, **variables)
        (task,) = [i for i in self.engine.instances(parent_instance_id=self.id) if i.id not in before]
        return task.id


def feedback_lines(engine: Engine, task_id: str) -> list[str]:
    item = engine.progress(progress_key(task_id))
    return item.feedback.splitlines() if item is not None and item.feedback else []


def test_the_task_starts_in_the_background_with_a_snapshot_of_its_template(engine: Engine) -> None:
    engine.deploy(MODEL)
    manager = Manager(engine)

    first = manager.start_task("gold")  # returns at once: the task is queued, nothing is created yet
    assert task_status(engine, first) == "queued"
    assert engine.instance(first).variables == {
        "group": "gold", "clients": ["Ann", "Bob", "Cy"], "template": TEMPLATES["gold"], "contract_seconds": 0,
    }
    assert engine.instance(first).business_key == "gold"

    # someone edits the gold template while the first task waits in the queue
    manager.act("edit", templates={**TEMPLATES, "gold": "Gold contract ${number} for ${client} (v2)"})
    second = manager.start_task("gold")
    engine.run_jobs()

    assert [task_status(engine, t) for t in (first, second)] == ["done", "done"]
    assert [c["text"] for c in engine.instance(first).variables["contracts"]] == [
        "Gold contract 1 for Ann (v1)", "Gold contract 2 for Bob (v1)", "Gold contract 3 for Cy (v1)",
    ]
    assert {c["text"][-4:] for c in engine.instance(second).variables["contracts"]} == {"(v2)"}
    item = engine.progress(progress_key(first))
    assert item is not None and (item.done, item.total, item.status) == (3, 3, "done")
    assert feedback_lines(engine, first) == [
        "contract 1 for Ann created", "contract 2 for Bob created", "contract 3 for Cy created",
    ]
    assert engine.instance(manager.id).active_elements == ("manage",)  # the screen stayed usable
    (screen,) = engine.tasks(instance_id=manager.id)
    assert engine.complete_task(screen.id, {"action": "close"}).state == "completed"


def test_a_full_queue_takes_the_queue_full_outcome(engine: Engine) -> None:
    engine.deploy(MODEL)
    manager = Manager(engine)

    tasks = [manager.start_task("gold") for _ in range(6)]
    # a background task starts in a job of its own; a worker takes those starts in order
    for task in tasks:
        (start,) = engine.jobs(instance_id=task)
        assert engine.execute_job(start.id) == "done"
    queued, refused = tasks[:5], tasks[5]

    assert [engine.instance(t).active_elements for t in queued] == [("create",)] * 5
    assert [task_status(engine, t) for t in queued] == ["queued"] * 5
    assert task_status(engine, refused) == "queue-full"
    assert engine.instance(refused).state == "completed"
    assert [a.element_id for a in engine.history(refused)][-2:] == ["queue_is_full", "queue_full"]
    engine.run_jobs()
    assert [task_status(engine, t) for t in queued] == ["done"] * 5
    again = manager.start_task("gold")
    engine.run_jobs()
    assert task_status(engine, again) == "done"  # room again


@pytest.fixture
def live(db_url: str) -> Iterator[Engine]:
    """An engine with the real clock, for tests with an in-process worker."""
    engine = Engine(db_url)
    yield engine
    engine.close()


def test_feedback_while_it_runs_then_stop(live: Engine) -> None:
    live.deploy(MODEL)
    manager = Manager(live, contract_seconds=0.05)
    with live.worker(threads=2):
        task = manager.start_task("big")  # 100 contracts, 5 seconds of work
        wait_for(lambda: len(feedback_lines(live, task)) >= 3, 30, "three contracts")

        # read while it runs: the progress and the feedback, not yet the committed result
        assert task_status(live, task) == "running"
        item = live.progress(progress_key(task))
        assert item is not None and item.total == 100 and 3 <= item.done < 100 and item.status == "running"
        lines = feedback_lines(live, task)
        assert lines[:3] == ["contract 1 for client 0 created", "contract 2 for client 1 created",
                             "contract 3 for client 2 created"]
        assert "contracts" not in live.instance(task).variables

        stopped = live.cancel(task, timeout=30)  # the handler notices between two contracts

    assert stopped.state == "cancelled" and task_status(live, task) == "stopped"
    assert live.jobs(instance_id=task) == [] and live.incidents() == []
    left = feedback_lines(live, task)
    assert 3 <= len(left) < 100  # what it did before it stopped stays readable
    assert live.instance(manager.id).active_elements == ("manage",)  # the manager is not affected


# Five contracts of a second each against a one-second limit. Seconds, not a tight loop: a limit
# that strikes while the handler writes its progress to PostgreSQL is recorded as a plain
# failure, not as a timeout (an engine bug, reported); long contracts make that moment rare.
SLOW_TASK = {"group": "slow", "clients": ["Ann", "Bob", "Cy", "Dee", "Eve"], "template": "${client}",
             "contract_seconds": 1.0}


def test_a_task_that_runs_too_long_is_timed_out(live: Engine) -> None:
    live.deploy(SHORT_TIMEOUT)
    task = live.start("contract_creator", SLOW_TASK).id
    with live.worker(threads=1):
        wait_for(lambda: task_status(live, task) != "queued", 30, "the task to start")
        wait_for(lambda: task_status(live, task) == "timed-out", 30, "the task to time out")
    (incident,) = live.incidents(instance_id=task)
    assert "timed out" in (incident.error_message or "") and incident.attempts == 1
    item = live.progress(progress_key(task))
    assert item is not None and item.total == 5 and item.done < 5  # it had started; the limit stopped it
    assert "contracts" not in live.instance(task).variables  # its transaction rolled back
    assert live.instance(task).active_elements == ("create",)  # an operator may retry it


def peak(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    running = top = 0
    for _, step in events:
        running += step
        top = max(top, running)
    return top


def run_times(engine: Engine, task_ids: list[str]) -> list[tuple[datetime, datetime]]:
    out = []
    for task in task_ids:
        v = engine.instance(task).variables
        out.append((datetime.fromisoformat(v["started_at"]), datetime.fromisoformat(v["finished_at"])))
    return out


def test_at_most_three_run_at_once(pg_db: str) -> None:
    """PostgreSQL: jobs really run side by side (on SQLite one writer at a time runs them one by one)."""
    engine = Engine(pg_db)
    engine.deploy(MODEL)
    manager = Manager(engine, contract_seconds=0.2)
    # all five are due before any worker runs: only the limit can keep them from running side by side
    # (started one by one while workers run, a slow start could let the first end before the third began)
    tasks = [manager.start_task("gold") for _ in range(5)]  # 0.6 s of work each
    with engine.worker(threads=6):
        wait_for(lambda: all(task_status(engine, t) == "done" for t in tasks), 60, "five tasks")
    assert peak(run_times(engine, tasks)) == 3
    engine.close()


def test_bpmnlite_run(tmp_path: Path) -> None:
    bpmnlite = Cli(f"sqlite:///{tmp_path / 'contracts.db'}")

    code, out = bpmnlite("run", MODEL, "--process", "contract_manager")
    assert code == 0, out
    assert "state:        waiting" in out and "Contract manager" in out
    (screen,) = bpmnlite.json("tasks")
    code, out = bpmnlite("complete", screen["id"], "--var", "action=start", "--var", "group=premium",
                         "--var", "contract_seconds=0")
    assert code == 0, out
    assert "contract_creator" in out  # the started task is listed under the manager
    code, out = bpmnlite("run-jobs")
    assert code == 0 and out.strip() == "ran 2 job(s)"  # the task's start, then its contracts
    (task,) = bpmnlite.json("instances", "--key", "contract_creator")
    assert task["state"] == "completed" and task["business_key"] == "premium"
    assert len(task["variables"]["contracts"]) == 3

    # the task on its own, with its input given on the command line
    code, out = bpmnlite("run", MODEL, "--process", "contract_creator", "--var", "group=solo",
                         "--var", 'clients=["Zed"]', "--var", "template=Hello ${client}",
                         "--var", "contract_seconds=0")
    assert code == 0, out
    assert "Hello Zed" in out and "state:        completed" in out


def test_worker_processes_on_redis_and_postgresql(workers: SeedWorkers, pg_db: str, redis_db: str) -> None:
    engine = workers.engine()
    engine.deploy(MODEL)
    workers.start(processes=2, threads=3)
    manager = Manager(engine, contract_seconds=0.2)

    tasks = [manager.start_task("gold") for _ in range(5)]
    wait_for(lambda: all(task_status(engine, t) == "done" for t in tasks), 60, "five tasks")
    assert peak(run_times(engine, tasks)) <= 3  # six worker threads, three slots

    # stop a running task from this process: the worker's handler sees the request in the database
    long = manager.start_task("big", contract_seconds=0.05)
    wait_for(lambda: len(feedback_lines(engine, long)) >= 2, 30, "the long task to report")
    assert engine.cancel(long, timeout=30).state == "cancelled"
    assert task_status(engine, long) == "stopped" and 2 <= len(feedback_lines(engine, long)) < 100

    # the worker's time limit (a new version with a one-second limit)
    engine.deploy(SHORT_TIMEOUT)
    slow = engine.start("contract_creator", SLOW_TASK).id
    wait_for(lambda: task_status(engine, slow) not in ("queued", "running"), 30, "the task to end")
    assert task_status(engine, slow) == "timed-out"
    assert "timed out" in (engine.incidents(instance_id=slow)[0].error_message or "")
    engine.close()
