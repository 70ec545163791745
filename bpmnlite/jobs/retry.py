"""Retry settings of a job: how many attempts in all, and how long to wait between them.

Written per element as ``bpmnlite:retries="5"`` (attempts) plus an optional
``bpmnlite:retryBackoff="PT10S"``, or as a repeating interval ``R5/PT10S``
(Camunda's and Flowable's ``failedJobRetryTimeCycle``): five attempts, ten
seconds apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bpmnlite.runtime.timers import parse_duration

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    backoff: timedelta


def parse_retries(
    spec: str | None, default_attempts: int = DEFAULT_ATTEMPTS, backoff: str | None = None
) -> RetryPolicy:
    """Parse a retry setting; an invalid one is reported at deploy time by the engine.

    Raises:
        ValueError: the text is neither a count nor ``R<n>/<duration>``.
    """
    pause = parse_duration(backoff) if backoff else DEFAULT_BACKOFF
    if spec is None or not spec.strip():
        return RetryPolicy(default_attempts, pause)
    text = spec.strip()
    if text.startswith("R"):
        count, _, interval = text[1:].partition("/")
        if not count.isdigit() or not interval:
            raise ValueError(f"invalid retry cycle {spec!r}: expected R<attempts>/<ISO duration>, e.g. R5/PT10S")
        return RetryPolicy(max(int(count), 1), parse_duration(interval))
    if not text.isdigit():
        raise ValueError(f"invalid retries {spec!r}: expected a number of attempts or R<n>/<duration>")
    return RetryPolicy(max(int(text), 1), pause)
