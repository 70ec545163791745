"""What one ``mail`` task sends, read from its element and rendered against the variables.

Every setting is an attribute ``bpmnlite:<name>`` or an extension field
(``camunda:field`` / ``bpmnlite:field``) of the same name; the attribute wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses
from typing import Any

from bpmnlite import BpmnliteError, TaskContext
from bpmnlite.expressions import evaluate, render_template


class MailConfigError(BpmnliteError):
    """A ``mail`` task is configured wrongly: no recipient, no sender, a bad flag, a missing secret..."""


class Settings:
    """The element's settings: ``bpmnlite:<name>`` attributes, else fields named ``<name>``."""

    def __init__(self, ctx: TaskContext) -> None:
        self._config = ctx.config
        self._fields = ctx.fields()
        self.variables = ctx.variables

    def raw(self, name: str) -> str | None:
        value = self._config.get(f"bpmnlite:{name}")
        return value if value is not None else self._fields.get(name)

    def text(self, name: str) -> str | None:
        """The setting with its ``${...}`` parts rendered, or None when absent."""
        raw = self.raw(name)
        return None if raw is None else render_template(raw, self.variables)

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None or not value.strip():
            return default
        word = value.strip().lower()
        if word in ("true", "yes", "1"):
            return True
        if word in ("false", "no", "0"):
            return False
        raise MailConfigError(f"bpmnlite:{name} must be true or false, not {value!r}")


@dataclass(frozen=True, slots=True)
class Mail:
    """A message ready to send, with its envelope (Bcc recipients are only in the envelope)."""

    message: EmailMessage
    sender: str
    recipients: tuple[str, ...]


def compose(settings: Settings, idempotency_key: str, default_sender: str | None) -> Mail:
    """Build the message of a mail task.

    Raises:
        MailConfigError: no recipient, or no sender here or in the plugin.
        bpmnlite.ExpressionError: a template failed.
    """
    to = addresses(settings.raw("to"), settings.variables)
    cc = addresses(settings.raw("cc"), settings.variables)
    bcc = addresses(settings.raw("bcc"), settings.variables)
    if not to and not cc and not bcc:
        raise MailConfigError("a mail task needs a recipient: set bpmnlite:to (or a field named 'to')")
    sender_text = settings.text("from") or default_sender
    if not sender_text or not sender_text.strip():
        raise MailConfigError("a mail task needs a sender: set bpmnlite:from, or sender= on MailPlugin")
    sender = _one_address(sender_text)

    message = EmailMessage()
    message["From"] = formataddr(sender)
    if to:
        message["To"] = ", ".join(formataddr(a) for a in to)
    if cc:
        message["Cc"] = ", ".join(formataddr(a) for a in cc)
    message["Subject"] = (settings.text("subject") or "").replace("\r", " ").replace("\n", " ")
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(idempotency_key, sender[1])
    text, html = settings.text("text"), settings.text("html")
    if html is not None and text is not None:
        message.set_content(text)
        message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    else:
        message.set_content(text or "")
    envelope = tuple(dict.fromkeys(addr for _, addr in to + cc + bcc))
    return Mail(message, sender[1], envelope)


def message_id(idempotency_key: str, sender: str) -> str:
    """A Message-ID that is the same for every retry of one task, so receivers can spot duplicates."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    domain = sender.rpartition("@")[2] or "bpmnlite.invalid"
    return f"<bpmnlite.{digest}@{domain}>"


def addresses(raw: str | None, variables: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs from a comma list, a template, or a whole ``${var}`` holding a list."""
    if raw is None or not raw.strip():
        return []
    stripped = raw.strip()
    value: Any
    if stripped.startswith("${") and stripped.endswith("}"):
        value = evaluate(stripped, variables)
    else:
        value = render_template(raw, variables)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise MailConfigError(f"recipients must be text or a list of addresses, not {type(value).__name__}")
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, str):
            raise MailConfigError(f"a recipient must be text, not {type(item).__name__} {item!r}")
        out.extend(_parse(item))
    return out


def _parse(text: str) -> list[tuple[str, str]]:
    pairs = [(name, addr) for name, addr in getaddresses([text]) if addr]
    for _, addr in pairs:
        _check(addr)
    return pairs


def _one_address(text: str) -> tuple[str, str]:
    pairs = _parse(text)
    if len(pairs) != 1:
        raise MailConfigError(f"the sender must be one address, not {text!r}")
    return pairs[0]


def _check(addr: str) -> None:
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>,;\r\n" for c in addr):
        raise MailConfigError(f"invalid mail address {addr!r}")
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise MailConfigError(f"invalid mail address {addr!r}: {exc}") from None
