"""Task types of the welcome example (``processes/welcome_emails.bpmn``, seed 000: Go Async).

* ``welcome.subscribers`` — the "Email addresses list" step: the addresses to
  welcome, from the variable ``subscribers`` (a list, or text with one address
  per line or comma) or else from the task's ``addresses`` field in the model;
  empty entries and repeats are dropped.
* ``welcome.report_rejection`` — the non-critical error path: the mail server
  refused an address for good (``MAIL_REJECTED`` from the ``mail`` task type).
  It keeps what the server said in the variable ``rejected`` and logs it, so
  someone can clean the list; the other addresses are not affected.

:class:`DemoMailbox` is a small SMTP handler for trying the example without a
real mail server: ``python -m aiosmtpd -n -l 127.0.0.1:8025 -c
bpmnlite_seeds.welcome.DemoMailbox`` prints each message it accepts and refuses
addresses in the reserved ``.invalid`` domain, as a real server refuses an
unknown mailbox.
"""

from __future__ import annotations

import email
import email.policy
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from bpmnlite import BpmnliteError, TaskContext

log = logging.getLogger("bpmnlite_seeds.welcome")


def subscribers(ctx: TaskContext) -> list[str]:
    """Set ``subscribers`` to the addresses to welcome; returns them."""
    given = ctx.get("subscribers")
    source = given if given is not None else ctx.fields().get("addresses", "")
    addresses = _address_list(source)
    if not addresses:
        raise BpmnliteError("no subscriber addresses: pass the variable 'subscribers' or fill the field 'addresses'")
    ctx.set("subscribers", addresses)
    return addresses


def _address_list(value: Any) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.replace(",", "\n").splitlines()
    elif isinstance(value, list):
        items = value
    else:
        raise BpmnliteError(f"'subscribers' must be a list of addresses or text, not {type(value).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise BpmnliteError(f"a subscriber address must be text, not {item!r}")
        address = item.strip()
        if address and address not in out:
            out.append(address)
    return out


def report_rejection(ctx: TaskContext) -> None:
    """Record the refused address (``rejected``) and log it; the flow of this address ends here."""
    refused = ctx.get("rejectedRecipients") or []
    first = refused[0] if refused else {}
    rejected = {
        "address": first.get("address", ctx.get("address")),
        "code": first.get("code"),
        "reply": first.get("reply"),
    }
    ctx.set("rejected", rejected)
    log.warning("welcome mail to %s refused: %s %s", rejected["address"], rejected["code"], rejected["reply"])


TASK_TYPES: dict[str, Any] = {
    "welcome.subscribers": subscribers,
    "welcome.report_rejection": report_rejection,
}


# ---------------------------------------------------------------------- a mailbox to try it with
def is_undeliverable(address: str) -> bool:
    """Addresses in the reserved ``.invalid`` top-level domain (RFC 2606) never exist."""
    return address.rstrip(">").lower().endswith(".invalid")


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message the demo mailbox accepted."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    text: str


class DemoMailbox:
    """An aiosmtpd handler: accepts every message (and keeps it in ``delivered``) except for
    ``.invalid`` addresses, which it refuses for good with ``550``, as a server refuses an
    unknown mailbox. The tests of the examples run it too.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.delivered: list[Delivered] = []
        self.refused: list[str] = []
        self.quiet = quiet

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if is_undeliverable(address):
            self.refused.append(address)
            self._say(f"refused {address}: no such mailbox")
            return f"550 5.1.1 <{address}>: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(message, EmailMessage)  # what policy.default parses into
        body = message.get_body(("plain",))
        item = Delivered(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            subject=str(message.get("Subject", "")).strip(),
            message_id=str(message.get("Message-ID", "")).strip(),
            text=str(body.get_content()) if isinstance(body, EmailMessage) else "",
        )
        self.delivered.append(item)
        self._say(f"delivered to {', '.join(item.recipients)}: {item.subject}")
        return "250 Message accepted for delivery"

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(f"[demo mailbox] {line}", flush=True)
