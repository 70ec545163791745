"""Task types of the api_result_later example (``processes/api_result_later.bpmn``).

A checkout starts two background instances. One sends an analytics event
and is never heard of again ("run on background": fire and forget). The other
asks a shipping-rate API for a quote; the checkout goes on with its own work
and handles the quote when the child's completion message brings it ("run as
asynchronous").

The two "remote APIs" are computed here, deterministically, so the example
runs anywhere; they run as jobs, later than the checkout's first command,
exactly as real API calls would.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bpmnlite import TaskContext

#: base price and price per kg by zone, in EUR
RATES = {"domestic": (4.95, 1.10), "eu": (8.50, 2.00), "world": (19.00, 4.50)}
EU = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT PL PT RO SE SI SK".split())
#: destinations no carrier serves (a business answer of the rate API)
UNSERVED = frozenset({"AQ"})
#: what the checkout charges when no quote came back
FLAT_SHIPPING = 25.00


def _zone(country: str) -> str:
    if country == "NL":
        return "domestic"
    return "eu" if country in EU else "world"


# ---------------------------------------------------------------- the fire-and-forget child (api_track)
def track(ctx: TaskContext) -> None:
    """Send a checkout event to an analytics API; its answer stays in this (child) instance."""
    digest = hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()[:10]
    ctx.set("trackingId", f"trk-{digest}")
    ctx.set("tracked", ["checkout_started", ctx.get("destination")])


# ---------------------------------------------------------------- the asynchronous child (api_quote)
def quote(ctx: TaskContext) -> None:
    """Ask the shipping-rate API for a price; ``NoRate`` (a BPMN error) when no carrier serves the country."""
    country = str(ctx.get("destination", "")).upper()
    weight = float(ctx.get("weightKg", 0))
    if len(country) != 2 or not country.isalpha() or country in UNSERVED:
        raise ctx.error("NoRate", f"no carrier serves {country!r}")
    base, per_kg = RATES[_zone(country)]
    ctx.set("quote", {
        "price": round(base + per_kg * weight, 2),
        "currency": "EUR",
        "zone": _zone(country),
        "quoteId": f"Q-{ctx.instance_id[:8].upper()}",
    })


def no_rate(ctx: TaskContext) -> None:
    """The quote child's own error port: it completes anyway, with no quote and a reason."""
    ctx.set("quote", None)
    ctx.set("reason", f"no carrier serves {ctx.get('destination')!r}")


# ---------------------------------------------------------------- the checkout (parent)
def prepare_order(ctx: TaskContext) -> None:
    """The parent's own work while the quote is on its way."""
    ctx.set("orderDraft", {"items": ctx.get("items", []), "subtotal": ctx.get("subtotal", 0.0)})


def use_quote(ctx: TaskContext) -> None:
    """Handle the result when it arrives: ``result`` and ``childInstanceId`` come with the completion message."""
    result = ctx.get("result") or {}
    answer = result.get("quote")
    if answer:
        ctx.set("shippingPrice", answer["price"])
        ctx.set("quoteId", answer["quoteId"])
        ctx.set("shippingNote", f"{answer['zone']} rate, quote {answer['quoteId']}")
    else:
        ctx.set("shippingPrice", FLAT_SHIPPING)
        ctx.set("quoteId", None)
        ctx.set("shippingNote", f"flat rate: {result.get('reason', 'no quote')}")
    ctx.set("quotedBy", ctx.get("childInstanceId"))


def confirm(ctx: TaskContext) -> None:
    """Both branches are done: the draft and the shipping price make the order total."""
    subtotal = float((ctx.get("orderDraft") or {}).get("subtotal", 0.0))
    ctx.set("total", round(subtotal + float(ctx.get("shippingPrice")), 2))


TASK_TYPES: dict[str, Any] = {
    "api.track": track,
    "api.quote": quote,
    "api.no_rate": no_rate,
    "api.prepare_order": prepare_order,
    "api.use_quote": use_quote,
    "api.confirm": confirm,
}
