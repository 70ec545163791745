"""Task types of the contract example (``processes/contract_creator.bpmn``, seed 004: async tasks).

* ``contracts.load_groups`` — the contract manager's data: ``groups`` (group
  name to the list of its clients) and ``templates`` (group name to the
  contract template), each kept when given, else example data.
* ``contracts.create`` — the background task: one contract per client of
  ``clients``, rendered from ``template`` (``${client}``, ``${group}`` and
  ``${number}`` are filled in). After each contract it appends a line to the
  task's feedback and advances its progress, both readable while it runs
  (``engine.progress(progress_key(instance_id))``). It works in small steps and
  stops as soon as the instance is cancelled. ``contract_seconds`` is how long
  one contract takes (default 0.5 s: a document takes time to produce).

:func:`task_status` tells where a task is: queued, running, done, queue-full,
timed-out, failed or stopped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bpmnlite import BpmnliteError, TaskContext
from bpmnlite.expressions import render_template

if TYPE_CHECKING:
    from bpmnlite import Engine

DEFAULT_CONTRACT_SECONDS = 0.5
DEMO_GROUPS: dict[str, list[str]] = {
    "standard": ["Acme BV", "Globex", "Initech", "Umbrella"],
    "premium": ["Stark Industries", "Wayne Enterprises", "Tyrell Corporation"],
}
DEMO_TEMPLATES: dict[str, str] = {
    "standard": "Contract ${number} (standard terms) between Contract Creator Ltd and ${client}.",
    "premium": "Contract ${number} (premium terms, 24/7 support) between Contract Creator Ltd and ${client}.",
}


def progress_key(instance_id: str) -> str:
    """The progress item of the contract task ``instance_id`` (progress, status and feedback)."""
    return f"contracts:{instance_id}"


def load_groups(ctx: TaskContext) -> None:
    """Keep ``groups`` and ``templates`` when given, else use the example data; every group needs a template."""
    groups = ctx.get("groups")
    templates = ctx.get("templates")
    if groups is None:
        groups = {name: list(clients) for name, clients in DEMO_GROUPS.items()}
        ctx.set("groups", groups)
    if templates is None:
        templates = dict(DEMO_TEMPLATES)
        ctx.set("templates", templates)
    missing = sorted(set(groups) - set(templates))
    if missing:
        raise BpmnliteError(f"no contract template for the group(s) {', '.join(missing)}")


def create(ctx: TaskContext) -> list[dict[str, Any]]:
    """Create one contract per client; sets ``contracts`` (a list of ``{client, text}``),
    ``started_at`` and ``finished_at`` (ISO 8601, UTC)."""
    group = str(ctx.get("group", ""))
    clients = list(ctx.get("clients") or [])
    template = ctx.get("template")
    if not isinstance(template, str) or not template.strip():
        raise BpmnliteError("the contract task needs its template in the variable 'template'")
    seconds = float(ctx.get("contract_seconds", DEFAULT_CONTRACT_SECONDS))
    started_at = _now()
    key = progress_key(ctx.instance_id)
    total = len(clients)
    ctx.progress(0, total, "started", key=key, title=f"Contracts for the group {group}", status="running")
    contracts: list[dict[str, Any]] = []
    for number, client in enumerate(clients, 1):
        _work(ctx, seconds)
        text = render_template(template, {"client": client, "group": group, "number": number})
        contracts.append({"client": client, "text": text})
        ctx.progress(number, total, f"{number} of {total} contracts created", key=key)
        ctx.feedback(f"contract {number} for {client} created", mode="append", key=key)
    ctx.progress(total, total, "all contracts created", key=key, status="done")
    ctx.set("contracts", contracts)
    ctx.set("started_at", started_at)
    ctx.set("finished_at", _now())
    return contracts


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _work(ctx: TaskContext, seconds: float) -> None:
    """Produce one document: takes ``seconds``, in small steps that notice a stop request."""
    deadline = time.monotonic() + seconds
    while True:
        ctx.check_stop()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def task_status(engine: Engine, instance_id: str) -> str:
    """Where a contract task is, as its manager screen would show it.

    ``queued`` (its job waits for a worker or for a free slot), ``running``,
    ``done``, ``queue-full`` (refused at start: too many tasks waiting),
    ``timed-out`` (ran past ``bpmnlite:timeout``), ``failed`` (an incident
    for another reason) or ``stopped`` (cancelled).
    """
    info = engine.instance(instance_id)
    if info.state == "cancelled":
        return "stopped"
    if info.state == "completed":
        passed = {a.element_id for a in engine.history(instance_id)}
        return "queue-full" if "queue_full" in passed else "done"
    if info.state == "failed":
        return "failed"
    jobs = engine.jobs(instance_id=instance_id)
    for job in jobs:
        if job.state == "deadletter":
            return "timed-out" if "timed out" in (job.error_detail or "") else "failed"
    if any(job.lock_owner for job in jobs):
        return "running"
    return "queued"


TASK_TYPES: dict[str, Any] = {
    "contracts.load_groups": load_groups,
    "contracts.create": create,
}
