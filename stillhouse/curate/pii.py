"""PII scrubbing: emails, phones, cards, IBANs, national ids and IP addresses -> placeholders.

One combined regular expression finds candidates in a single pass; checksums (Luhn for cards,
mod-97 for IBANs) and address parsing decide. It must never leave a matched value half-replaced,
and never replace a number that fails its checksum as a card (order numbers are not cards).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .normalize import Example

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "ip": "[IP]",
}

# Every alternative starts behind a lookbehind or a \b: without them the engine would retry each
# branch at every character inside every word, which made scrubbing quadratic in word length.
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_HAS_DIGIT = re.compile(r"\d")
_PATTERN = re.compile(
    r"(?P<iban>\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b)"
    r"|(?P<ipv4>(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]))"
    r"|(?P<ipv6>(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:]))"
    # US SSN and UK National Insurance numbers: the common national-id shapes.
    r"|(?P<ssn>(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-]))"
    r"|(?P<nino>\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b)"
    # Runs of digits with the separators people type in phone and card numbers.
    r"|(?P<digits>(?<![\w+])\+?\(?\d[\d ().-]{4,30}\d(?![\w]))"
)
_GROUPS = re.compile(r"\d+")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    raw = text.replace(" ", "")
    if not 15 <= len(raw) <= 34:
        return False
    moved = raw[4:] + raw[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _card_span(text: str) -> tuple[int, int] | None:
    """The span of a Luhn-valid 13-19 digit run of digit groups inside `text`, if any."""
    groups = list(_GROUPS.finditer(text))
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            digits += groups[j].group()
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_ok(digits):
                return groups[i].start(), groups[j].end()
    return None


def _is_phone(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:
        return False
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):  # an ISO date, not a phone
        return False
    # A bare run of digits is a phone only at phone lengths; separators or '+' say "phone".
    return text.startswith("+") or not text.isdigit() or digits in (10, 11)


def _scrub_digits(text: str, kinds: frozenset[str]) -> str:
    if "card" in kinds:
        span = _card_span(text)
        if span is not None:
            start, end = span
            return (
                _scrub_digits(text[:start], kinds)
                + PLACEHOLDERS["card"]
                + _scrub_digits(text[end:], kinds)
            )
    # An opening parenthesis belongs to "(555) 123-4567"; a trailing one does not.
    stripped = text.lstrip(" .-").rstrip(" .-(")
    if "phone" in kinds and stripped and _is_phone(stripped):
        at = text.index(stripped)
        return text[:at] + PLACEHOLDERS["phone"] + text[at + len(stripped) :]
    return text


def _replacer(kinds: frozenset[str]) -> Callable[[re.Match[str]], str]:
    def replace_match(m: re.Match[str]) -> str:
        kind = m.lastgroup
        value = m.group()
        if kind == "iban":
            return PLACEHOLDERS["iban"] if "iban" in kinds and iban_ok(value) else value
        if kind in ("ipv4", "ipv6"):
            if "ip" not in kinds:
                return value
            try:
                ipaddress.ip_address(value)
            except ValueError:
                return value
            return PLACEHOLDERS["ip"]
        if kind in ("ssn", "nino"):
            return PLACEHOLDERS["national_id"] if "national_id" in kinds else value
        return _scrub_digits(value, kinds)

    return replace_match


class Scrubber:
    """Replaces the enabled kinds of PII in text. Build once, apply to many strings."""

    def __init__(self, kinds: Iterable[str] = tuple(PLACEHOLDERS)) -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {sorted(unknown)}")
        self._replace = _replacer(self.kinds)
        self._numeric = bool(self.kinds - {"email"})

    def text(self, text: str) -> str:
        if not self.kinds or not text:
            return text
        # Cheap gates first: most strings have no '@', and every other kind needs a digit.
        if "email" in self.kinds and "@" in text:
            text = _EMAIL.sub(PLACEHOLDERS["email"], text)
        if self._numeric and _HAS_DIGIT.search(text):
            text = _PATTERN.sub(self._replace, text)
        return text

    def value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        # Roles, ids and tool names are structure, not user data: only text is scrubbed.
        out = dict(message)
        if "content" in out:
            out["content"] = self.value(out["content"])
        if "tool_calls" in out:
            out["tool_calls"] = [
                {
                    **tc,
                    "function": {
                        **tc["function"],
                        "arguments": self.text(tc["function"].get("arguments", "")),
                    },
                }
                for tc in out["tool_calls"]
            ]
        return out

    def example(self, example: Example) -> Example:
        if not self.kinds:
            return example
        return replace(example, messages=tuple(self.message(m) for m in example.messages))


def scrub(text: str, kinds: Iterable[str] = tuple(PLACEHOLDERS)) -> str:
    """Convenience for one string; build a Scrubber to scrub many."""
    return Scrubber(kinds).text(text)
