"""Progress and feedback reported by a running handler are readable before its job commits."""

from __future__ import annotations

import threading
from typing import Any

from bpmnlite import Engine, TaskContext, hookimpl

from .bpmn import bpmn, chain


class Publisher:
    """Reports progress, then waits until the test has read it, then fails or finishes."""

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"publish-step": self.step, "publish-wait": self.wait}

    def step(self, ctx: TaskContext) -> None:
        ctx.progress(ctx.get("done", 0) + 1, 4, f"{ctx.element_id} done", key=f"publish:{ctx.get('project')}",
                     title="Publishing project")
        ctx.feedback(f"{ctx.element_id} ok", mode="append", key=f"publish:{ctx.get('project')}")
        ctx.set("done", ctx.get("done", 0) + 1)

    def wait(self, ctx: TaskContext) -> None:
        self.step(ctx)
        self.reported.set()
        assert self.release.wait(30), "the test never released the handler"


MODEL = bpmn(
    '<startEvent id="s"/>'
    '<serviceTask id="upload" bpmnlite:type="publish-step"/>'
    '<serviceTask id="index" bpmnlite:type="publish-step"/>'
    '<serviceTask id="notify" bpmnlite:type="publish-wait" bpmnlite:async="true"/>'
    '<endEvent id="e"/>' + chain("s", "upload", "index", "notify", "e")
)


def test_progress_visible_while_the_job_runs(db_url: str) -> None:
    publisher = Publisher()
    engine = Engine(db_url, plugins=[publisher], load_entry_points=False)
    engine.deploy(MODEL)
    inst = engine.start("p", {"project": "p1"})
    item = engine.progress("publish:p1")
    assert item is not None and (item.done, item.total, item.title) == (2, 4, "Publishing project")
    assert item.feedback == "upload ok\nindex ok"
    runner = threading.Thread(target=engine.run_jobs)
    runner.start()
    try:
        assert publisher.reported.wait(30)
        # the job's transaction is still open: its variables are not committed, its progress is visible
        assert engine.instance(inst.id).variables["done"] == 2
        during = engine.progress("publish:p1")
        assert during is not None and during.done == 3 and during.message == "notify done"
        assert during.feedback == "upload ok\nindex ok\nnotify ok"
    finally:
        publisher.release.set()
        runner.join(30)
    assert engine.instance(inst.id).state == "completed"
    assert [p.key for p in engine.progress_of(inst.id)] == ["publish:p1"]
    engine.close()


class Looper:
    """Works in small steps until told to stop."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"long-work": self.work}

    def work(self, ctx: TaskContext) -> None:
        self.started.set()
        try:
            for step in range(10_000):
                ctx.progress(step, 10_000, "working")  # raises TaskStopped once cancel() asks
                self.stopped.wait(0.01)
        finally:
            self.stopped.set()


def test_cancel_stops_a_running_task(db_url: str) -> None:
    looper = Looper()
    engine = Engine(db_url, plugins=[looper], load_entry_points=False)
    engine.deploy(bpmn('<startEvent id="s"/><serviceTask id="work" bpmnlite:type="long-work" bpmnlite:async="true"/>'
                       '<endEvent id="e"/>' + chain("s", "work", "e")))
    inst = engine.start("p")
    with engine.worker(threads=1):
        assert looper.started.wait(30)
        cancelled = engine.cancel(inst.id, timeout=30)
        assert looper.stopped.is_set()
    assert cancelled.state == "cancelled"
    assert engine.instance(inst.id).state == "cancelled"
    assert engine.jobs(instance_id=inst.id) == [] and engine.incidents() == []
    engine.close()
