"""What one ``http`` task asks for, read from its element and rendered against the variables.

Every setting is an attribute ``bpmnlite:<name>`` or an extension field
(``camunda:field`` / ``bpmnlite:field``) of the same name; the attribute wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import isodate

from bpmnlite import BpmnliteError, TaskContext
from bpmnlite.expressions import evaluate, render_template

DEFAULT_RESULT_VARIABLE = "response"


class HttpConfigError(BpmnliteError):
    """An ``http`` task is configured wrongly: no URL, headers that are not a JSON object, a bad status list..."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout: float
    result_variable: str
    error_statuses: tuple[tuple[int, int], ...]

    def is_error_status(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.error_statuses)


def read_request(ctx: TaskContext, default_timeout: float) -> HttpRequest:
    """Build the request of ``ctx``'s element, with every template rendered.

    Raises:
        HttpConfigError: a setting is missing or malformed.
        bpmnlite.ExpressionError: a template names an unknown variable or fails.
    """
    settings = _Settings(ctx)
    variables = ctx.variables
    url = settings.get("url")
    if not url:
        raise HttpConfigError("an http task needs bpmnlite:url (or a field named 'url')")
    method = render_template(settings.get("method") or "GET", variables).strip().upper()
    if not method.isalpha():
        raise HttpConfigError(f"invalid HTTP method {method!r}")
    headers = _headers(settings.get("headers"), variables)
    body = _body(settings.get("body"), variables, headers)
    if not any(name.lower() == "idempotency-key" for name in headers):
        headers["Idempotency-Key"] = ctx.idempotency_key
    return HttpRequest(
        method=method,
        url=render_template(url, variables).strip(),
        headers=headers,
        body=body,
        # bpmnlite:timeout belongs to the engine (a job's time limit); the request's is requestTimeout
        timeout=parse_timeout(settings.get("requestTimeout") or settings.field("timeout"), default_timeout),
        result_variable=(settings.get("resultVariable") or DEFAULT_RESULT_VARIABLE).strip(),
        error_statuses=parse_statuses(settings.get("errorStatus") or ""),
    )


class _Settings:
    def __init__(self, ctx: TaskContext) -> None:
        self._config = ctx.config
        self._fields = ctx.fields()

    def get(self, name: str) -> str | None:
        value = self._config.get(f"bpmnlite:{name}")
        return value if value is not None else self._fields.get(name)

    def field(self, name: str) -> str | None:
        return self._fields.get(name)


def _headers(text: str | None, variables: Mapping[str, Any]) -> dict[str, str]:
    if not text or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise HttpConfigError(f"bpmnlite:headers must be a JSON object: {exc}") from None
    if not isinstance(raw, dict):
        raise HttpConfigError(f"bpmnlite:headers must be a JSON object, not {type(raw).__name__}")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise HttpConfigError(f"header {name!r} must be a string or a number, not {type(value).__name__}")
        out[name] = render_template(str(value), variables)
    return out


def _body(text: str | None, variables: Mapping[str, Any], headers: dict[str, str]) -> bytes | None:
    """The request body; a whole ``${var}`` holding a dict or list is sent as JSON."""
    if text is None or not text.strip():
        return None
    has_type = any(name.lower() == "content-type" for name in headers)
    stripped = text.strip()
    if stripped.startswith("${") and stripped.endswith("}"):
        value = evaluate(stripped, variables)
        if not isinstance(value, str):
            if not has_type:
                headers["Content-Type"] = "application/json"
            return json.dumps(value).encode("utf-8")
        rendered = value
    else:
        rendered = render_template(text, variables)
    if not has_type:
        headers["Content-Type"] = "application/json" if _is_json(rendered) else "text/plain; charset=utf-8"
    return rendered.encode("utf-8")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def parse_timeout(text: str | None, default: float) -> float:
    """Seconds (``"2.5"``) or an ISO 8601 duration (``"PT2.5S"``)."""
    if text is None or not text.strip():
        return default
    value = text.strip()
    try:
        seconds = float(value) if not value.upper().startswith("P") else isodate.parse_duration(value).total_seconds()
    except (ValueError, isodate.ISO8601Error, AttributeError):
        raise HttpConfigError(f"invalid timeout {text!r}: write seconds ('2.5') or a duration ('PT2.5S')") from None
    if not seconds > 0:
        raise HttpConfigError(f"invalid timeout {text!r}: it must be more than zero")
    return seconds


def parse_statuses(text: str) -> tuple[tuple[int, int], ...]:
    """``"404,409,400-499"`` as inclusive ranges.

    Raises:
        HttpConfigError: a part is neither a status code nor a range of them.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = (p.strip() for p in part.partition("-"))
        high = high or low
        if not (low.isdigit() and high.isdigit()) or not 100 <= int(low) <= int(high) <= 599:
            raise HttpConfigError(
                f"invalid bpmnlite:errorStatus part {part!r}: write status codes and ranges like '404,409,500-599'"
            )
        ranges.append((int(low), int(high)))
    return tuple(ranges)
