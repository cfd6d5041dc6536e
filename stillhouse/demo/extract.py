"""The demo's second task: field extraction. A customer's message comes in; the app asks the model
for one JSON object, `{"order_id", "amount", "currency", "date"}`, each field copied from the
message or null when the message does not say it.

Seeded like the tickets: the same seed gives the same traffic. Each message is built from one of a
kind's templates (`metadata.intent` is the kind, e.g. `refund_request`, which curation stratifies
and groups by); the numbers, dates, currencies, greetings and which fields appear vary with every
message, so a student must learn to copy spans, not remember answers.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

# kind -> templates. A template is a list of fragments; a fragment that names a field the message
# leaves out is dropped, so every template reads as a sentence with or without each field.
# Ordered so that the first few kinds are far apart (`--intents N` takes the first N).
KINDS: dict[str, list[list[str]]] = {
    "refund_request": [
        ["I would like a refund", " of {money}", " for order {order}", ", bought on {date}", "."],
        ["Please refund me", " for order {order}", ". I paid {money}", " on {date}", "."],
        ["Can I get my money back", " for order {order}", "? It was {money}", ", paid {date}", "."],
    ],
    "late_delivery": [
        ["My parcel", " (order {order})", " was due on {date}", " and still has not arrived", "."],
        ["My delivery is late", ": order {order}", ", expected {date}", ", paid {money}", "."],
        ["Where is my package?", " It is order {order}", " and should have come on {date}", "."],
    ],
    "double_charge": [
        ["I was charged twice", " for order {order}", ": {money} each time", ", on {date}", "."],
        [
            "There is a double charge",
            " of {money}",
            " on my card",
            " from {date}",
            ", order {order}",
            ".",
        ],
    ],
    "cancel_order": [
        ["Please cancel", " order {order}", ", placed on {date}", ". It was {money}", "."],
        ["I want to cancel my purchase", " (order {order})", " from {date}", "."],
    ],
    "damaged_item": [
        ["The item arrived broken", " on {date}", ". Order {order}", ", it cost {money}", "."],
        ["What I received", " on {date}", " is damaged", ". Order {order}", ", price {money}", "."],
    ],
    "invoice_request": [
        [
            "Please send me the invoice",
            " for order {order}",
            " of {money}",
            ", paid on {date}",
            ".",
        ],
        ["I need a copy of my bill", " for {money}", " dated {date}", ". Order {order}", "."],
    ],
    "wrong_charge": [
        ["You billed me the wrong price", ": {money}", " for order {order}", " on {date}", "."],
        ["The charge", " on {date}", " for order {order}", " is wrong", ": {money}", "."],
    ],
    "payment_failed": [
        ["My payment", " of {money}", " failed", " on {date}", ". Order {order}", "."],
        [
            "I tried to pay",
            " {money}",
            " for order {order}",
            " on {date}",
            " but it was declined",
            ".",
        ],
    ],
}
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
GREETINGS = ["Hi", "Hello", "Hey", "Good morning", "Dear support", "Hi there", ""]
TAILS = ["", "", " Thanks.", " Please help.", " Thank you!", " Best, Anna.", " Regards, Tom."]
FIELDS = ("order_id", "amount", "currency", "date")
SLOT = {"order_id": "{order}", "amount": "{money}", "currency": "{money}", "date": "{date}"}


# Measured on the teacher (docs/benchmarks.md): without examples it answers amounts as strings and
# invents a date; examples in the prompt help, and they sit in the system prompt, not as chat
# turns, because curation groups retellings by their user turns (shared turns would join them all).
SYSTEM = (
    "You extract fields from a customer's message into one JSON object with the keys "
    '"order_id", "amount", "currency" and "date". Copy each value from the message: order_id '
    'is the number after "order" (digits only, as a string), amount is the number next to a '
    "currency code, currency is that code (EUR, USD, GBP or CHF), date is the YYYY-MM-DD date. "
    "A value the message does not contain is null: never invent one. Reply with only the JSON "
    "object.\n\n"
    "Message: Order no. 67890 from 2026-01-15 is late. It cost USD 240.\n"
    'JSON: {"order_id": "67890", "amount": 240, "currency": "USD", "date": "2026-01-15"}\n\n'
    "Message: I paid 19.90 EUR and want a refund.\n"
    'JSON: {"order_id": null, "amount": 19.9, "currency": "EUR", "date": null}\n\n'
    "Message: Hi, my order #12345 arrived broken.\n"
    'JSON: {"order_id": "12345", "amount": null, "currency": null, "date": null}'
)


def schema() -> dict[str, Any]:
    """The JSON Schema the app declares for its answers: all four keys, each value or null."""
    return {
        "type": "object",
        "required": list(FIELDS),
        "additionalProperties": False,
        "properties": {
            "order_id": {"type": ["string", "null"], "pattern": "^[0-9]+$"},
            "amount": {"type": ["number", "null"]},
            # anyOf, not an enum with null: the schema is written into TOML, which has no null
            "currency": {"anyOf": [{"enum": list(CURRENCIES)}, {"type": "null"}]},
            "date": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        },
    }


def answer(fields: dict[str, Any]) -> str:
    """The answer a perfect extractor gives for a message built from `fields`."""
    return json.dumps({k: fields.get(k) for k in FIELDS})


class Messages:
    """Seeded customer messages, round robin over the first `kinds` kinds."""

    def __init__(self, seed: int = 0, kinds: int = len(KINDS)) -> None:
        if not 1 <= kinds <= len(KINDS):
            raise ValueError(f"kinds must be 1 to {len(KINDS)}")
        self.rng = random.Random(seed)
        self.names = list(KINDS)[:kinds]
        self.system = SYSTEM
        self.sent = 0

    def fields(self) -> dict[str, Any]:
        """One message's values: each field present or not (currency travels with the amount)."""
        rng = self.rng
        out: dict[str, Any] = {}
        if rng.random() < 0.9:
            out["order_id"] = str(rng.randint(10000, 99999))
        if rng.random() < 0.8:
            cents = rng.choice([0, rng.randint(1, 99)])
            out["amount"] = round(rng.randint(3, 899) + cents / 100, 2)
            out["currency"] = rng.choice(CURRENCIES)
        if rng.random() < 0.7:
            out["date"] = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        return out

    def next(self) -> tuple[str, list[dict[str, Any]], str]:
        """(kind, messages, the perfect answer) for the next simulated user."""
        rng = self.rng
        kind = self.names[self.sent % len(self.names)]
        self.sent += 1
        fields = self.fields()
        template = rng.choice(KINDS[kind])
        slots: dict[str, str] = {}
        if "order_id" in fields:
            slots["{order}"] = rng.choice(["{}", "#{}", "no. {}"]).format(fields["order_id"])
        if "amount" in fields:
            amount, currency = fields["amount"], fields["currency"]
            number = f"{amount:.2f}" if rng.random() < 0.7 or amount % 1 else f"{amount:.0f}"
            slots["{money}"] = rng.choice([f"{number} {currency}", f"{currency} {number}"])
        if "date" in fields:
            slots["{date}"] = fields["date"]
        kept = [p for p in template if all(s in slots for s in _slots(p))]
        text = "".join(_fill(p, slots) for p in kept)
        used = {s for p in kept for s in _slots(p)}  # a template may not say every field
        said = {k: v for k, v in fields.items() if SLOT[k] in used}
        greeting = rng.choice(GREETINGS)
        content = f"{greeting + ', ' if greeting else ''}{text}{rng.choice(TAILS)}"
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": content},
        ]
        return kind, messages, answer(said)


def _slots(part: str) -> list[str]:
    return re.findall(r"\{[a-z]+\}", part)


def _fill(part: str, slots: dict[str, str]) -> str:
    for slot, value in slots.items():
        part = part.replace(slot, value)
    return part
