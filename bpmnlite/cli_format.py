"""Text and JSON rendering for the command line: tables, times, paths and wait states.

Pure functions over the engine's records, so the command module only decides
what to show, and tests can read the output without a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from typing import Any

from bpmnlite.errors import Problem
from bpmnlite.records import ActivityInfo, InstanceInfo, JobInfo, TaskInfo


@dataclass(frozen=True, slots=True)
class Subscription:
    """A message or signal an instance waits for."""

    kind: str
    name: str
    element_id: str
    business_key: str | None = None


@dataclass(slots=True)
class Waits:
    """Everything an instance waits for, including the instances it called."""

    tasks: list[TaskInfo] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    jobs: list[JobInfo] = field(default_factory=list)
    incidents: list[JobInfo] = field(default_factory=list)
    children: list[tuple[InstanceInfo, Waits]] = field(default_factory=list)

    def has_failures(self) -> bool:
        """An incident, or a job that failed and waits for its next attempt, here or in a called instance."""
        failed = bool(self.incidents) or any(job.attempts for job in self.jobs)
        return failed or any(w.has_failures() for _, w in self.children)


# ------------------------------------------------------------------ JSON
def to_jsonable(value: Any) -> Any:
    """Records, tuples and datetimes as plain JSON values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, default=str)


def waits_json(waits: Waits) -> dict[str, Any]:
    return {
        "tasks": to_jsonable(waits.tasks),
        "subscriptions": to_jsonable(waits.subscriptions),
        "jobs": to_jsonable(waits.jobs),
        "incidents": to_jsonable(waits.incidents),
        "called_instances": [
            {"instance": to_jsonable(child), "waits": waits_json(w)} for child, w in waits.children
        ],
    }


def path_json(history: Sequence[ActivityInfo]) -> list[dict[str, Any]]:
    return [{**to_jsonable(a), "duration": a.duration} for a in history]


# ------------------------------------------------------------------ text
def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "(open)"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, indent: str = "") -> str:
    """Left-aligned columns; an empty listing says so instead of printing bare headers."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    if not cells:
        return f"{indent}(none)"
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def problem_line(problem: Problem, source: str | None = None) -> str:
    """``FILE:LINE: element 'X': message``, leaving out what is unknown."""
    where = source or problem.source or "model"
    if problem.line:
        where += f":{problem.line}"
    element = f" element '{problem.element_id}':" if problem.element_id else ""
    return f"{where}:{element} {problem.message}"


def path_table(history: Sequence[ActivityInfo], *, indent: str = "") -> str:
    return table(
        ("#", "element", "name", "kind", "duration", "outcome"),
        (
            (i, a.element_id, a.element_name or "", a.element_kind, duration(a.duration), a.outcome or "active")
            for i, a in enumerate(history, 1)
        ),
        indent=indent,
    )


def waits_text(waits: Waits, *, indent: str = "  ") -> list[str]:
    """One line per thing the instance waits for, with the command that moves it on."""
    lines: list[str] = []
    for task in waits.tasks:
        label = f"'{task.name}' ({task.element_id})" if task.name else f"'{task.element_id}'"
        lines.append(f"{indent}user task {label}: task id {task.id}")
        lines.append(f"{indent}  -> bpmnlite complete {task.id} [--var NAME=VALUE ...]")
    for sub in waits.subscriptions:
        if sub.kind == "message":
            bk = f" --business-key {sub.business_key}" if sub.business_key else ""
            lines.append(f"{indent}message '{sub.name}' at '{sub.element_id}'")
            lines.append(f"{indent}  -> bpmnlite message {_quote(sub.name)}{bk}")
        else:
            lines.append(f"{indent}{sub.kind} '{sub.name}' at '{sub.element_id}'")
            lines.append(f"{indent}  -> bpmnlite signal {_quote(sub.name)}")
    for job in waits.jobs:
        lines.append(f"{indent}{_job_label(job)} at '{job.element_id}' due {when(job.due_at)}")
        if job.attempts:
            lines.append(f"{indent}  failed {job.attempts} time(s), {job.retries} attempt(s) left: {job_error(job)}")
        lines.append(f"{indent}  -> bpmnlite run-jobs (when due)")
    for job in waits.incidents:
        lines.append(f"{indent}incident at '{job.element_id}' (job {job.id}): {job_error(job)}")
        lines.append(f"{indent}  -> fix the cause, then: bpmnlite retry {job.id}")
    for child, child_waits in waits.children:
        lines.append(f"{indent}called instance {child.id} ({child.process_key}, {child.state})")
        lines += waits_text(child_waits, indent=indent + "  ")
    return lines


def job_error(job: JobInfo) -> str:
    """The user-facing message plus the first line of the technical detail (the CLI is for operators)."""
    detail = (job.error_detail or "").strip().splitlines()
    first = detail[0] if detail else ""
    message = job.error_message or ""
    if first and first not in message:
        return f"{message} ({first})" if message else first
    return message or "unknown error"


def _job_label(job: JobInfo) -> str:
    if job.kind in ("timer", "start-timer"):
        return "timer"
    return f"{job.kind} continuation"


def _quote(text: str) -> str:
    return text if text and all(c.isalnum() or c in "-_.:/" for c in text) else json.dumps(text)


def instance_text(info: InstanceInfo, waits: Waits | None) -> list[str]:
    """The instance: id, state, what it waits for and its variables as pretty JSON."""
    fields = [("instance", info.id), ("process", info.process_key), ("business key", info.business_key),
              ("state", info.state), ("error", info.error)]
    lines = [f"{label + ':':<14}{value}" for label, value in fields if value]
    if waits is not None and not info.ended:
        found = waits_text(waits)
        lines.append("waiting for:" if found else f"{'waiting at:':<14}{', '.join(info.active_elements) or '-'}")
        lines += found
    lines.append("variables:")
    lines += ["  " + line for line in dumps(info.variables).splitlines()]
    return lines
