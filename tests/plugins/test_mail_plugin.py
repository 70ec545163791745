"""The ``mail`` task type against a real SMTP server (aiosmtpd) on 127.0.0.1, in a thread of this test."""

from __future__ import annotations

import email
import email.policy
import importlib.metadata
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import bpmnlite_mail
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from bpmnlite_mail import MailDeliveryError, MailPlugin

from bpmnlite import Engine, ExecutionError, TaskContext, hookimpl

from ..bpmn import bpmn, chain, flow
from ..conftest import Clock


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


class Mailbox:
    """An aiosmtpd handler: records accepted messages; refuses chosen recipients with a chosen reply."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse: dict[str, str] = {"nobody@example.com": "550 5.1.1 no such user"}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.original_content.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None, login)
        )
        return "250 Message accepted for delivery"


class SmtpServer(Controller):
    """aiosmtpd's threaded controller on a port the OS picks (``port=0``)."""

    def __init__(self, handler: Mailbox, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]  # learn the real port before the first connection
        super()._trigger_server()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(mailbox: Mailbox) -> Iterator[SmtpServer]:
    server = SmtpServer(mailbox)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def engine(db_url: str, clock: Clock, smtp: SmtpServer) -> Iterator[Engine]:
    """An engine whose mail plugin sends through the test's server (SQLite and PostgreSQL)."""
    plugin = MailPlugin(host="127.0.0.1", port=smtp.port, sender="Orders <orders@shop.example>")
    eng = Engine(db_url, plugins=[plugin, Flaky()], load_entry_points=False, clock=clock)
    try:
        yield eng
    finally:
        eng.close()


class Flaky:
    """A task type that fails the first time each element runs it."""

    def __init__(self) -> None:
        self.failed: set[str] = set()

    @hookimpl
    def bpmnlite_task_types(self) -> dict[str, Any]:
        return {"flaky": self.run}

    def run(self, ctx: TaskContext) -> None:
        if ctx.element_id not in self.failed:
            self.failed.add(ctx.element_id)
            raise RuntimeError("planned failure after the mail was sent")


def one_task(task: str, *, boundary: str = "", extra: str = "") -> str:
    return bpmn('<startEvent id="s"/>' + task + '<endEvent id="e"/>' + boundary + chain("s", "mail", "e"), extra=extra)


def test_the_installed_entry_point_registers_the_shared_instance() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bpmnlite")}
    assert names.get("mail") == "bpmnlite_mail:plugin"
    assert (bpmnlite_mail.plugin.host, bpmnlite_mail.plugin.port) == ("127.0.0.1", 25)


def test_one_mail_with_templated_subject_and_bodies(engine: Engine, mailbox: Mailbox) -> None:
    engine.deploy(one_task(
        '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="${customer.email}" '
        'bpmnlite:subject="Order ${orderId} shipped" bpmnlite:resultVariable="messageId">'
        "<extensionElements>"
        '<camunda:field name="text"><camunda:string>Dear ${customer.name},\nyour order ${orderId} is on its way.'
        "</camunda:string></camunda:field>"
        '<camunda:field name="html"><camunda:expression><![CDATA[<p>Dear ${customer.name},</p>]]>'
        "</camunda:expression></camunda:field>"
        "</extensionElements></serviceTask>"
    ))

    inst = engine.start("p", {"orderId": "A-17", "customer": {"name": "Ada", "email": "ada@example.com"}})

    assert inst.state == "completed"
    [got] = mailbox.received
    assert got.sender == "orders@shop.example"
    assert got.recipients == ["ada@example.com"]
    msg = got.message
    assert msg["Subject"] == "Order A-17 shipped"
    assert msg["From"] == "Orders <orders@shop.example>"
    assert msg["To"] == "ada@example.com"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content() == "Dear Ada,\nyour order A-17 is on its way.\n"
    assert html.get_content().strip() == "<p>Dear Ada,</p>"
    assert msg["Message-ID"].endswith("@shop.example>")
    assert inst.variables["messageId"] == msg["Message-ID"]


def test_recipients_from_a_list_variable_with_cc_and_bcc(engine: Engine, mailbox: Mailbox) -> None:
    engine.deploy(one_task(
        '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="${recipients}" bpmnlite:cc="lead-${team}@example.com" '
        'bpmnlite:bcc="audit@example.com" bpmnlite:from="noreply@example.com" bpmnlite:subject="Standup" '
        'bpmnlite:text="Meeting at ${time}"/>'
    ))

    engine.start("p", {"recipients": ["ann@example.com", "Bob B. <bob@example.com>"], "team": "blue", "time": "9:30"})

    [got] = mailbox.received
    assert got.recipients == ["ann@example.com", "bob@example.com", "lead-blue@example.com", "audit@example.com"]
    assert got.message["To"] == "ann@example.com, \"Bob B.\" <bob@example.com>"
    assert got.message["Cc"] == "lead-blue@example.com"
    assert got.message["Bcc"] is None  # only in the envelope
    assert got.message.get_content() == "Meeting at 9:30\n"
    assert got.sender == "noreply@example.com"


REJECTED_MODEL = one_task(
    '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="${to}" bpmnlite:subject="Hi" bpmnlite:text="Hi"/>',
    boundary=(
        '<boundaryEvent id="bounced" attachedToRef="mail" camunda:errorCodeVariable="code">'
        '<errorEventDefinition errorRef="rejected"/></boundaryEvent><endEvent id="fix_address"/>'
        + flow("bounced", "fix_address")
    ),
    extra='<error id="rejected" errorCode="MAIL_REJECTED"/>',
)


def test_a_refused_recipient_is_a_bpmn_error_caught_by_a_boundary_event(engine: Engine, mailbox: Mailbox) -> None:
    engine.deploy(REJECTED_MODEL)

    inst = engine.start("p", {"to": "ann@example.com, nobody@example.com"})

    assert inst.state == "completed"
    visited = [a.element_id for a in engine.history(inst.id)]
    assert "fix_address" in visited and "e" not in visited
    assert inst.variables["code"] == "MAIL_REJECTED"
    assert inst.variables["rejectedRecipients"] == [
        {"address": "nobody@example.com", "code": 550, "reply": "5.1.1 no such user"}
    ]
    assert mailbox.received == []  # all or nothing: ann got nothing either


def test_a_temporary_refusal_is_a_technical_failure(engine: Engine, mailbox: Mailbox) -> None:
    mailbox.refuse["busy@example.com"] = "450 4.2.1 mailbox busy"
    engine.deploy(REJECTED_MODEL)

    with pytest.raises(ExecutionError, match="mailbox busy") as caught:
        engine.start("p", {"to": "busy@example.com"})

    assert isinstance(caught.value.__cause__, MailDeliveryError)
    assert engine.instances() == []


def test_a_connection_error_is_a_technical_failure_and_the_job_is_retried(db_url: str, clock: Clock) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        plugin = MailPlugin(port=closed.getsockname()[1], sender="a@example.com")
        engine = Engine(db_url, plugins=[plugin], load_entry_points=False, clock=clock)
        try:
            engine.deploy(one_task(
                '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:async="true" bpmnlite:to="b@example.com"/>'
            ))
            inst = engine.start("p")
            assert engine.run_jobs() == 1
            [job] = engine.jobs(instance_id=inst.id)
        finally:
            engine.close()

    assert (job.retries, job.attempts) == (2, 1)
    assert "MailDeliveryError: cannot connect to the SMTP server 127.0.0.1" in (job.error_detail or "")


def test_a_retried_job_sends_the_same_message_id_again(engine: Engine, mailbox: Mailbox, clock: Clock) -> None:
    # the mail is sent, then the next step of the same job fails: the retry sends it again
    engine.deploy(bpmn(
        '<startEvent id="s"/><serviceTask id="mail" bpmnlite:type="mail" bpmnlite:async="true" '
        'bpmnlite:to="ann@example.com" bpmnlite:subject="Receipt"/><serviceTask id="after" bpmnlite:type="flaky"/>'
        '<endEvent id="e"/>' + chain("s", "mail", "after", "e")
    ))
    inst = engine.start("p")
    engine.run_jobs()
    clock.advance(seconds=10)
    engine.run_jobs()
    assert engine.instance(inst.id).state == "completed"

    first, second = mailbox.received
    assert first.message["Message-ID"] == second.message["Message-ID"]

    engine.start("p")
    engine.run_jobs()
    assert mailbox.received[-1].message["Message-ID"] != first.message["Message-ID"]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ('bpmnlite:subject="no recipient"', "needs a recipient"),
        ('bpmnlite:to="ann@example.com" bpmnlite:from="a@x.org, b@x.org"', "the sender must be one address"),
        ('bpmnlite:to="not an address"', "invalid mail address"),
        ('bpmnlite:to="a@example.com" bpmnlite:starttls="maybe"', "starttls must be true or false"),
        ('bpmnlite:to="a@example.com" bpmnlite:starttls="true" bpmnlite:ssl="true"', "not both"),
        ('bpmnlite:to="a@example.com" bpmnlite:username="u" bpmnlite:password="p"', "without TLS"),
        ('bpmnlite:to="${count}"', "recipients must be text or a list"),
    ],
)
def test_a_misconfigured_task_fails_naming_the_element(
    engine: Engine, mailbox: Mailbox, attributes: str, message: str
) -> None:
    engine.deploy(one_task(f'<serviceTask id="mail" bpmnlite:type="mail" {attributes}/>'))

    with pytest.raises(ExecutionError, match=message) as caught:
        engine.start("p", {"count": 3})

    assert caught.value.element_id == "mail"
    assert mailbox.received == []


def test_a_password_may_name_only_allowed_environment_variables(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret")
    engine.deploy(one_task(
        '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="a@example.com" bpmnlite:starttls="true" '
        'bpmnlite:username="u" bpmnlite:password="env:DATABASE_URL"/>'
    ))

    with pytest.raises(ExecutionError, match=r"may name only environment variables SMTP_\*, MAIL_\*"):
        engine.start("p")


# ---------------------------------------------------------------- STARTTLS


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``cryptography`` or else the ``openssl`` command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _with_cryptography(cert, key)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("STARTTLS needs a certificate: neither the cryptography package nor the openssl command is here")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True, timeout=60,
        )
    return cert, key


def _with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def test_starttls_with_a_login_whose_password_comes_from_the_environment(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))  # trust exactly this certificate

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"pa55word")
        return AuthResult(success=ok, handled=False, auth_data=data)

    mailbox = Mailbox()
    server = SmtpServer(
        mailbox, tls_context=server_tls, require_starttls=True, authenticator=authenticate, auth_required=True
    )
    server.start()
    monkeypatch.setenv("SMTP_SHOP_PASSWORD", "pa55word")
    plugin = MailPlugin(host="127.0.0.1", port=server.port, sender="shop@example.com", ssl_context=client_tls)
    engine = Engine(db_url, plugins=[plugin], load_entry_points=False)
    try:
        engine.deploy(one_task(
            '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="ann@example.com" bpmnlite:subject="Secure" '
            'bpmnlite:starttls="true" bpmnlite:username="shop" bpmnlite:password="env:SMTP_SHOP_PASSWORD"/>'
        ))
        engine.start("p")

        # the server requires STARTTLS: without it, the same task fails
        plain = MailPlugin(host="127.0.0.1", port=server.port, sender="shop@example.com")
        with Engine(db_url, plugins=[plain], load_entry_points=False) as other:
            other.deploy(one_task(
                '<serviceTask id="mail" bpmnlite:type="mail" bpmnlite:to="ann@example.com" bpmnlite:subject="Plain"/>'
            ))
            with pytest.raises(ExecutionError, match="MailDeliveryError"):
                other.start("p")
    finally:
        engine.close()
        server.stop()

    [got] = mailbox.received
    assert got.tls and got.login == "shop"
    assert got.message["Subject"] == "Secure"
