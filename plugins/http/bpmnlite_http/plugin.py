"""The ``http`` task type: one request per task, its response as a variable.

Outcomes, from the model's point of view:

* a status listed in ``bpmnlite:errorStatus``: ``BpmnError("HTTP_<status>")``
  carrying the response in the result variable, for an error boundary event;
* any other status from 400 up, a connection error or a timeout: a technical
  failure (an ordinary exception), so the engine rolls the command back and
  retries the job;
* otherwise the response is written to the result variable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from bpmnlite import BpmnError, TaskContext, hookimpl
from bpmnlite_http.settings import HttpConfigError, HttpRequest, read_request

DEFAULT_TIMEOUT = 30.0


class HttpRequestError(Exception):
    """A technical failure of a request: the engine retries the job, then raises an incident."""


class HttpPlugin:
    """Registers the ``http`` task type.

    Args:
        timeout: seconds a request may take when the element sets none.
        follow_redirects: follow 3xx answers (the result is the final response).
        client: an ``httpx.Client`` to send requests with (proxies, TLS
            settings, a transport for tests); one is created on first use
            otherwise. It is shared by every task, so it must be thread-safe.
    """

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, follow_redirects: bool = True, client: httpx.Client | None = None
    ) -> None:
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self._client = client
        self._lock = threading.Lock()

    @hookimpl
    def bpmnlite_task_types(self) -> Mapping[str, Any]:
        return {"http": self.call}

    def call(self, ctx: TaskContext) -> None:
        """Send the element's request and route its response (see the module docstring)."""
        request = read_request(ctx, self.timeout)
        response = self._send(request)
        result = _result(response)
        status = response.status_code
        if request.is_error_status(status):
            raise BpmnError(
                f"HTTP_{status}",
                f"{request.method} {request.url} answered {status} {response.reason_phrase}",
                {request.result_variable: result},
            )
        if status >= 400:
            raise HttpRequestError(
                f"{request.method} {request.url} answered {status} {response.reason_phrase}"
                f"{_excerpt(response)} (list it in bpmnlite:errorStatus to handle it in the model)"
            )
        ctx.set(request.result_variable, result)

    def close(self) -> None:
        """Close the client this plugin created (not one it was given)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _send(self, request: HttpRequest) -> httpx.Response:
        what = f"{request.method} {request.url}"
        try:
            return self.client.request(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body,
                timeout=request.timeout,
                follow_redirects=self.follow_redirects,
            )
        except httpx.TimeoutException as exc:
            raise HttpRequestError(f"{what} timed out after {request.timeout:g} s ({type(exc).__name__})") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise HttpConfigError(f"invalid URL {request.url!r}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise HttpRequestError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client()
            return self._client


def _result(response: httpx.Response) -> dict[str, Any]:
    """``{status, headers, body}``; the body JSON-decoded when the response says it is JSON."""
    body: Any = None
    if response.content:
        body = response.text
        if "json" in response.headers.get("content-type", "").lower():
            try:
                body = json.loads(body)
            except ValueError:
                pass  # keep the text: a server that mislabels its body should not fail the task
    return {"status": response.status_code, "headers": dict(response.headers.items()), "body": body}


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip() if response.content else ""
    if not text:
        return ""
    return ": " + (text if len(text) <= limit else text[:limit] + "...")
