"""Seed 002, async jobs: processes/publish_project.bpmn and processes/publish_cleanup.bpmn.

The launcher returns at once and starts the worker workflow in the background
with only its input (scope); the worker's steps advance one progress item;
a provider refusal leaves by the error port (logged for operators, neutral
for the user); a provider timeout is a technical failure (retries, then an
incident whose detail only operators see); the hourly clean-up is idempotent.
Runs on SQLite and PostgreSQL, through the CLI, and with real workers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bpmnlite import Engine

from .helpers_b import (
    PROCESSES,
    RealWorkers,
    cli,
    only_child,
    publish_dir_fixture,  # noqa: F401  (the fixture publish_dir)
    real_workers_fixture,  # noqa: F401  (the fixture real_workers)
)

PUBLISH = PROCESSES / "publish_project.bpmn"
CLEANUP = PROCESSES / "publish_cleanup.bpmn"
RAW_BITS = ("422", "acct_93b1f2", "prod-eu-sites-0042", "E_POLICY_FILETYPE")


def _launch(engine: Engine, project: str, files: list[str], **extra: Any) -> tuple[Any, Any]:
    """Start the launcher; returns (launcher, worker child)."""
    launcher = engine.start("publish_project", {"project": project, "files": files, **extra})
    assert launcher.state == "completed"
    return launcher, only_child(engine, launcher.id, "publish_worker")


def _job(engine: Engine, instance_id: str) -> Any:
    (job,) = engine.jobs(instance_id=instance_id)
    return job


def _step(engine: Engine, instance_id: str) -> str:
    """Run the one pending job of an instance; returns the element it was at."""
    job = _job(engine, instance_id)
    assert engine.execute_job(job.id) == "done"
    return str(job.element_id)


def test_launcher_returns_at_once_and_the_worker_advances_one_progress_item(engine: Engine, publish_dir: Path) -> None:
    engine.deploy(PUBLISH)
    launcher, worker = _launch(engine, "demo", ["index.html", "logo.png"], sessionToken="s3cr3t")
    # the launcher is done; the user has been told, and the work has not run yet
    assert launcher.active_elements == ()
    assert launcher.variables["userMessage"].startswith("Publishing of 'demo' has started")
    # scope: the worker starts with its input as its own variables, and nothing else of the launcher's
    assert worker.state == "waiting" and worker.active_elements == ("job_started",)
    assert worker.variables == {"project": "demo", "files": ["index.html", "logo.png"]}
    item = engine.progress("publish:demo")
    assert item is not None and (item.title, item.done, item.total, item.status) == ("Publishing project", 0, 4,
                                                                                      "queued")

    seen = []
    for _ in range(3):  # async start, upload, update_index: each a job, each advancing the same item
        element = _step(engine, worker.id)
        item = engine.progress("publish:demo")
        assert item is not None
        seen.append((element, item.done, item.status, item.message))
    assert seen == [
        ("job_started", 1, "running", "Files prepared"),
        ("upload", 2, "running", "Files uploaded"),
        ("update_index", 4, "done", "Finished"),  # update_index (3) and finish (4) run in one job
    ]
    assert item.feedback == "uploaded 2 file(s)"

    done = engine.instance(worker.id)
    assert done.state == "completed"
    # shared context: what the embedded sub-process wrote is the worker's own variables, read by finish
    assert done.variables["uploadId"].startswith(worker.id)
    assert done.variables["publishedUrl"] == "https://sites.example.org/demo/"
    assert done.variables["userMessage"] == "'demo' is published at https://sites.example.org/demo/"
    assert "sessionToken" not in done.variables
    assert [a.element_id for a in engine.history(worker.id) if a.element_id == "published"] == ["published"]
    site = json.loads((publish_dir / "site" / "demo.json").read_text())
    assert site["files"] == ["index.html", "logo.png"]
    assert json.loads((publish_dir / "site" / "index.json").read_text()) == {"projects": ["demo"]}
    assert json.loads((publish_dir / "staging" / "demo" / "manifest.json").read_text())["state"] == "published"
    assert engine.incidents() == []


def test_invalid_input_is_refused_without_starting_the_worker(engine: Engine, publish_dir: Path) -> None:
    engine.deploy(PUBLISH)
    for variables in ({"project": "Not a slug!"}, {"project": "ok-name", "files": ["../etc/passwd"]}, {}):
        launcher = engine.start("publish_project", variables)
        assert launcher.state == "completed" and launcher.variables["valid"] is False
        assert launcher.variables["userMessage"].startswith("Nothing was published: ")
        assert "refused" in [a.element_id for a in engine.history(launcher.id)]
        assert engine.instances(parent_instance_id=launcher.id) == []
    assert engine.jobs() == [] and not publish_dir.exists()


def test_a_provider_refusal_leaves_by_the_error_port(engine: Engine, publish_dir: Path) -> None:
    engine.deploy(PUBLISH)
    _launcher, worker = _launch(engine, "tool", ["readme.txt", "setup.exe"])
    engine.run_jobs()

    done = engine.instance(worker.id)
    assert done.state == "completed" and engine.incidents() == []
    path = [a.element_id for a in engine.history(worker.id)]
    assert path[-4:] == ["provider_error", "log_provider_error", "notify_failed", "not_published"]
    assert "finish" not in path and "update_index" not in path
    ref = done.variables["errorRef"]
    assert ref == f"PUB-{worker.id[:8].upper()}" and done.variables["errorCode"] == "ProviderRejected"
    # the user sees a neutral notice, on the instance and on the progress item; no provider text anywhere
    notice = f"We could not publish your project. Our team has been notified (reference {ref})."
    assert done.variables["userMessage"] == notice and done.variables["providerError"] is None
    item = engine.progress("publish:tool")
    assert item is not None and (item.status, item.done, item.message) == ("failed", 1, notice)
    user_facing = json.dumps(done.variables) + json.dumps([item.message, item.feedback])
    assert not [bit for bit in RAW_BITS if bit in user_facing]
    # operators have the raw answer: in operators.log under the same reference, and in the variable history
    (entry,) = [json.loads(line) for line in (publish_dir / "operators.log").read_text().splitlines()]
    assert entry["ref"] == ref and entry["instance"] == worker.id
    assert all(bit in entry["provider_error"] for bit in RAW_BITS)
    raw = [c.value for c in engine.variable_history(worker.id) if c.name == "providerError"]
    assert raw[0].startswith("HTTP 422: ") and raw[-1] is None
    assert json.loads((publish_dir / "staging" / "tool" / "manifest.json").read_text())["state"] == "failed"
    assert not (publish_dir / "site" / "tool.json").exists()


def test_a_provider_timeout_is_retried_then_an_incident_for_operators(engine: Engine, publish_dir: Path,
                                                                      clock: Any) -> None:
    engine.deploy(PUBLISH)
    _launcher, worker = _launch(engine, "big", ["disk.iso"])
    engine.run_jobs()  # the start job runs, the upload fails once
    job = _job(engine, worker.id)
    assert (job.element_id, job.state, job.attempts, job.retries) == ("upload", "executable", 1, 2)
    assert job.error_message == "step 'upload' failed"  # neutral: no host, no provider text
    assert "TimeoutError" in job.error_detail and "upload.cdn-7.hosting.example:8443" in job.error_detail
    assert engine.run_jobs() == 0  # the retry waits for its back-off (PT10S)
    for _ in range(2):
        clock.advance(seconds=10)
        assert engine.run_jobs() == 1
    (incident,) = engine.incidents(instance_id=worker.id)
    assert incident.attempts == 3 and incident.error_message == "step 'upload' failed"
    # the instance stays where it was, at its last wait state, for an operator to retry
    info = engine.instance(worker.id)
    assert info.state == "waiting" and info.active_elements == ("upload",) and "userMessage" not in info.variables
    item = engine.progress("publish:big")
    assert item is not None and (item.done, item.status) == (1, "running")
    assert "cdn-7" not in (item.message or "")


def test_the_hourly_cleanup_is_idempotent(engine: Engine, publish_dir: Path, clock: Any) -> None:
    engine.deploy(PUBLISH)
    engine.deploy(CLEANUP)
    (timer,) = engine.jobs(kind="start-timer")
    assert timer.element_id == "every_hour" and timer.due_at == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    _launch(engine, "demo", ["index.html"])
    _launch(engine, "tool", ["setup.exe"])
    _launch(engine, "big", ["disk.iso"])  # its upload keeps failing: still in progress
    engine.run_jobs()
    assert sorted(p.name for p in (publish_dir / "staging").iterdir()) == ["big", "demo", "tool"]

    runs: list[Any] = []
    for hour in (13, 14):
        clock.now = datetime(2026, 1, 1, hour, 0, tzinfo=UTC)
        assert engine.fire_due_timers() == 1
        (run,) = [i for i in engine.instances(process_key="publish_cleanup") if i.id not in {r.id for r in runs}]
        assert run.state == "completed"
        assert [a.element_id for a in engine.history(run.id)][0] == "every_hour"
        runs.append(run)
    first, second = (r.variables for r in runs)
    assert first == {"removed": ["demo", "tool"], "kept": ["big"],
                     "summary": "removed 2 staging folder(s), kept 1 in progress"}
    assert second == {"removed": [], "kept": ["big"], "summary": "removed 0 staging folder(s), kept 1 in progress"}
    assert sorted(p.name for p in (publish_dir / "staging").iterdir()) == ["big"]
    # the published site is not the clean-up's business
    assert sorted(p.name for p in (publish_dir / "site").iterdir()) == ["demo.json", "index.json"]
    (timer,) = engine.jobs(kind="start-timer")
    assert timer.due_at == datetime(2026, 1, 1, 15, 0, tzinfo=UTC)  # the cycle goes on


def test_cli_runs_the_example_and_the_cleanup(db_url: str, publish_dir: Path, capsys: Any) -> None:
    code, out, err = cli(capsys, "--db", db_url, "run", str(PUBLISH), "--process", "publish_project",
                         "--var", "project=demo", "--var", 'files=["index.html","about.html"]')
    assert code == 0, err
    assert "publish_project v1 (deployed)" in out and "state:        completed" in out
    assert "Publishing of 'demo' has started." in out
    assert "running jobs... 3 done" in err  # the worker's three jobs ran after the launcher had returned
    code, out, err = cli(capsys, "--db", db_url, "--json", "instances", "--key", "publish_worker")
    (worker,) = json.loads(out)
    assert code == 0 and worker["state"] == "completed"
    assert worker["variables"]["publishedUrl"] == "https://sites.example.org/demo/"

    code, out, err = cli(capsys, "--db", db_url, "--json", "run", str(CLEANUP))
    assert code == 0, err
    assert json.loads(out)["variables"]["removed"] == ["demo"]
    code, out, err = cli(capsys, "--db", db_url, "--json", "run", str(CLEANUP))
    assert code == 0 and json.loads(out)["variables"]["removed"] == []

    code, out, err = cli(capsys, "--db", db_url, "run", str(PUBLISH))
    assert code == 2 and "choose one with --process KEY" in err


def test_real_workers_on_redis_and_postgresql(real_workers: RealWorkers, publish_dir: Path) -> None:
    engine = real_workers.engine()
    try:
        engine.deploy(PUBLISH)
        real_workers.start_one(threads=4)  # inherits BPMNLITE_PUBLISH_DIR
        ok, ok_worker = _launch(engine, "demo", ["index.html", "about.html", "logo.png"])
        bad, bad_worker = _launch(engine, "tool", ["setup.exe"])
        assert ok.variables["userMessage"].startswith("Publishing of 'demo' has started")
        for worker in (ok_worker, bad_worker):
            engine.handle(worker.id).wait(timeout=90)
        demo = engine.progress("publish:demo")
        assert demo is not None and (demo.done, demo.total, demo.status) == (4, 4, "done")
        tool = engine.progress("publish:tool")
        assert tool is not None and tool.status == "failed" and "reference PUB-" in (tool.message or "")
        assert engine.instance(ok_worker.id).variables["publishedUrl"] == "https://sites.example.org/demo/"
        failed = engine.instance(bad_worker.id).variables
        assert failed["providerError"] is None and not [b for b in RAW_BITS if b in json.dumps(failed)]
        assert "acct_93b1f2" in (publish_dir / "operators.log").read_text()
        assert engine.incidents() == [] and engine.jobs() == []
    finally:
        engine.close()
