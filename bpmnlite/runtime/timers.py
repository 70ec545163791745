"""Timer definitions: when a timer falls due, and when a cycle falls due next.

Accepts ISO 8601 dates (``timeDate``), durations (``timeDuration``), repeating
intervals (``R3/PT10M``, ``R/PT1H``, ``R2/2026-01-01T00:00:00Z/P1D``) and cron
(five fields, or Quartz's six/seven fields with seconds first and ``?``).
All times are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import isodate
from croniter import croniter

from bpmnlite.errors import ExpressionError
from bpmnlite.model import TimerKind


@dataclass(frozen=True, slots=True)
class Schedule:
    """A resolved timer: the first due time and, for cycles, how to go on.

    ``remaining`` is the number of firings left after this one (None: forever).
    """

    due_at: datetime
    kind: TimerKind
    text: str
    remaining: int | None = None


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration as a timedelta (months and years measured from 2000-01-01: P1M is 31 days)."""
    value = isodate.parse_duration(text.strip())
    if isinstance(value, timedelta):
        return value
    # isodate.Duration with years/months: anchor it to a fixed date to get a length
    anchor = datetime(2000, 1, 1, tzinfo=UTC)
    return (anchor + value) - anchor  # type: ignore[no-any-return]


def _parse_date(text: str) -> datetime:
    return as_utc(isodate.parse_datetime(text.strip()))


def _is_cron(text: str) -> bool:
    return len(text.split()) >= 5 and not text.startswith("R")


def _cron_next(text: str, after: datetime) -> datetime:
    fields = text.split()
    if len(fields) == 7:  # Quartz year field: not supported by croniter, only '*' accepted
        if fields[6] not in ("*", "?"):
            raise ValueError("cron year field is not supported")
        fields = fields[:6]
    fields = ["*" if f == "?" else f for f in fields]
    with_seconds = len(fields) == 6
    it = croniter(" ".join(fields), after, second_at_beginning=with_seconds)
    return as_utc(it.get_next(datetime))


def schedule(kind: TimerKind, text: str, now: datetime, *, remaining: int | None = None) -> Schedule:
    """Resolve a timer text into its first (or next) due time.

    Raises:
        ExpressionError: the text is not a valid date, duration, cycle or cron.
    """
    text = text.strip()
    try:
        if kind is TimerKind.DATE:
            return Schedule(_parse_date(text), kind, text)
        if kind is TimerKind.DURATION:
            return Schedule(now + parse_duration(text), kind, text)
        if _is_cron(text):
            return Schedule(_cron_next(text, now), kind, text, None)
        return _repeating(text, now, remaining)
    except ExpressionError:
        raise
    except Exception as exc:  # isodate and croniter raise a variety of errors
        raise ExpressionError(f"invalid {kind.value} {text!r}: {exc}", expression=text) from None


def _repeating(text: str, now: datetime, remaining: int | None) -> Schedule:
    parts = text.split("/")
    if not parts[0].startswith("R"):
        # a bare duration as a cycle means "every <duration>, forever"
        return Schedule(now + parse_duration(text), TimerKind.CYCLE, text, None)
    count_text = parts[0][1:]
    total = int(count_text) if count_text else None
    if len(parts) == 2:
        interval = parse_duration(parts[1])
        due = now + interval
    elif len(parts) == 3:
        start = _parse_date(parts[1])
        interval = parse_duration(parts[2])
        due = start if start > now else now + interval
    else:
        raise ValueError("expected R[n]/[start/]duration")
    if interval <= timedelta(0):
        raise ValueError("the interval must be positive")
    if remaining is None and total is not None:
        remaining = total - 1
    return Schedule(due, TimerKind.CYCLE, text, remaining)


def next_cycle(text: str, last_due: datetime, remaining: int | None) -> Schedule | None:
    """The firing after ``last_due`` of a cycle, or None when the cycle is exhausted."""
    if remaining is not None and remaining <= 0:
        return None
    if _is_cron(text):
        return Schedule(_cron_next(text, last_due), TimerKind.CYCLE, text, None)
    parts = text.split("/")
    interval = parse_duration(parts[-1])
    left = None if remaining is None else remaining - 1
    return Schedule(last_due + interval, TimerKind.CYCLE, text, left)


def to_json(s: Schedule) -> dict[str, Any]:
    return {"kind": s.kind.value, "text": s.text, "remaining": s.remaining}
