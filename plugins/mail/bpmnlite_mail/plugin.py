"""The ``mail`` task type: one message per task, sent over SMTP.

Outcomes, from the model's point of view:

* a recipient the server refuses for good (a 5xx reply to ``RCPT``):
  ``BpmnError("MAIL_REJECTED")`` with ``rejectedRecipients`` for an error
  boundary event. Nothing is sent, not even to the other recipients;
* a connection error, a timeout, a temporary refusal (4xx), a refused sender or
  failed login: a technical failure (an ordinary exception), so the engine
  rolls the command back and retries the job;
* otherwise the message was accepted; its Message-ID is stored in the
  variable ``bpmnlite:resultVariable`` names, if any (the task also returns it,
  for ``camunda:resultVariable``).

The Message-ID comes from the task's idempotency key, so a message sent again
by a retry carries the same Message-ID as the first one.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from io import BytesIO
from typing import Any

from bpmnlite import BpmnError, TaskContext, hookimpl
from bpmnlite_mail.message import Mail, MailConfigError, Settings, compose

DEFAULT_ENV_PREFIXES = ("SMTP_", "MAIL_")


class MailDeliveryError(Exception):
    """A technical failure to send: the engine retries the job, then raises an incident."""


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    starttls: bool
    ssl: bool
    username: str | None
    password: str | None


class MailPlugin:
    """Registers the ``mail`` task type.

    The arguments are the defaults of every mail task; an element overrides
    them with ``bpmnlite:smtpHost``, ``smtpPort``, ``starttls``, ``ssl``,
    ``username``, ``password`` and ``from``.

    Args:
        host, port: the SMTP server (port defaults to 465 with ``ssl``, else 25).
        sender: the ``From`` address of tasks that set none.
        starttls: upgrade the connection with STARTTLS before sending.
        ssl: connect with TLS from the start (SMTPS).
        username, password: log in with these (``password`` may be ``env:NAME``).
        ssl_context: the TLS settings (trusted CAs...); the system's defaults otherwise.
        timeout: seconds for connecting and for each reply.
        env_prefixes: the environment variables a model may name as ``env:NAME``
            for its password must start with one of these, so a model cannot
            read arbitrary secrets of the worker.
        allow_plain_auth: allow sending a password over a connection without
            TLS (refused by default).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        sender: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        env_prefixes: Sequence[str] = DEFAULT_ENV_PREFIXES,
        allow_plain_auth: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.ssl = ssl
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.env_prefixes = tuple(env_prefixes)
        self.allow_plain_auth = allow_plain_auth

    @hookimpl
    def bpmnlite_task_types(self) -> Mapping[str, Any]:
        return {"mail": self.send}

    def send(self, ctx: TaskContext) -> str:
        """Compose and send the element's message; returns its Message-ID."""
        settings = Settings(ctx)
        mail = compose(settings, ctx.idempotency_key, self.sender)
        self._deliver(self._server(settings), mail)
        mid = str(mail.message["Message-ID"])
        if result_variable := (settings.raw("resultVariable") or "").strip():
            ctx.set(result_variable, mid)
        return mid

    def _server(self, settings: Settings) -> Server:
        use_ssl = settings.flag("ssl", self.ssl)
        starttls = settings.flag("starttls", self.starttls)
        if use_ssl and starttls:
            raise MailConfigError("set either ssl (SMTPS) or starttls, not both")
        port_text = settings.text("smtpPort")
        if port_text is not None and port_text.strip():
            if not port_text.strip().isdigit():
                raise MailConfigError(f"bpmnlite:smtpPort must be a port number, not {port_text!r}")
            port = int(port_text)
        else:
            port = self.port if self.port is not None else (465 if use_ssl else 25)
        username = settings.text("username") or self.username
        password = self._secret(settings.raw("password") or self.password)
        if username and not (use_ssl or starttls) and not self.allow_plain_auth:
            raise MailConfigError("refusing to send a password without TLS: set starttls or ssl")
        host = (settings.text("smtpHost") or self.host).strip()
        return Server(host, port, starttls, use_ssl, username, password)

    def _secret(self, value: str | None) -> str | None:
        if value is None or not value.startswith("env:"):
            return value
        name = value[4:].strip()
        if not name.startswith(self.env_prefixes):
            allowed = ", ".join(f"{p}*" for p in self.env_prefixes) or "none"
            raise MailConfigError(
                f"the password may name only environment variables {allowed} (MailPlugin(env_prefixes=...)), "
                f"not {name!r}"
            )
        secret = os.environ.get(name)
        if secret is None:
            raise MailConfigError(f"the environment variable {name} (the SMTP password) is not set")
        return secret

    def _tls(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _deliver(self, server: Server, mail: Mail) -> None:
        where = f"{server.host}:{server.port}"
        try:
            smtp = (
                smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout, context=self._tls())
                if server.ssl
                else smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            )
        except (OSError, smtplib.SMTPException) as exc:
            raise MailDeliveryError(f"cannot connect to the SMTP server {where}: {type(exc).__name__}: {exc}") from exc
        try:
            with smtp:
                if server.starttls:
                    smtp.starttls(context=self._tls())
                if server.username:
                    smtp.login(server.username, server.password or "")
                _transaction(smtp, mail, where)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailDeliveryError(f"sending through {where} failed: {type(exc).__name__}: {exc}") from exc


def _transaction(smtp: smtplib.SMTP, mail: Mail, where: str) -> None:
    """MAIL, every RCPT, then DATA only if all recipients were accepted."""
    smtp.ehlo_or_helo_if_needed()
    code, reply = smtp.mail(mail.sender)
    if code != 250:
        smtp.rset()
        raise MailDeliveryError(f"{where} refused the sender {mail.sender}: {code} {_text(reply)}")
    refused: dict[str, tuple[int, str]] = {}
    for address in mail.recipients:
        code, reply = smtp.rcpt(address)
        if code not in (250, 251):
            refused[address] = (code, _text(reply))
    if refused:
        smtp.rset()
        summary = "; ".join(f"{a}: {c} {r}" for a, (c, r) in refused.items())
        if all(code >= 500 for code, _ in refused.values()):
            rejected = [{"address": a, "code": c, "reply": r} for a, (c, r) in refused.items()]
            raise BpmnError("MAIL_REJECTED", f"{where} refused {summary}", {"rejectedRecipients": rejected})
        raise MailDeliveryError(f"{where} refused for now {summary}")
    smtp.data(_as_bytes(mail))


def _as_bytes(mail: Mail) -> bytes:
    out = BytesIO()
    BytesGenerator(out, policy=mail.message.policy.clone(linesep="\r\n")).flatten(mail.message)
    return out.getvalue()


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
