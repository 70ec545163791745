"""processes/welcome_emails.bpmn (seed 000, Go Async), with a real SMTP server.

The caller gets control back at the "Go async" point, before any mail is
sent, and what happens later is not in what ``start`` returned; then one
``welcome_email`` instance per address sends its mail in a job of its own, and
a refused address is reported on an asynchronous side path of its own while
the other addresses go on.
"""

# ruff: noqa: F811 - the fixtures are imported from helpers_a, and tests name them as arguments
from __future__ import annotations

from pathlib import Path

from bpmnlite import Engine
from tests.seeds.helpers_a import (  # noqa: F401 - fixtures are used by name
    PROCESSES,
    Cli,
    SeedWorkers,
    SmtpServer,
    pg_db,
    redis_db,
    smtp,
    wait_for,
    workers,
)

MODEL = PROCESSES / "welcome_emails.bpmn"
ADDRESSES = ["ada@example.com", "grace@example.com", "linus@example.invalid", "margaret@example.com"]


def passed(engine: Engine, instance_id: str) -> set[str]:
    return {a.element_id for a in engine.history(instance_id) if a.ended_at is not None}


def children_by_address(engine: Engine, parent_id: str) -> dict[str, str]:
    return {c.business_key or "": c.id for c in engine.instances(parent_instance_id=parent_id)}


def run_flow(engine: Engine, instance_id: str) -> None:
    """Run the jobs of one instance, one after the other, until it has none."""
    while jobs := engine.jobs(instance_id=instance_id):
        assert engine.execute_job(jobs[0].id) == "done"


def test_start_returns_at_the_go_async_point(engine: Engine, smtp: SmtpServer) -> None:
    engine.deploy(MODEL)

    started = engine.start("welcome_emails", {"subscribers": ADDRESSES, "smtp_port": smtp.port})

    # control is back with the caller at "Go async": the list is built, nothing is sent yet
    assert started.state == "waiting" and started.active_elements == ("go_async",)
    assert started.variables == {"subscribers": ADDRESSES, "smtp_port": smtp.port}
    assert engine.instances(parent_instance_id=started.id) == []
    assert smtp.mailbox.delivered == []

    engine.run_jobs()  # the worker's part

    parent = engine.instance(started.id)
    assert parent.state == "completed"
    children = engine.instances(parent_instance_id=started.id)
    assert sorted(c.business_key or "" for c in children) == sorted(ADDRESSES)  # one flow per address
    assert {c.process_key for c in children} == {"welcome_email"}
    assert all(c.state == "completed" for c in children)
    assert engine.count_instances() == {("welcome_emails", "completed"): 1, ("welcome_email", "completed"): 4}

    # the later outputs live in the instances; the value start() returned never had them
    by_address = {c.business_key: c for c in children}
    sent = {m.recipients[0]: m for m in smtp.mailbox.delivered}
    assert sorted(sent) == ["ada@example.com", "grace@example.com", "margaret@example.com"]
    for address, mail in sent.items():
        assert by_address[address].variables["message_id"] == mail.message_id
        assert mail.subject == f"Welcome aboard, {address}!"
        assert "welcomed" in passed(engine, by_address[address].id)
    refused = by_address["linus@example.invalid"]
    assert refused.variables["rejected"] == {
        "address": "linus@example.invalid", "code": 550,
        "reply": "5.1.1 <linus@example.invalid>: no such mailbox",
    }
    assert {"rejected", "report_rejection", "reported"} <= passed(engine, refused.id)
    assert "message_id" not in refused.variables
    assert "message_id" not in started.variables
    assert engine.incidents() == []


def test_a_refused_address_is_reported_asynchronously_while_the_others_go_on(
    engine: Engine, smtp: SmtpServer
) -> None:
    engine.deploy(MODEL)
    started = engine.start("welcome_emails", {"subscribers": ADDRESSES, "smtp_port": smtp.port})
    (go_async,) = engine.jobs(instance_id=started.id)
    assert engine.execute_job(go_async.id) == "done"
    children = children_by_address(engine, started.id)
    assert len(children) == 4
    assert set(engine.instance(started.id).active_elements) == {"send_each"}  # the call waits for its flows

    # the refused address first: its mail task ends in MAIL_REJECTED, caught by the boundary event,
    # and the report is a job of its own
    bad = children["linus@example.invalid"]
    (job,) = engine.jobs(instance_id=bad)
    assert engine.execute_job(job.id) == "done"
    waiting = engine.instance(bad)
    assert waiting.active_elements == ("report_rejection",)
    assert waiting.variables["rejectedRecipients"][0]["code"] == 550
    (report,) = engine.jobs(instance_id=bad)
    assert report.element_id == "report_rejection"

    # the other addresses go on, whatever happens to that report
    for address in ("ada@example.com", "grace@example.com", "margaret@example.com"):
        run_flow(engine, children[address])  # send (committed at once: asyncAfter), then finish
        assert engine.instance(children[address]).state == "completed"
    assert len(smtp.mailbox.delivered) == 3
    assert engine.instance(started.id).state == "waiting"  # the list waits for the last flow: the report

    assert engine.execute_job(report.id) == "done"
    assert engine.instance(bad).variables["rejected"]["address"] == "linus@example.invalid"
    # each completed flow hands back to the list in a job of its own (children never collide on the parent)
    engine.run_jobs()
    assert engine.instance(started.id).state == "completed"


def test_bpmnlite_run_and_instances(tmp_path: Path, smtp: SmtpServer) -> None:
    bpmnlite = Cli(f"sqlite:///{tmp_path / 'welcome.db'}")

    code, out = bpmnlite("run", MODEL, "--process", "welcome_emails", "--var", f"smtp_port={smtp.port}")

    assert code == 0, out
    assert "welcome_emails v1 (deployed)" in out and "go_async" in out
    assert "state:        completed" in out
    assert len(smtp.mailbox.delivered) == 3 and smtp.mailbox.refused == ["linus@example.invalid"]
    flows = bpmnlite.json("instances", "--key", "welcome_email")
    assert sorted(f["business_key"] for f in flows) == sorted(ADDRESSES)  # the model's own list
    code, summary = bpmnlite("instances", "--summary")
    assert code == 0
    assert [line.split() for line in summary.splitlines()[1:]] == [
        ["welcome_email", "completed", "4"], ["welcome_emails", "completed", "1"],
    ]

    # `start` returns at the async point; `run-jobs` is the worker's part
    code, out = bpmnlite("start", "welcome_emails", "--var", 'subscribers=["zoe@example.com"]',
                         "--var", f"smtp_port={smtp.port}")
    assert code == 0, out
    assert "state:        waiting" in out and "go_async" in out
    code, out = bpmnlite("run-jobs")
    assert code == 0 and out.strip() == "ran 4 job(s)"  # go async; send; finish the flow; hand back to the list
    assert smtp.mailbox.delivered[-1].recipients == ("zoe@example.com",)


def test_worker_processes_on_redis_and_postgresql(workers: SeedWorkers, pg_db: str, redis_db: str,
                                                  smtp: SmtpServer) -> None:
    engine = workers.engine()
    engine.deploy(MODEL)
    workers.start(processes=2, threads=4)
    subscribers = [f"reader{n}@example.com" for n in range(8)] + ["gone@example.invalid"]

    started = engine.start("welcome_emails", {"subscribers": subscribers, "smtp_port": smtp.port})

    assert started.active_elements == ("go_async",)
    wait_for(lambda: engine.instance(started.id).state == "completed", 60, "every address to be handled")
    children = engine.instances(parent_instance_id=started.id)
    assert sorted(c.business_key or "" for c in children) == sorted(subscribers)
    assert sorted(m.recipients[0] for m in smtp.mailbox.delivered) == sorted(subscribers[:-1])
    refused = next(c for c in children if c.business_key == "gone@example.invalid")
    assert refused.variables["rejected"]["code"] == 550
    assert engine.count_instances()[("welcome_email", "completed")] == 9
    assert engine.incidents() == []
    engine.close()
