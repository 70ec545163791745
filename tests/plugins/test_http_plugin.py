"""The ``http`` task type against a real HTTP server on 127.0.0.1 (a thread of this test)."""

from __future__ import annotations

import importlib.metadata
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bpmnlite_http
import pytest
from bpmnlite_http import HttpRequestError

from bpmnlite import Engine, ExecutionError

from ..bpmn import bpmn, chain, flow
from ..conftest import Clock


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list: sent as JSON; str: sent as text
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # answer only once the test releases the server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ApiServer:
    """A real HTTP server: it records each request and answers with the replies a test queued per path."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.released = threading.Event()
        self._replies: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = owner._record(seen)
                if reply.hold:
                    owner.released.wait(timeout=30)
                if isinstance(reply.body, str):
                    data, ctype = reply.body.encode(), "text/plain; charset=utf-8"
                elif reply.body is None:
                    data, ctype = b"", "text/plain"
                else:
                    data, ctype = json.dumps(reply.body).encode(), "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's spelling

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that timed out closed its socket; nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def reply(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` with ``replies`` in turn; the last one repeats."""
        with self._lock:
            self._replies[path] = list(replies)

    def _record(self, seen: Seen) -> Reply:
        with self._changed:
            self.requests.append(seen)
            self._changed.notify_all()
            queue = self._replies.get(seen.path.split("?")[0]) or [Reply(404, {"error": "no route"})]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Seen]:
        """Wait until ``count`` requests arrived (a condition with a deadline, never a sleep)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} of {count} requests arrived in {timeout} s")
                self._changed.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def api() -> Iterator[ApiServer]:
    server = ApiServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def engine(db_url: str, clock: Clock) -> Iterator[Engine]:
    """An engine with the http plugin only (on SQLite and PostgreSQL, like the shared fixture)."""
    eng = Engine(db_url, plugins=[bpmnlite_http.plugin], load_entry_points=False, clock=clock)
    try:
        yield eng
    finally:
        eng.close()


def one_task(task: str, *, extra: str = "", boundary: str = "") -> str:
    """start -> ``task`` (id ``call``) -> end, with optional boundary events and their end events."""
    return bpmn('<startEvent id="s"/>' + task + '<endEvent id="e"/>' + boundary + chain("s", "call", "e"), extra=extra)


def test_the_installed_entry_point_registers_the_shared_instance(tmp_path: Path) -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bpmnlite")}
    assert names.get("http") == "bpmnlite_http:plugin"
    engine = Engine(f"sqlite:///{tmp_path / 'found.db'}")
    try:
        assert engine.plugins.task_handler("http") == bpmnlite_http.plugin.call
    finally:
        engine.close()


def test_get_with_a_templated_url_maps_the_json_response_to_a_variable(engine: Engine, api: ApiServer) -> None:
    api.reply("/customers/42", Reply(200, {"id": 42, "name": "Ada"}, {"X-Trace": "t-1"}))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/customers/${customerId}" '
        'bpmnlite:resultVariable="customer"/>'
    ))

    inst = engine.start("p", {"api": api.url, "customerId": 42})

    assert inst.state == "completed"
    customer = inst.variables["customer"]
    assert customer["status"] == 200
    assert customer["body"] == {"id": 42, "name": "Ada"}
    assert customer["headers"]["x-trace"] == "t-1"
    assert customer["headers"]["content-type"] == "application/json"
    [seen] = api.requests
    assert (seen.method, seen.path, seen.body) == ("GET", "/customers/42", b"")


def test_the_default_result_variable_is_response_and_a_text_body_stays_text(engine: Engine, api: ApiServer) -> None:
    api.reply("/ping", Reply(200, "pong"))
    engine.deploy(one_task('<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/ping"/>'))

    inst = engine.start("p", {"api": api.url})

    assert inst.variables["response"]["body"] == "pong"
    assert inst.variables["response"]["status"] == 200


def test_post_with_fields_a_templated_json_body_and_templated_headers(engine: Engine, api: ApiServer) -> None:
    api.reply("/orders", Reply(201, {"orderId": "o-7"}))
    engine.deploy(one_task(
        """
        <serviceTask id="call" bpmnlite:type="http">
          <extensionElements>
            <camunda:field name="method" stringValue="POST"/>
            <camunda:field name="url" expression="${api}/orders"/>
            <camunda:field name="headers"><camunda:string>{"Authorization": "Bearer ${token}", "X-Retries": 3}</camunda:string></camunda:field>
            <bpmnlite:field name="body"><bpmnlite:string><![CDATA[{"sku": "${sku}", "qty": ${qty}}]]></bpmnlite:string></bpmnlite:field>
            <camunda:field name="resultVariable" stringValue="created"/>
          </extensionElements>
        </serviceTask>
        """
    ))

    inst = engine.start("p", {"api": api.url, "token": "s3cret", "sku": "A-1", "qty": 2})

    assert inst.variables["created"] == {
        "status": 201,
        "headers": inst.variables["created"]["headers"],
        "body": {"orderId": "o-7"},
    }
    [seen] = api.requests
    assert (seen.method, seen.path) == ("POST", "/orders")
    assert json.loads(seen.body) == {"sku": "A-1", "qty": 2}
    assert seen.headers["authorization"] == "Bearer s3cret"
    assert seen.headers["x-retries"] == "3"
    assert seen.headers["content-type"] == "application/json"


def test_a_whole_variable_as_body_is_sent_as_json(engine: Engine, api: ApiServer) -> None:
    api.reply("/orders", Reply(200, {"ok": True}))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:method="PUT" bpmnlite:url="${api}/orders" '
        'bpmnlite:body="${order}"/>'
    ))

    engine.start("p", {"api": api.url, "order": {"note": 'says "hi"', "lines": [1, 2]}})

    [seen] = api.requests
    assert seen.method == "PUT"
    assert json.loads(seen.body) == {"note": 'says "hi"', "lines": [1, 2]}
    assert seen.headers["content-type"] == "application/json"


NOT_FOUND_MODEL = one_task(
    '<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/customers/${customerId}" '
    'bpmnlite:errorStatus="409, 404" bpmnlite:resultVariable="lookup"/>',
    boundary=(
        '<boundaryEvent id="not_found" attachedToRef="call" camunda:errorCodeVariable="code">'
        '<errorEventDefinition errorRef="http404"/></boundaryEvent><endEvent id="unknown_customer"/>'
        + flow("not_found", "unknown_customer")
    ),
    extra='<error id="http404" errorCode="HTTP_404"/>',
)


def test_a_listed_status_is_a_bpmn_error_caught_by_a_boundary_event(engine: Engine, api: ApiServer) -> None:
    api.reply("/customers/7", Reply(404, {"detail": "no customer 7"}))
    engine.deploy(NOT_FOUND_MODEL)

    inst = engine.start("p", {"api": api.url, "customerId": 7})

    assert inst.state == "completed"
    visited = [a.element_id for a in engine.history(inst.id)]
    assert "unknown_customer" in visited and "e" not in visited
    assert inst.variables["code"] == "HTTP_404"
    assert inst.variables["lookup"]["status"] == 404
    assert inst.variables["lookup"]["body"] == {"detail": "no customer 7"}


def test_status_ranges_are_understood(engine: Engine, api: ApiServer) -> None:
    api.reply("/teapot", Reply(418, "short and stout"))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/teapot" bpmnlite:errorStatus="400-499"/>',
        boundary='<boundaryEvent id="any" attachedToRef="call" camunda:errorCodeVariable="code">'
        '<errorEventDefinition/></boundaryEvent><endEvent id="handled"/>' + flow("any", "handled"),
    ))

    inst = engine.start("p", {"api": api.url})

    assert inst.variables["code"] == "HTTP_418"
    assert inst.variables["response"]["body"] == "short and stout"


def test_an_unlisted_client_error_is_a_technical_failure(engine: Engine, api: ApiServer) -> None:
    api.reply("/customers/7", Reply(403, {"detail": "forbidden"}))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/customers/7" bpmnlite:errorStatus="404"/>'
    ))

    with pytest.raises(ExecutionError) as caught:
        engine.start("p", {"api": api.url})

    assert caught.value.element_id == "call"
    assert isinstance(caught.value.__cause__, HttpRequestError)
    assert "answered 403" in str(caught.value) and "bpmnlite:errorStatus" in str(caught.value)
    assert engine.instances() == []


def test_503_fails_the_command_and_nothing_is_saved(engine: Engine, api: ApiServer) -> None:
    api.reply("/charge", Reply(503, "try later"))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:method="POST" bpmnlite:url="${api}/charge" '
        'bpmnlite:errorStatus="400-499"/>'
    ))

    with pytest.raises(ExecutionError, match="answered 503") as caught:
        engine.start("p", {"api": api.url})

    assert caught.value.element_id == "call"
    assert isinstance(caught.value.__cause__, HttpRequestError)
    assert engine.instances() == []


def test_async_503_is_retried_with_the_same_idempotency_key(engine: Engine, api: ApiServer, clock: Clock) -> None:
    api.reply("/charge", Reply(503, "busy"), Reply(503, "busy"), Reply(200, {"charged": True}))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:async="true" bpmnlite:method="POST" '
        'bpmnlite:url="${api}/charge" bpmnlite:body="${payment}"/>'
    ))
    inst = engine.start("p", {"api": api.url, "payment": {"amount": 10}})
    assert inst.active_elements == ("call",)

    assert engine.run_jobs() == 1
    [job] = engine.jobs(instance_id=inst.id)
    assert (job.state, job.retries, job.attempts) == ("executable", 2, 1)
    assert "answered 503" in (job.error_detail or "")
    assert engine.run_jobs() == 0  # the back-off has not passed yet

    clock.advance(seconds=10)
    assert engine.run_jobs() == 1
    clock.advance(seconds=10)
    assert engine.run_jobs() == 1

    done = engine.instance(inst.id)
    assert done.state == "completed"
    assert done.variables["response"]["body"] == {"charged": True}
    keys = [seen.headers["idempotency-key"] for seen in api.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]
    assert all(json.loads(seen.body) == {"amount": 10} for seen in api.requests)

    other = engine.start("p", {"api": api.url, "payment": {"amount": 10}})
    engine.run_jobs()
    assert api.requests[-1].headers["idempotency-key"] not in keys, f"{other.id} reused another job's key"


def test_a_timeout_is_a_technical_failure(engine: Engine, api: ApiServer) -> None:
    api.reply("/slow", Reply(200, "too late", hold=True))
    engine.deploy(one_task(
        """<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/slow">
             <extensionElements><camunda:field name="timeout" stringValue="0.3"/></extensionElements>
           </serviceTask>"""
    ))

    with pytest.raises(ExecutionError, match=r"timed out after 0\.3 s") as caught:
        engine.start("p", {"api": api.url})

    assert isinstance(caught.value.__cause__, HttpRequestError)
    assert api.wait_for(1)[0].path == "/slow"
    assert engine.instances() == []


def test_an_iso_duration_timeout_is_accepted_and_the_async_job_is_retried(
    engine: Engine, api: ApiServer, clock: Clock
) -> None:
    # the request's own limit; bpmnlite:timeout is the engine's job time limit
    api.reply("/slow", Reply(200, "too late", hold=True))
    engine.deploy(one_task(
        '<serviceTask id="call" bpmnlite:type="http" bpmnlite:async="true" bpmnlite:url="${api}/slow" '
        'bpmnlite:requestTimeout="PT0.3S"/>'
    ))
    inst = engine.start("p", {"api": api.url})

    engine.run_jobs()

    [job] = engine.jobs(instance_id=inst.id)
    assert (job.retries, job.attempts) == (2, 1)
    assert "timed out after 0.3 s" in (job.error_detail or "")
    assert engine.instance(inst.id).active_elements == ("call",)


def test_a_connection_error_is_a_technical_failure(engine: Engine) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        engine.deploy(one_task('<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/x"/>'))

        with pytest.raises(ExecutionError, match="ConnectError") as caught:
            engine.start("p", {"api": url})

    assert isinstance(caught.value.__cause__, HttpRequestError)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ("", "needs bpmnlite:url"),
        ('bpmnlite:url="${api}" bpmnlite:headers="[1]"', "headers must be a JSON object"),
        ('bpmnlite:url="${api}" bpmnlite:errorStatus="4xx"', "invalid bpmnlite:errorStatus part '4xx'"),
        ('bpmnlite:url="${api}" bpmnlite:requestTimeout="soon"', "invalid timeout 'soon'"),
        ('bpmnlite:url="ftp://example.org/x"', "invalid URL 'ftp://example.org/x'"),
    ],
)
def test_a_misconfigured_task_fails_naming_the_element_and_the_setting(
    engine: Engine, api: ApiServer, attributes: str, message: str
) -> None:
    engine.deploy(one_task(f'<serviceTask id="call" bpmnlite:type="http" {attributes}/>'))

    with pytest.raises(ExecutionError, match=message) as caught:
        engine.start("p", {"api": api.url})

    assert caught.value.element_id == "call"
    assert api.requests == []


def test_the_client_can_be_given_and_its_settings_apply(api: ApiServer, db_url: str) -> None:
    import httpx

    api.reply("/moved", Reply(302, None, {"Location": "/here"}))
    api.reply("/here", Reply(200, "arrived"))
    seen_by_hook: list[str] = []

    def remember(request: httpx.Request) -> None:
        seen_by_hook.append(str(request.url))

    with httpx.Client(event_hooks={"request": [remember]}) as client:
        plugin = bpmnlite_http.HttpPlugin(client=client, follow_redirects=False)
        engine = Engine(db_url, plugins=[plugin], load_entry_points=False)
        try:
            engine.deploy(one_task('<serviceTask id="call" bpmnlite:type="http" bpmnlite:url="${api}/moved"/>'))
            inst = engine.start("p", {"api": api.url})
        finally:
            engine.close()

    assert inst.variables["response"]["status"] == 302
    assert seen_by_hook == [f"{api.url}/moved"]

