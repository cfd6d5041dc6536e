"""The demo's task: support-ticket triage. A customer's message (sometimes a short conversation)
comes in; the app asks the model for one JSON object, `{"intent": ..., "priority": ...}`.

The generator is seeded: the same seed gives the same traffic. Messages are varied (greetings,
phrasings, order numbers, follow-up turns) so that the student must learn the intents, not the
strings. The teacher's answers define what is right; the generator's own intent is only sent as
`metadata.intent` (the label a real app would know from its ticket form), which curation uses to
stratify the holdout.
"""

from __future__ import annotations

import json
import random
from typing import Any

# intent -> (priority, phrasings). Ordered so that the first few are far apart (`--intents N`
# takes the first N): a small demo asks for refund vs password reset, not card lost vs card stolen.
INTENTS: dict[str, tuple[str, list[str]]] = {
    "refund": ("medium", ["I want a refund", "please give me my money back", "refund my order"]),
    "password_reset": ("low", ["I forgot my password", "reset my password please"]),
    "card_stolen": ("high", ["my card was stolen", "someone stole my wallet with my card"]),
    "opening_hours": ("low", ["when are you open", "what are your opening hours"]),
    "delivery_late": ("medium", ["my parcel is late", "where is my package", "order not arrived"]),
    "invoice": ("low", ["send me the invoice", "I need a copy of my bill"]),
    "app_crash": ("medium", ["the app crashes on start", "the app keeps crashing"]),
    "speak_to_human": ("medium", ["I want to talk to a person", "let me speak to an agent"]),
    "change_address": ("low", ["change my delivery address", "update my shipping address"]),
    "double_charge": ("high", ["I was charged twice", "there is a double charge on my card"]),
    "upgrade_plan": ("low", ["I want to upgrade my plan", "how do I get the premium plan"]),
    "cancel_order": ("medium", ["cancel my order", "I want to cancel the order I placed"]),
    "account_locked": ("high", ["my account is locked", "I am locked out of my account"]),
    "return_label": ("low", ["I need a return label", "how do I print a return label"]),
    "card_lost": ("high", ["I lost my card", "my debit card is missing", "I can't find my card"]),
    "wrong_item": ("medium", ["I got the wrong item", "you sent me the wrong product"]),
    "discount_code": ("low", ["my discount code does not work", "the promo code is rejected"]),
    "close_account": ("medium", ["close my account", "delete my account for good"]),
    "fraud_report": ("high", ["I see payments I did not make", "report fraud on my account"]),
    "damaged_item": ("medium", ["the item arrived broken", "my order came damaged"]),
    "cancel_subscription": ("low", ["cancel my subscription", "stop my monthly plan"]),
    "login_error": ("medium", ["I get an error when I log in", "login fails with an error"]),
}
GREETINGS = ["Hi", "Hello", "Hey", "Good morning", "Dear support", "Hi there", ""]
TAILS = ["", "", " Thanks.", " Please help.", " This is urgent.", " Thank you!", " Cheers"]
FOLLOW_UPS = ["Can you help me?", "What should I do?", "Any update on this?", "Please advise."]


def system_prompt(intents: list[str]) -> str:
    return (
        "You triage customer support tickets. Reply with only one JSON object: "
        '{"intent": "<intent>", "priority": "<priority>"}. '
        f"Intents: {', '.join(intents)}. Priorities: high, medium, low."
    )


def schema(intents: int) -> dict[str, Any]:
    """The JSON Schema a triage app declares for its answers: curation drops teacher answers
    that break it (they are not worth imitating) and the gate counts the student's."""
    return {
        "type": "object",
        "required": ["intent", "priority"],
        "properties": {
            "intent": {"enum": list(INTENTS)[:intents]},
            "priority": {"enum": ["high", "medium", "low"]},
        },
    }


def label(intent: str) -> str:
    """The answer a perfect triager gives (the tests' tiny teacher learns it)."""
    return json.dumps({"intent": intent, "priority": INTENTS[intent][0]})


class Tickets:
    """Seeded ticket conversations, round robin over the first `intents` intents."""

    def __init__(self, seed: int = 0, intents: int = len(INTENTS)) -> None:
        if not 1 <= intents <= len(INTENTS):
            raise ValueError(f"intents must be 1 to {len(INTENTS)}")
        self.rng = random.Random(seed)
        self.names = list(INTENTS)[:intents]
        self.system = system_prompt(self.names)
        self.sent = 0

    def next(self) -> tuple[str, list[dict[str, Any]]]:
        """(intent, messages) for the next simulated user."""
        rng = self.rng
        intent = self.names[self.sent % len(self.names)]
        self.sent += 1
        phrase = rng.choice(INTENTS[intent][1])
        greeting = rng.choice(GREETINGS)
        order = f" Order {rng.randint(10000, 99999)}." if rng.random() < 0.4 else ""
        text = f"{greeting + ', ' if greeting else ''}{phrase}.{order}{rng.choice(TAILS)}"
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}]
        if rng.random() < 0.3:  # a short conversation: the ticket, a question back, the follow-up
            messages += [
                {"role": "user", "content": text},
                {"role": "assistant", "content": "Could you tell me a bit more?"},
                {"role": "user", "content": rng.choice(FOLLOW_UPS) + " " + phrase + "."},
            ]
        else:
            messages.append({"role": "user", "content": text})
        return intent, messages
